"""One network, several codes: NB201's cell function (isomorphic cells, dead edges), a space file's
``canonical:``, and a run that evaluates each network once (``same_networks=skip``, the default) while the
Coordinator names every code it screened out for a network the run already holds."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.agents.coordinator import Coordinator, StopRule
from collm_nas.core import Objective, RoundContext, Trial
from collm_nas.core.errors import UserError
from collm_nas.spaces import NB201Space, load_space_file
from collm_nas.spaces.nb201 import cell_function
from collm_nas.storage import SQLiteTrialStore
from collm_nas.storage.history import RunHistory
from collm_nas.tools import ValidityChecker


@pytest.fixture(scope="module")
def nb201() -> NB201Space:
    return NB201Space()


# Edges in NCode order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; digits 0 none, 1 skip, 2 conv1x1, 3 conv3x3, 4 pool.
def test_cells_that_compute_one_function_share_a_key(nb201):
    conv = cell_function("000300")  # the output is conv3x3(input), nothing else
    assert conv == "nor_conv_3x3(x)"
    # Edges that never reach the output (node 1 feeds nothing) change nothing.
    assert cell_function("300300") == cell_function("400300") == conv
    # A path through node 1 or through node 2 is the same network (isomorphic cells).
    assert cell_function("300030") == cell_function("030003") == "nor_conv_3x3(nor_conv_3x3(x))"
    # A skip passes its source's sum on: x + conv(x) written two ways.
    assert cell_function("100130") == cell_function("100310") == "nor_conv_3x3(x)+x"
    assert cell_function("000130") == "x"  # node 1 gets nothing: its convolution adds nothing
    # Different functions stay apart; a degenerate cell computes nothing.
    assert cell_function("333132") != cell_function("333133")
    assert cell_function("000000") == cell_function("300000") == ""
    assert nb201.network_key("12") == "12" and nb201.network_key("99zz99") == "99zz99"  # not cells: their own


def test_nb201_has_4929_networks_among_its_legal_codes(nb201):
    checker = ValidityChecker(nb201)
    legal = [c for c in nb201.enumerate() if checker.is_valid(c)]
    assert len(legal) == 15_284
    assert len({nb201.network_key(c) for c in legal}) == 4_929
    assert {"000300", "100300", "300300", "400300"} <= set(nb201.equivalents("300300"))
    assert nb201.equivalents("333132") == ("333132",)  # the CIFAR-10 optimum writes itself one way only


def test_the_history_holds_a_network_once_any_of_its_codes_was_evaluated(tmp_path, nb201):
    store = SQLiteTrialStore(tmp_path / "t.db")
    store.create_run("r", {})
    store.add_trial("r", Trial("000300", metrics={"acc": 80.0}).recorded(round=1, value=80.0))
    merged = RunHistory(store, "r", Objective("acc"), network_key=nb201.network_key)
    plain = RunHistory(store, "r", Objective("acc"))
    assert "300300" in merged and "300300" not in plain
    assert merged.same_network("300300").ncode == "000300"
    assert merged.same_network("000300") is None and merged.same_network("333132") is None
    assert "333132" not in merged and len(merged) == 1


def _ctx(nb201, history) -> RoundContext:
    checker = ValidityChecker(nb201)
    return RoundContext(space=nb201, history=history, round=2, seed=0, quota=3, is_legal=checker.is_valid,
                        checker=checker)


def test_the_coordinator_screens_out_codes_of_held_networks_and_names_them(tmp_path, nb201):
    store = SQLiteTrialStore(tmp_path / "t.db")
    store.create_run("r", {})
    store.add_trial("r", Trial("000300", metrics={"acc": 80.0}).recorded(round=1, value=80.0))
    history = RunHistory(store, "r", Objective("acc"), network_key=nb201.network_key)
    ctx = _ctx(nb201, history)
    coordinator = Coordinator(ValidityChecker(nb201), StopRule(10), batch_size=3)
    screening = coordinator.screen(["300300", "030003", "300030", "000300", "333132"], ctx, 3)
    assert screening.accepted[:2] == ["030003", "333132"]
    assert screening.same_network == {"300300": "000300", "300030": "030003"}
    assert screening.duplicates == ["000300"]
    verdicts = {v["ncode"]: v for v in screening.verdicts()}
    assert verdicts["300300"]["verdict"] == "same network" and "000300" in verdicts["300300"]["why"]
    assert screening.figures()["same_network"] == 2
    # The top-up never adds a code of a network the batch or the run already holds.
    batch = screening.batch
    assert len(batch) == 3 and len({nb201.network_key(c) for c in batch} | {nb201.network_key("000300")}) == 4
    # The LLM's code language leaves out every code of an evaluated network.
    assert {"100300", "300300", "400300", "000300"} <= ctx.seen_codes()


@pytest.mark.parametrize("strategy", ["random", "rea", "local", "lmsearcher"])
def test_a_run_evaluates_each_network_once(tmp_path, table_path, nb201, strategy):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy=strategy, budget=120, seed=3, run_id="skip",
                       llm="none")
    codes = [t.ncode for t in ws.run("skip").trials()]
    assert result.evaluations == len(codes) == 120
    assert len({nb201.network_key(c) for c in codes}) == 120


def test_evaluate_every_code_on_request(tmp_path, table_path, nb201):
    """same_networks=evaluate is the old behaviour: 300 random draws hit some networks twice."""
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(space="nb201", dataset="cifar10", strategy="random", budget=300, seed=0, run_id="every",
              same_networks="evaluate", llm="none")
    codes = [t.ncode for t in ws.run("every").trials()]
    assert len(set(codes)) == 300 and len({nb201.network_key(c) for c in codes}) < 300


def test_a_codes_list_run_skips_what_it_already_holds(tmp_path, table_path):
    listed = tmp_path / "codes.txt"
    listed.write_text("000300\n300300\n030003\n300030\n333132\n", encoding="utf-8")
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(space="nb201", dataset="cifar10", strategy=f"codes:{listed}", budget=3, seed=0, run_id="list",
              llm="none", batch_size=5)
    assert [t.ncode for t in ws.run("list").trials()] == ["000300", "030003", "333132"]


TOY = """
name: pairs
decisions:
  - {name: a, options: [x, y, z]}
  - {name: b, options: [x, y, z]}
