"""Instruction-tuning samples in LM-Searcher's form, from finished runs.

One sample per step of a run after its first few trials: the history so far
(``NCODE|reward`` lines, as the ranker sees it), a pool of candidates, and
the pool's truly best candidate as the answer. The pool is the code that the
run evaluated at that step plus codes the run evaluated later, so every
candidate's true value is known, whatever the evaluator; the answer comes
from those recorded values, never from a model.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from collm_nas.agents.ranker import LLMRanker
from collm_nas.api import Run
from collm_nas.core import FINISHED, UserError
from collm_nas.engine import resolve_space


def run_samples(run: Run, *, pool_size: int = 10, skip: int = 5, seed: int = 0, top_k: int = 20,
                recent: int = 10) -> Iterator[dict[str, Any]]:
    """The samples of one run, in evaluation order."""
    config = run.config
    space = resolve_space(config)
    trials = [t for t in run.trials() if t.ok]
    rng = random.Random(f"{seed}/{run.run_id}")
    objective = run.objective
    metric = config.metric or "the searched metric"
    ranker = LLMRanker(top_k=top_k, recent=recent)
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    for step in range(skip, len(trials)):
        later = trials[step + 1:]
        pool = [trials[step]] + rng.sample(later, min(pool_size - 1, len(later)))
        if len(pool) < 2:
            break
        rng.shuffle(pool)
        answer = pool[0]
        for t in pool[1:]:
            if objective.better(t, answer):
                answer = t
        prompt = ranker.messages(space, trials[:step], [t.ncode for t in pool], mode=config.mode,
                                 metric=metric, constraints=tuple(config.constraints))
        yield {
            "messages": [{"role": roles[m.type], "content": m.content} for m in prompt]
            + [{"role": "assistant", "content": json.dumps({"code": answer.ncode})}],
            "answer": answer.ncode,
            "pool": {t.ncode: t.value for t in pool},
            "meta": {"run_id": run.run_id, "step": step, "space": config.space, "dataset": config.dataset,
                     "strategy": config.strategy, "mode": config.mode},
        }


def export_trajectories(runs: Sequence[Run], out: str | Path, **options: Any) -> int:
    """Write the samples of finished ``runs`` as JSON lines; returns how many were written."""
    for run in runs:
        if run.info.status != FINISHED:
            raise UserError(f"run '{run.run_id}' is not finished ({run.status}); export finished runs only")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as f:
        for run in runs:
            for sample in run_samples(run, **options):
                f.write(json.dumps(sample) + "\n")
                count += 1
    return count
