"""Builds (and validates) the working parts of a run from its configuration.

Graph nodes, the CLI and the Python API all get their space, evaluator,
checker, strategy and Coordinator from here, so a configuration is checked
once, the same way everywhere, and a bad one is a one-line UserError.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from langchain_core.tools import StructuredTool

from collm_nas.agents import FALLBACKS, Coordinator, Objective, SearchStrategy, StopRule, make_strategy
from collm_nas.errors import UserError
from collm_nas.evaluators import Evaluator, EvaluatorSpec, ParallelEvaluator
from collm_nas.graphs.state import RunConfig
from collm_nas.graphs.locator import is_postgres, mask_url
from collm_nas.graphs.store import BaseTrialStore, RunHistory, open_trial_store
from collm_nas.spaces import SearchSpace, get_space, parse_constraints, space_from_dict
from collm_nas.tools import ValidityChecker, make_validity_tool


@dataclass
class Components:
    run_id: str
    config: RunConfig
    space: SearchSpace
    evaluator: Evaluator
    checker: ValidityChecker
    validity_tool: StructuredTool
    strategy: SearchStrategy
    coordinator: Coordinator
    store: BaseTrialStore
    history: RunHistory
    legal_count: int | None
    objective: Objective
    prior: list[tuple[str, list[str], list[float]]] | None = None  # (name, codes, values) per prior

    @property
    def batch_size(self) -> int:
        return self.coordinator.batch_size


def resolve_space(config: RunConfig) -> SearchSpace:
    if config.space_definition is not None:
        return space_from_dict(config.space_definition, source=f"stored space '{config.space}'")
    return get_space(config.space)


def check_config(config: RunConfig, table_path: str | None) -> tuple[SearchSpace, Evaluator, ValidityChecker, SearchStrategy, int | None]:
    """Validate a configuration; raises UserError naming the first problem."""
    space = resolve_space(config)
    evaluator = evaluator_spec(config, space, table_path).build()
    known = set(evaluator.resource_names) | space.cost_names
    constraints = parse_constraints([*space.default_constraints, *config.constraints], known)
    checker = ValidityChecker(space, constraints, evaluator.resources)
    strategy = make_strategy(config.strategy)
    fallback = make_strategy(config.fallback)
    if fallback.needs_llm:
        raise UserError(f"fallback strategy '{config.fallback}' needs an LLM; pick one of {', '.join(FALLBACKS)}")
    if strategy.needs_llm and config.llm == "none":
        strategy = fallback  # no LLM available: the run is the LLM-free strategy (the CLI says so)
    if config.patience is not None and config.patience < 1:
        raise UserError(f"patience must be at least 1 round, got {config.patience}")
    if config.budget < 1:
        raise UserError(f"budget must be at least 1, got {config.budget}")
    if config.batch_size is not None and config.batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {config.batch_size}")
    legal = checker.count_legal()
    if legal is not None and config.budget > legal:
        raise UserError(
            f"budget {config.budget} is larger than the space: '{space.name}' has only {legal:,} legal "
            "architectures under the given constraints; lower --budget"
        )
    return space, evaluator, checker, strategy, legal


def evaluator_spec(config: RunConfig, space: SearchSpace, table_path: str | None) -> EvaluatorSpec:
    """How the run's evaluator is built (``make_evaluator``'s arguments), here and in every worker."""
    if table_path is not None:
        table_path = str(Path(table_path).expanduser().resolve())  # workers may run elsewhere (Ray)
    return EvaluatorSpec(
        kind=config.evaluator,
        space=space,
        seed=config.seed,
        options=dict(dataset=config.dataset, table_path=table_path, metric=config.metric, mode=config.mode,
                     train_options=dict(config.train_options)),
    )


def spool_dir(db_path: str, run_id: str) -> Path:
    """Where workers keep finished results until the search has stored them (always on this machine).

    ``db_path`` is the store locator: beside a SQLite file; for a PostgreSQL
    store, in the user's cache folder, one folder per database.
    """
    if is_postgres(db_path):
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        database = hashlib.sha256(mask_url(db_path).encode()).hexdigest()[:12]
        return cache / "collm-nas" / "spool" / database / run_id
    return Path(db_path).parent / "spool" / run_id


@lru_cache(maxsize=8)
def open_store(db_path: str) -> BaseTrialStore:
    """The (cached) trial store of a locator: a SQLite file path or a postgres:// URL."""
    return open_trial_store(db_path)


