"""One way in: :func:`prepare_run` turns a run spec into a validated, stored run.

The Python API (``Workspace.search``), LangGraph Studio's ``start`` node and
the dashboard all call it, so a request is resolved, checked and stored the
same way everywhere:

1. :func:`resolve_config` fills in what the request left open (the
   evaluator's default dataset, the backend and workers from the settings,
   the LLM source this machine has, a snapshot of a space file, the
   supernet cache folder) and says in one line when no LLM is there;
2. the run id is the one asked for or a fresh, readable one
   (:func:`make_run_id`);
3. the :class:`~collm_nas.engine.loop.SearchLoop` is built (every part of the
   spec is checked: a bad one is a one-line ``UserError`` and nothing is
   stored), the backend and the evaluator's data are checked;
4. the evaluator's metrics are written into the spec, and the run is created
   in the trial store, held by this process.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collm_nas.agents import STRATEGIES
from collm_nas.core import ACTIVE, RunConfig, Settings, TrialStore, UserError
from collm_nas.engine.loop import SearchLoop
from collm_nas.evaluators import default_dataset, run_label
from collm_nas.backends import require_backend
from collm_nas.spaces import is_space_file, load_space_file
from collm_nas.storage import spool_dir

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class PreparedRun:
    run_id: str
    config: RunConfig  # resolved, as stored
    loop: SearchLoop
    note: str | None = None  # one line for the user (e.g. no LLM here: the fallback runs)


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise UserError(f"bad run id '{run_id}'; use letters, digits, '.', '_' and '-' (at most 100)")
    return run_id


def make_run_id(config: RunConfig, tag: str | None = None) -> str:
    """A fresh, readable run id: ``rea-cifar10-20261122-150512-a3f9`` (``tag`` replaces the time and random part)."""
    where = run_label(config.evaluator, config.space, config.dataset)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(where or "run").stem)[:30]
    strategy = re.sub(r"[^A-Za-z0-9_-]+", "_", config.strategy.rpartition(":")[2])[:30]
    if tag is not None:
        return f"{strategy}-{stem}-{re.sub(r'[^A-Za-z0-9]', '', tag)[:8] or 'run'}"
    return f"{strategy}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def resolve_config(config: RunConfig, settings: Settings, *, runs_dir: Path | None = None,
                   custom_llm: bool = False) -> tuple[RunConfig, str | None]:
    """The spec with what the request left open filled in, and a one-line note when no LLM is there."""
    config = config.model_copy(deep=True)
    if is_space_file(config.space) and config.space_definition is None:
        config.space_definition = load_space_file(config.space).to_dict()
    if config.dataset is None:
        config.dataset = default_dataset(config.evaluator) or "cifar10"
    if config.backend is None:
        config.backend = settings.backend
    if config.workers is None:
        config.workers = settings.workers
    if config.evaluator == "supernet" and not config.train_options.get("cache_dir"):
        # The supernet is trained once and kept with the runs (stored with the run: resume and fork find it).
        base = Path(runs_dir) if runs_dir is not None else settings.runs_dir
        config.train_options["cache_dir"] = str((base / "supernets").expanduser().resolve())
    strategy = STRATEGIES.resolve(config.strategy)
    note = None
    asks_prior = "llm" in config.prior
    if asks_prior and "ranker" not in strategy.llm_roles:
        raise UserError(f"--prior llm is the learned ranker's prior, asked of the ranker's LLM; strategy "
                        f"'{config.strategy}' has neither: use --strategy lmsearcher, or drop --prior llm")
    if not strategy.uses_llm:
        return config, None
    from collm_nas.llm.session import check_role_options, resolve_llm

    check_role_options(config.role_options())
    if custom_llm:
        config.llm = "custom"
    elif config.llm == "custom":
        raise UserError("llm 'custom' means chat models passed to the Python API (llm_roles=...); pick auto, "
                        "endpoint, local or none")
    elif config.llm in ("auto", "endpoint") and config.llm_base_url:
        config.llm = "endpoint"  # the request names the endpoint itself
    else:
        config.llm, note = resolve_llm(config.llm)  # type: ignore[assignment]
    if note:
        note += (f": the LLM-free fallback strategy '{config.fallback}' runs instead" if strategy.needs_llm
                 else f": {config.strategy} uses its learned ranker")
    if config.llm == "none" and asks_prior:
        raise UserError("--prior llm asks the run's LLM, and this run has none" + (f" ({note})" if note else "")
                        + "; use --llm local (or an endpoint), or drop --prior llm")
    if config.ranker_pool == "none" and config.llm != "none" and not asks_prior:
        raise UserError("--ranker-pool none leaves the LLM nothing to do; add --prior llm (the model's knowledge "
                        "as the learned ranker's prior), or use --llm none")
    return config, note


def open_loop(run_id: str, config: RunConfig, store: TrialStore, locator: str, table_path: str | None, *,
              llm: Any = None) -> SearchLoop:
    """A stored run's engine: its components built once, workers' spool beside the store."""
    from collm_nas.engine.toolbox import role_tools

    return SearchLoop(run_id, config, store, table_path=table_path, spool_dir=spool_dir(locator, run_id), llm=llm,
                      tools=role_tools)


def prepare_run(config: RunConfig, *, store: TrialStore, locator: str, settings: Settings,
                table_path: str | None, run_id: str | None = None, runs_dir: Path | None = None,
                custom_llm: bool = False, id_tag: str | None = None, reuse_empty: bool = False,
                llm: Any = None) -> PreparedRun:
    """Resolve, validate and store a new run (see the module doc).

    ``reuse_empty`` accepts an existing run of the same id when it has the
    same spec and no trial yet (a LangGraph node re-run after a crash finds
    its own run).
    """
    config, note = resolve_config(config, settings, runs_dir=runs_dir, custom_llm=custom_llm)
    run_id = check_run_id(run_id or make_run_id(config, id_tag))
    existing = store.get_run(run_id)
    if existing is not None and not reuse_empty:
        raise UserError(f"run '{run_id}' already exists; resume it with 'collm-nas resume {run_id}' or pick "
                        "another --run-id")
    loop = open_loop(run_id, config, store, locator, table_path, llm=llm)  # checks the whole spec
    require_backend(config.backend or "serial")  # e.g. Ray installed, before the run exists
    loop.evaluator.prepare()  # e.g. the train evaluator's data is there
    evaluator = loop.evaluator
    config.metric, config.mode = evaluator.searched_metric, evaluator.mode  # type: ignore[assignment]
    config.reported_metric, config.metric_note = evaluator.reported_metric, evaluator.metric_note
    loop.config = config
    stored = config.model_dump(mode="json")
    if existing is None:
        store.create_run(run_id, stored)
    elif not (existing.config == stored and existing.status == ACTIVE and store.count_trials(run_id) == 0):
        raise UserError(f"run '{run_id}' already exists in {store.location}; leave run_id empty or pick another")
    return PreparedRun(run_id, config, loop, note)
