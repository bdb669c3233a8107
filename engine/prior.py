"""Warm-start data for the learned ranker (``--prior``): other runs, other columns of a tabular benchmark, or
a zero-cost proxy of every network of the space (``proxy:naswot``; computed once per machine, then cached),
or the run's LLM's own knowledge (``llm``: the strategy asks it in the run's first round, see
:mod:`collm_nas.agents.llm_prior`).

A prior never comes from the target itself: not the run's own results, not
another run of the same task, not the searched column of the table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from collm_nas.core import Evaluator, RunConfig, SearchSpace, TrialStore, UserError, load_settings

Prior = list[tuple[str, list[str], list[float]]]  # (name, codes, values) per prior

_DATASET_PREFIXES = ("cifar100_", "cifar10_", "imagenet16_")
LLM_PRIOR = "llm"  # --prior llm: the run's LLM's own knowledge (collm_nas.agents.llm_prior)


def _dataset_of_column(column: str) -> str | None:
    return next((p.rstrip("_") for p in _DATASET_PREFIXES if column.startswith(p)), None)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout stays the faces' own (--json)


def load_prior(config: RunConfig, run_id: str, evaluator: Evaluator, is_legal, store: TrialStore,
               space: SearchSpace, *, say: Callable[[str], None] = _to_stderr) -> Prior:
    """Warm-start data from other runs, other datasets' table columns or a zero-cost proxy of the space's
    networks; never the target's own results. ``say``: what a long first computation tells the user."""
    target = _dataset_of_column(evaluator.searched_metric)
    out: Prior = []
    for ref in config.prior:
        if ref == LLM_PRIOR:  # asked by the strategy, of the run's LLM, in its first round
            continue
        if ref.startswith("proxy:"):
            from collm_nas.evaluators.proxy_prior import check_proxy, proxy_prior

            proxy = ref.split(":", 1)[1]
            check_proxy(proxy, space.name)
            if evaluator.searched_metric == proxy:
                raise UserError(f"prior '{ref}' is what this run searches ({evaluator.searched_metric}); a prior "
                                "must never come from the target; use another proxy or drop --prior")
            codes = [c for c in space.enumerate() if is_legal(c)]
            out.append((ref, *proxy_prior(space, codes, proxy, load_settings().cache_path(), say=say)))
            continue
        if ref.startswith("table:"):
            column = ref.split(":", 1)[1]
            if column not in evaluator.reference_columns:
                raise UserError(f"prior '{ref}' needs the NAS-Bench-201 table evaluator and one of its columns "
                                "(e.g. table:cifar100_test)")
            if _dataset_of_column(column) is None or _dataset_of_column(column) == target:
                raise UserError(f"prior '{ref}' is not another dataset's accuracy column; a prior must never "
                                f"come from the target ({evaluator.searched_metric}); use e.g. table:cifar100_test")
            values = evaluator.reference_values(column)
            codes = [c for c in values if is_legal(c)]
            out.append((ref, codes, [values[c] for c in codes]))
            continue
        info = store.get_run(ref)
        if info is None:
            raise UserError(f"prior run '{ref}' is unknown; 'collm-nas runs' lists the runs, or use table:COLUMN")
        other = RunConfig.from_stored(info.config)
        if ref == run_id or (other.space, other.evaluator, other.dataset, other.metric) == (
                config.space, config.evaluator, config.dataset, evaluator.searched_metric):
            raise UserError(f"prior run '{ref}' searched the same task as this run; a prior must come from "
                            "another dataset or task")
        trials = [t for t in store.trials(ref) if t.ok and is_legal(t.ncode)]
        out.append((ref, [t.ncode for t in trials], [t.value for t in trials]))
    return out
