"""The dashboard app without a browser: its JSON API and pages through Starlette's TestClient, over real runs
(real LangGraph, real SQLite, the real NAS-Bench-201 table). The browser tests are in test_dashboard_browser.py."""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from collm_nas import Workspace  # noqa: E402
from collm_nas.api import AnswerRefused  # noqa: E402
from collm_nas.cli import main  # noqa: E402
from collm_nas.dashboard import Board, create_app  # noqa: E402
from collm_nas.dashboard.board import non_dominated_2d, row_filter  # noqa: E402
from collm_nas.plotting import best_so_far  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[1] / "collm_nas" / "dashboard"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, table_path: str) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("dash") / "runs", table_path=table_path)
    ws.search(strategy="rea", budget=24, batch_size=4, seed=0, run_id="rea-0")
    ws.search(strategy="rea", budget=24, batch_size=4, seed=1, run_id="rea-1")
    ws.search(strategy="random", budget=16, batch_size=4, seed=0, run_id="random-0")
    return ws


@pytest.fixture
def client(runs: Workspace):
    board = Board(lambda: runs, owns_workspace=False)
    with TestClient(create_app(board), base_url="http://127.0.0.1:8731") as c:
        c.board = board
        yield c


@pytest.fixture
def paused(tmp_path: Path, table_path: str):
    """A fresh workspace with one run paused at round 1 (batch of 2, budget 6), and a client over it."""
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="random", budget=6, batch_size=2, seed=0, run_id="p", approval="every_round")
    board = Board(lambda: ws, owns_workspace=False)
    with TestClient(create_app(board), base_url="http://127.0.0.1:8731") as c:
        c.board, c.ws = board, ws
        yield c


def _wait(handle, timeout: float = 60) -> None:
    """Until the answered run paused again or ended; a wait that ran out fails (an error is raised by wait)."""
    handle.wait(timeout)
    assert not handle.running, f"run {handle.run_id} still going after {timeout} s"


def test_runs_lists_every_run_with_what_the_page_shows(client) -> None:
    data = client.get("/api/runs").json()
    rows = {r["run_id"]: r for r in data["runs"]}
    assert set(rows) == {"rea-0", "rea-1", "random-0"}
    assert rows["rea-0"]["status"] == "finished" and rows["rea-0"]["evaluations"] == 24 == rows["rea-0"]["budget"]
    assert rows["rea-0"]["dataset"] == "cifar10" and rows["rea-0"]["space"] == "nb201" and rows["rea-0"]["llm"] is None
    assert rows["random-0"]["best_value"] > 80 and rows["rea-1"]["updated_at"] >= rows["rea-1"]["created_at"]
    assert data["total"] == 3 and data["awaiting"] == []
    page = client.get("/api/runs?limit=2&offset=1&sort=best_value&order=desc").json()
    by_best = sorted(rows.values(), key=lambda r: -r["best_value"])
    assert page["total"] == 3 and [r["run_id"] for r in page["runs"]] == [r["run_id"] for r in by_best[1:3]]
    assert [r["run_id"] for r in client.get("/api/runs?q=RANDOM").json()["runs"]] == ["random-0"]
    page = client.get("/")
    assert page.status_code == 200 and 'data-page="runs"' in page.text


def test_a_run_page_and_its_summary(client, runs: Workspace) -> None:
    assert 'data-run="rea-0"' in client.get("/runs/rea-0").text
    s = client.get("/api/runs/rea-0").json()
    best = runs.run("rea-0").best()
    assert s["best"]["ncode"] == best.ncode and s["evaluations"] == 24 and s["config"]["strategy"] == "rea"
    assert s["searched_metric"] == "cifar10_valid" and s["reported_metric"] == "cifar10_test" and not s["awaiting"]
    status = client.get("/api/runs/rea-0/status").json()
    assert status["evaluations"] == 24 and status["status"] == "finished"