@lru_cache(maxsize=16)
def _components(db_path: str, run_id: str, config_json: str, table_path: str | None) -> Components:
    config = RunConfig.model_validate_json(config_json)
    space, evaluator, checker, strategy, legal = check_config(config, table_path)
    # Batches run serially, on worker processes or on Ray; the results are the same (see evaluators/parallel.py).
    evaluator = ParallelEvaluator(evaluator_spec(config, space, table_path), config.backend, config.workers,
                                  inner=evaluator, spool_dir=spool_dir(db_path, run_id))
    store = open_store(db_path)
    validity_tool = make_validity_tool(checker)
    coordinator = Coordinator(
        # Nodes screen through the same LangChain tool an LLM agent calls.
        check=lambda codes: validity_tool.invoke({"ncodes": codes}),
        stop=StopRule(config.budget, config.target, evaluator.mode, config.patience),
        batch_size=config.batch_size or strategy.default_batch_size,
        fallback=make_strategy(config.fallback) if strategy.uses_llm else None,
    )
    constraints = [*space.default_constraints, *(c for c in config.constraints if c not in space.default_constraints)]
    objective = Objective(
        metric=evaluator.searched_metric,
        mode=evaluator.mode,
        budget=config.budget,
        note=evaluator.metric_note,
        constraints=tuple(constraints),
        resources=tuple(sorted(set(evaluator.resource_names) | space.cost_names)),
    )
    prior = load_prior(config, run_id, evaluator, checker, store) if config.prior else None
    return Components(
        prior=prior,
        run_id=run_id,
        config=config,
        space=space,
        evaluator=evaluator,
        checker=checker,
        validity_tool=validity_tool,
        strategy=strategy,
        coordinator=coordinator,
        store=store,
        history=RunHistory(store, run_id, evaluator.mode),
        legal_count=legal,
        objective=objective,
    )


_DATASET_PREFIXES = ("cifar100_", "cifar10_", "imagenet16_")


def _dataset_of_column(column: str) -> str | None:
    return next((p.rstrip("_") for p in _DATASET_PREFIXES if column.startswith(p)), None)


def load_prior(config: RunConfig, run_id: str, evaluator: Evaluator, checker: ValidityChecker,
               store: BaseTrialStore) -> list[tuple[str, list[str], list[float]]]:
    """Warm-start data from other runs or other datasets' table columns; never the target's own results."""
    target = _dataset_of_column(evaluator.searched_metric)
    out = []
    for ref in config.prior:
        if ref.startswith("table:"):
            column = ref.split(":", 1)[1]
            table = getattr(evaluator, "table", None)
            if table is None or column not in table.columns:
                raise UserError(f"prior '{ref}' needs the NAS-Bench-201 table evaluator and one of its columns "
                                "(e.g. table:cifar100_test)")
            if _dataset_of_column(column) is None or _dataset_of_column(column) == target:
                raise UserError(f"prior '{ref}' is not another dataset's accuracy column; a prior must never "
                                f"come from the target ({evaluator.searched_metric}); use e.g. table:cifar100_test")
            codes = [c for c in table.rows if checker.is_valid(c)]
            out.append((ref, codes, [table.value(c, column) for c in codes]))
            continue
        info = store.get_run(ref)
        if info is None:
            raise UserError(f"prior run '{ref}' is unknown; 'collm-nas runs' lists the runs, or use table:COLUMN")
        other = RunConfig.model_validate(info.config)
        if ref == run_id or (other.space, other.evaluator, other.dataset, other.metric) == (
                config.space, config.evaluator, config.dataset, config.metric):
            raise UserError(f"prior run '{ref}' searched the same task as this run; a prior must come from "
                            "another dataset or task")
        trials = [t for t in store.trials(ref) if t.ok and checker.is_valid(t.ncode)]
        out.append((ref, [t.ncode for t in trials], [t.value for t in trials]))
    return out


def components_for(
    db_path: str, run_id: str, config: RunConfig | dict, table_path: str | None = None
) -> Components:
    """The (cached) components of a run; the history is refreshed from the store.

    ``db_path`` is the store locator: a SQLite file path or a postgres:// URL.
    """
    cfg = config if isinstance(config, RunConfig) else RunConfig.model_validate(config)
    key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    comps = _components(str(db_path), run_id, key, table_path)
    comps.history.refresh()
    return comps


def forget_components() -> None:
    """Drop cached components (tests, or after a run's files were replaced)."""
    _components.cache_clear()