canonical: MODULE:unordered
"""


def test_a_space_file_declares_its_canonical_form(tmp_path, monkeypatch):
    module = tmp_path / "pairkeys.py"
    module.write_text(textwrap.dedent('''
        def unordered(ncode):
            return "".join(sorted(ncode))

        def broken(ncode):
            raise KeyError(ncode)
    '''), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "pairs.yaml"
    path.write_text(TOY.replace("MODULE", "pairkeys"), encoding="utf-8")
    space = load_space_file(path)
    assert space.has_equivalents and space.to_dict()["canonical"] == "pairkeys:unordered"
    assert space.network_key("21") == space.network_key("12") == "12"
    assert space.equivalents("10") == ("01", "10")
    assert space.network_key("9") == "9"  # not a code of the space: never handed to the function
    ws = Workspace(tmp_path / "runs")
    result = ws.search(space=str(path), evaluator="e2e_evaluator:score", strategy="random",
                       budget=6, seed=0, run_id="pairs", llm="none")
    assert result.evaluations == 6  # 9 codes, 6 unordered pairs: the whole space, each pair once
    assert len({"".join(sorted(t.ncode)) for t in ws.run("pairs").trials()}) == 6
    path.write_text(TOY.replace("MODULE", "pairkeys").replace("unordered", "broken"), encoding="utf-8")
    with pytest.raises(UserError, match="canonical form pairkeys:broken .* failed on"):
        load_space_file(path).network_key("01")