def test_trials_are_paged_sorted_and_filtered_on_the_server(client, runs: Workspace) -> None:
    trials = runs.run("rea-0").trials()
    page = client.get("/api/runs/rea-0/trials?limit=5&offset=5").json()
    assert page["total"] == 24 and [r["ncode"] for r in page["rows"]] == [t.ncode for t in trials[5:10]]
    assert page["rows"][0]["eval"] == 6 and {"cifar10_valid", "params_mb", "flops_m"} <= set(page["metrics"])
    top = client.get("/api/runs/rea-0/trials?sort=cifar10_valid&order=desc&limit=3").json()["rows"]
    assert [r["ncode"] for r in top] == [t.ncode for t in runs.run("rea-0").trials(top=3)]
    small = client.get("/api/runs/rea-0/trials", params={"q": "params_mb<=0.5 and round>=2", "limit": 100}).json()
    expected = [t for t in trials if t.metrics["params_mb"] <= 0.5 and t.round >= 2]
    assert small["total"] == len(expected) > 0 and all(r["metrics"]["params_mb"] <= 0.5 for r in small["rows"])
    one = client.get("/api/runs/rea-0/trials", params={"q": trials[3].ncode}).json()
    assert [r["ncode"] for r in one["rows"]] == [trials[3].ncode]
    assert client.get("/api/runs/rea-0/trials?status=failed").json()["total"] == 0
    bad = client.get("/api/runs/rea-0/trials?limit=many")
    assert bad.status_code == 400 and "whole number" in bad.json()["error"]


def test_the_curve_is_the_best_so_far_as_its_steps(client, runs: Workspace) -> None:
    c = client.get("/api/runs/rea-0/curve").json()
    full = best_so_far(runs.run("rea-0").trials(), "max")
    assert c["evaluations"] == 24 and len(c["values"]) == 24
    for step in c["steps"]:
        assert full[step["eval"] - 1] == step["value"]
    assert c["steps"][-1]["value"] == max(full) and c["steps"][-1]["ncode"] == runs.run("rea-0").best().ncode
    assert all(a["value"] < b["value"] for a, b in zip(c["steps"], c["steps"][1:]))
    reported = client.get("/api/runs/rea-0/curve?which=reported").json()
    assert reported["metric"] == "cifar10_test"
    assert reported["steps"][-1]["value"] == runs.run("rea-0").best().metrics["cifar10_test"]


def test_the_scatter_marks_exactly_the_non_dominated_trials(client, runs: Workspace) -> None:
    sc = client.get("/api/runs/random-0/scatter").json()
    assert (sc["x"], sc["xdir"], sc["y"], sc["ydir"]) == ("params_mb", "min", "cifar10_valid", "max")
    pts = [(t.metrics["params_mb"], t.metrics["cifar10_valid"]) for t in runs.run("random-0").trials()]
    front = {(p["x"], p["y"]) for p in sc["front"]}
    brute = {p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)}
    assert front == brute and sc["count"] == 16 and len(sc["points"]) + len(sc["front"]) == 16
    flipped = client.get("/api/runs/random-0/scatter?x=flops_m&xdir=max&y=cifar10_test").json()
    assert flipped["x"] == "flops_m" and flipped["xdir"] == "max" and flipped["y"] == "cifar10_test"


def test_non_dominated_2d_keeps_ties_and_matches_brute_force() -> None:
    import random

    rng = random.Random(3)
    points = [[float(rng.randint(0, 9)), float(rng.randint(0, 9)), k] for k in range(300)]
    for xdir in ("max", "min"):
        for ydir in ("max", "min"):
            sx, sy = (1 if xdir == "max" else -1), (1 if ydir == "max" else -1)
            got = sorted(p[2] for p in non_dominated_2d(points, xdir, ydir))
            brute = sorted(p[2] for p in points if not any(
                sx * q[0] >= sx * p[0] and sy * q[1] >= sy * p[1] and (q[0], q[1]) != (p[0], p[1]) for q in points))
            assert got == brute


def test_rounds_show_the_navigator_and_what_the_coordinator_did(client, runs: Workspace) -> None:
    data = client.get("/api/runs/rea-0/rounds?limit=2").json()
    assert data["total"] == 6 and [r["round"] for r in data["rounds"]] == [6, 5]  # newest first
    by_round = {}
    for t in runs.run("rea-0").trials():
        by_round.setdefault(t.round, []).append(t.ncode)
    for r in client.get("/api/runs/rea-0/rounds?limit=10&order=asc").json()["rounds"]:
        assert r["navigator"]["summary"] == r["strategy"]
        taken = [v["ncode"] for v in r["verdicts"] if v["verdict"] in ("accepted", "topped up")]
        assert taken == by_round[r["round"]]


