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

from collm_nas.finetune.data import Sample, load_samples, sample_from_dict
from collm_nas.agents.ranker import LLMRanker
from collm_nas.api import Run
from collm_nas.core import FINISHED, UserError
from collm_nas.engine import resolve_space


def run_samples(run: Run, *, pool_size: int = 10, skip: int = 5, seed: int = 0, top_k: int | None = None,
                recent: int | None = None, style: str = "compact", stride: int = 1) -> Iterator[dict[str, Any]]:
    """The samples of one run, in evaluation order: one every ``stride`` steps after the first ``skip``."""
    if pool_size < 2 or skip < 0 or stride < 1:
        raise UserError(f"need pool_size >= 2, skip >= 0 and stride >= 1 (got {pool_size}, {skip}, {stride})")
    config = run.config
    space = resolve_space(config)
    trials = [t for t in run.trials() if t.ok]
    rng = random.Random(f"{seed}/{run.run_id}")
    objective = run.objective
    metric = config.metric or "the searched metric"
    ranker = LLMRanker(top_k=top_k, recent=recent, style=style)
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    for step in range(skip, len(trials), stride):
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
        reply = answer.ncode if style == "compact" else json.dumps({"code": answer.ncode})
        yield {
            "messages": [{"role": roles[m.type], "content": m.content} for m in prompt]
            + [{"role": "assistant", "content": reply}],
            "answer": answer.ncode,
            "pool": {t.ncode: t.value for t in pool},
            "meta": {"run_id": run.run_id, "step": step, "space": config.space, "dataset": config.dataset,
                     "strategy": config.strategy, "mode": config.mode, "style": style,
                     "code_length": space.length},
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


def training_samples(data: Sequence[str | Path] = (), runs: Sequence[Run] = (), **options: Any) -> list[Sample]:
    """Checked samples from JSON-lines files and from finished runs (exported on the fly, compact)."""
    samples = load_samples(data)
    for run in runs:
        if run.info.status != FINISHED:
            raise UserError(f"run '{run.run_id}' is not finished ({run.status}); train on finished runs only")
        for raw in run_samples(run, **options):
            samples.append(sample_from_dict(raw, f"run {run.run_id} step {raw['meta']['step']}"))
    return samples


def finetune_ranker(out: str | Path, *, data: Sequence[str | Path] = (), runs: Sequence[Run] = (),
                    base: str | Path = "local", options: Any = None, progress: bool = True, log: Any = print):
    """``collm-nas finetune``: LoRA-tune ``base`` on the samples of ``data`` files and ``runs`` into ``out``.

    Returns :class:`collm_nas.finetune.train.FinetuneResult`; ``out`` then serves the ranker with
    ``--llm local --llm-model OUT``. ``options`` is a :class:`~collm_nas.finetune.train.FinetuneOptions`.
    """
    from collm_nas.finetune.train import finetune

    if not data and not runs:
        raise UserError("nothing to train on: give --data FILE.jsonl and/or --runs RUN_ID")
    samples = training_samples(data, runs)
    return finetune(samples, out, base=base, options=options, progress=progress, log=log)