def test_round_figures_are_read_once_and_a_rewritten_round_is_read_again(tmp_path: Path, table_path: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="random", budget=6, batch_size=2, seed=0, run_id="r")
    board = Board(lambda: ws, owns_workspace=False)
    run = board.run("r")
    first = board.round_figures(run)
    assert [r["round"] for r in first] == [1, 2, 3] and first == ws.run("r").rounds()
    # A resumed run writes its interrupted (newest) round anew, and new rounds come after it.
    ws.store.add_round("r", 3, {**first[-1], "strategy": "written again"})
    ws.store.add_round("r", 4, {"strategy": "a later round"})
    again = board.round_figures(run)
    assert again == ws.run("r").rounds() and [r["round"] for r in again] == [1, 2, 3, 4]
    assert again[2]["strategy"] == "written again" and again[:2] == first[:2]
    assert ws.run("r").rounds(after_round=2) == again[2:]


def test_compare_draws_a_mean_and_band_per_strategy(client, runs: Workspace) -> None:
    data = client.get("/api/compare?runs=rea-0,rea-1,random-0").json()
    series = {s["label"]: s for s in data["series"]}
    assert set(series) == {"rea", "random"} and series["rea"]["runs"] == ["rea-0", "rea-1"]
    last = series["rea"]["points"][-1]
    finals = [runs.run(r).best().metrics["cifar10_test"] for r in ("rea-0", "rea-1")]
    assert last[0] == 24 and math.isclose(last[1], sum(finals) / 2) and (last[2], last[3]) == (min(finals), max(finals))
    assert client.get("/api/compare").status_code == 400
    assert 'data-page="compare"' in client.get("/compare?runs=rea-0").text


def test_an_unknown_run_is_a_404_page_naming_it(client) -> None:
    page = client.get("/runs/no-such-run")
    assert page.status_code == 404 and "unknown run &#x27;no-such-run&#x27;" in page.text
    assert client.get("/runs/no-such-run/approval").status_code == 404
    api = client.get("/api/runs/no-such-run/trials")
    assert api.status_code == 404 and "unknown run 'no-such-run'" in api.json()["error"]
    assert client.get("/api/nothing-here").status_code == 404


def test_static_files_are_served_and_nothing_comes_from_elsewhere(client) -> None:
    for name in ("dashboard.js", "charts.js", "dashboard.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for path in [*(DASHBOARD / "static").iterdir(), *(DASHBOARD / "templates").iterdir()]:
        text = path.read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (path.name, urls)
        assert "@import" not in text and "url(http" not in text


def test_approval_edit_refused_with_the_checkers_reason_then_taken_once(paused) -> None:
    c, ws = paused, paused.ws
    assert c.get("/api/runs?limit=1").json()["awaiting"] == ["p"]
    pause = c.get("/api/runs/p/approval").json()["pending"]
    batch = [x["ncode"] for x in pause["candidates"]]
    assert pause["round"] == 1 and len(batch) == 2
    assert pause["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject"]
    check = c.post("/api/runs/p/approval/check", json={"action": "edit", "add": ["000000"], "round": 1}).json()
    assert not check["ok"] and "cannot add '000000'" in check["error"] and "degenerate" in check["error"]
    refused = c.post("/api/runs/p/approval", json={"action": "edit", "add": ["000000"], "round": 1})
    assert refused.status_code == 400 and "cannot add '000000'" in refused.json()["error"]
    assert c.get("/api/runs/p/approval").json()["pending"]["round"] == 1  # the pause stays open
    taken = c.post("/api/runs/p/approval", json={"action": "edit", "drop": [batch[0]], "add": ["333132"], "round": 1})
    assert taken.status_code == 202
    assert taken.json()["reply"] == {"action": "edit", "drop": [batch[0]], "add": ["333132"]}
    again = c.post("/api/runs/p/approval", json={"action": "approve", "round": 1})
    assert again.status_code == 409  # the same pause, answered a second time: refused, never applied
    c.board.answers["p"].wait(60)
    assert [t.ncode for t in ws.run("p").trials()] == [batch[1], "333132"]
    stale = c.post("/api/runs/p/approval", json={"action": "approve", "round": 1})
    assert stale.status_code == 409 and "answered already" in stale.json()["error"]
    assert c.get("/api/runs/p/approval").json()["pending"]["round"] == 2
    assert c.post("/api/runs/p/approval", content=b"approve").status_code == 415
    foreign = c.post("/api/runs/p/approval", json={"action": "approve"}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and len(ws.run("p").trials()) == 2
    assert 'data-page="approval"' in c.get("/runs/p/approval").text


def test_two_answers_at_once_exactly_one_is_taken(paused) -> None:
    ws = paused.ws
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def answer() -> None:
        barrier.wait()
        try:
            handle = ws.approve_in_background("p", "approve", expect_round=1)
            handle.wait(60)
            outcomes.append("taken")
        except AnswerRefused as e:
            outcomes.append(f"refused: {e}")

    threads = [threading.Thread(target=answer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert outcomes.count("taken") == 1, outcomes
    assert len(ws.run("p").trials()) == 2 and ws.pending_approval("p")["round"] == 2


def test_an_answer_that_arrives_while_the_last_one_is_closing_the_run_waits_for_it(paused, monkeypatch) -> None:
    """The page shows the next pause as soon as it is recorded, while the thread that drove the run there is
    still closing it: an answer then waits for that thread (an event, not a time) instead of being refused."""
    from collm_nas import api

    ws = paused.ws
    waiting = threading.Event()

    class Watched(threading.Condition):
        def wait_for(self, predicate, timeout=None):
            waiting.set()
            return super().wait_for(predicate, timeout)

    lock = Watched()
    monkeypatch.setattr(api, "_driving_lock", lock)
    outcome: dict[str, str] = {}

    def answer() -> None:
        try:
            ws.approve_in_background("p", "approve", expect_round=1).wait(60)
            outcome["taken"] = "yes"
        except AnswerRefused as e:
            outcome["refused"] = str(e)

    with lock:  # the run paused (status: awaiting approval), its driving thread not gone yet
        api._driving.add("p")
    thread = threading.Thread(target=answer)
    try:
        thread.start()
        assert waiting.wait(30) and thread.is_alive() and not outcome
    finally:
        with lock:
            api._driving.discard("p")
            lock.notify_all()
    thread.join(90)
    assert outcome == {"taken": "yes"}
    assert len(ws.run("p").trials()) == 2 and ws.pending_approval("p")["round"] == 2


def test_an_answer_to_a_finished_run_names_its_end_even_while_it_is_being_closed(paused) -> None:
    from collm_nas import api

    ws = paused.ws
    for round_ in (1, 2, 3):
        ws.approve("p", "approve", expect_round=round_)
    assert ws.run("p").status == "finished"
    with api._driving_lock:
        api._driving.add("p")  # as if the thread that finished it were still closing it
    try:
        with pytest.raises(AnswerRefused, match="not waiting for approval"):
            ws.approve("p", "approve")
    finally:
        with api._driving_lock:
            api._driving.discard("p")
            api._driving_lock.notify_all()


def test_langchains_decisions_reply_through_the_dashboard(paused) -> None:
    c, ws = paused, paused.ws
    batch = [x["ncode"] for x in c.get("/api/runs/p/approval").json()["pending"]["candidates"]]
    edit = {"decisions": [{"type": "edit", "edited_action": {"name": "evaluate_batch",
                                                             "args": {"codes": [batch[0], "333132"]}}}], "round": 1}
    assert c.post("/api/runs/p/approval", json=edit).status_code == 202
    c.board.answers["p"].wait(60)
    assert [t.ncode for t in ws.run("p").trials()] == [batch[0], "333132"]
    reject = {"decisions": [{"type": "reject", "message": "no pooling"}], "round": 2}
    assert c.post("/api/runs/p/approval", json=reject).status_code == 202
    c.board.answers["p"].wait(60)
    assert ws.run("p").rounds()[1]["human"] == {"action": "reject", "comment": "no pooling"}


def test_closing_the_dashboard_stops_a_run_it_drives_after_the_step_in_flight(tmp_path, table_path,
                                                                                monkeypatch) -> None:
    monkeypatch.setenv("E2E_EVAL_SLEEP", "0.1")
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    # over cost: the first batch pauses (its cost unknown), later ones (0.4 s) go on without asking
    ws.search(evaluator="e2e_evaluator:score", space="nb201", strategy="random", budget=16, batch_size=4,
              run_id="slow", approval="over_cost", approval_threshold_s=100.0)
    board = Board(lambda: ws, owns_workspace=False)
    board.answer("slow", {"action": "approve", "round": 1})
    deadline = time.time() + 30
    while ws.store.count_trials("slow") < 1 and time.time() < deadline:
        time.sleep(0.05)
    board.close(wait_s=30)
    done = ws.store.count_trials("slow")
    assert 1 <= done < 16 and ws.run("slow").status == "interrupted (resumable)"
    assert not board.answers["slow"].running
    result = ws.resume("slow")  # nothing lost, nothing repeated
    assert result.evaluations == 16 and len({t.ncode for t in ws.run("slow").trials()}) == 16


def test_a_token_is_required_on_every_request_when_set(runs: Workspace) -> None:
    app = create_app(Board(lambda: runs, owns_workspace=False), token="s3cret")
    with TestClient(app, base_url="http://10.1.2.3:8731") as c:
        assert c.get("/api/runs").status_code == 401 and c.get("/").status_code == 401
        assert c.get("/static/dashboard.js").status_code == 401
        first = c.get("/?token=s3cret")
        assert first.status_code == 200 and "collm_nas_dashboard_token" in first.headers["set-cookie"]
        assert c.get("/api/runs").status_code == 200  # the cookie carries it from now on
    with TestClient(app, base_url="http://10.1.2.3:8731") as c:
        assert c.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/runs?token=wrong").status_code == 401


def test_row_filter_reads_conditions_and_text() -> None:
    row = {"ncode": "333132", "arch": "|nor_conv_3x3~0|", "status": "ok", "error": None, "round": 3,
           "metrics": {"params_mb": 1.07, "cifar10_valid": 91.6}}
    assert row_filter("params_mb>1, cifar10_valid>=91.6", [])(row)
    assert not row_filter("params_mb<1", [])(row)
    assert row_filter("NOR_CONV", [])(row) and not row_filter("skip", [])(row)
    assert not row_filter("missing_metric>1", [])(row)


def test_cli_a_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "collm-nas.db").write_bytes(b"this is not a database at all, just text" * 100)
    assert main(["dashboard", "--runs-dir", str(broken), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open the run store" in err and "Traceback" not in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["dashboard", "--runs-dir", str(blocker / "runs"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "collm-nas: error:" in err
    pytest.importorskip("psycopg")
    from fake_openai import closed_port

    assert main(["dashboard", "--store", f"postgresql://u:pw-s3cret@127.0.0.1:{closed_port()}/db", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open the PostgreSQL store" in err and "pw-s3cret" not in err


def test_cli_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["dashboard", "--runs-dir", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in err


@pytest.mark.e2e
def test_cli_beyond_loopback_prints_a_token_that_every_request_needs(tmp_path: Path, table_path: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    Workspace(tmp_path / "runs", table_path=table_path).search(strategy="random", budget=2, batch_size=2, run_id="t")
    for given in (None, "from-the-environment"):
        env = {k: v for k, v in os.environ.items() if k != "COLLM_NAS_DASHBOARD_TOKEN"}
        if given:
            env["COLLM_NAS_DASHBOARD_TOKEN"] = given
        proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "dashboard", "--host", "0.0.0.0", "--port", "0",
                                 "--runs-dir", str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().split()[-1]
            port, token = re.match(r"http://0\.0\.0\.0:(\d+)/\?token=(\S+)$", url).groups()
            assert token == given if given else len(token) >= 20
            base = f"http://127.0.0.1:{port}"
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{base}/api/runs", timeout=30)
            assert refused.value.code == 401
            request = urllib.request.Request(f"{base}/api/runs", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=30) as answered:
                assert [r["run_id"] for r in json.loads(answered.read())["runs"]] == ["t"]
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        assert "every request needs the token" in proc.stderr.read()


def test_every_file_of_the_dashboard_ships_as_package_data() -> None:
    import fnmatch
    import tomllib

    patterns = tomllib.loads((DASHBOARD.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["collm_nas.dashboard"]
    shipped = [p for p in (DASHBOARD / "static").iterdir()] + [p for p in (DASHBOARD / "templates").iterdir()]
    for path in shipped:
        rel = path.relative_to(DASHBOARD).as_posix()
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), rel
