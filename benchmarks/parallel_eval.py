"""Wall time of a batch of slow evaluations on each backend (serial, process pool, Ray).

Every evaluation sleeps ``--sleep`` seconds (as a GPU- or I/O-bound training
step would keep a worker busy) and then runs a small seeded torch computation.
Two batches of ``--codes`` NAS-Bench-201 codes run on the same evaluator: the
first includes starting the workers, the second finds them started. The last
column says whether the backend's results equal the serial ones.

    python benchmarks/parallel_eval.py --sleep 1.0 --codes 8 --workers 2 4 [--ray]
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch

from collm_nas.backends import EvaluatorSpec, make_backend
from collm_nas.spaces import SPACES

def slow_evaluation(arch: dict, seed: int) -> dict:
    """The benchmark's evaluator (imported by name in the workers, which inherit the environment)."""
    time.sleep(float(os.environ.get("PARALLEL_EVAL_SLEEP", "1.0")))
    score = float(torch.tanh(torch.randn(4, 8) @ torch.randn(8, 8)).sum())
    return {"score": score, "seed": float(seed)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sleep", type=float, default=1.0, help="seconds per evaluation")
    p.add_argument("--codes", type=int, default=8, help="evaluations per batch")
    p.add_argument("--workers", nargs="+", type=int, default=[2, 4])
    p.add_argument("--ray", action="store_true", help="also on a local Ray (needs collm-nas[ray])")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["PARALLEL_EVAL_SLEEP"] = str(args.sleep)  # set before any worker (or Ray) starts
    space = SPACES.resolve("nb201")
    codes = random.Random(0).sample(sorted(space.enumerate()), 2 * args.codes)
    spec = EvaluatorSpec("parallel_eval:slow_evaluation", space, seed=0, metric="score")
    runs = [("serial", None)] + [("process", w) for w in args.workers] + ([("ray", w) for w in args.workers]
                                                                         if args.ray else [])
    print(f"{args.codes} evaluations of {args.sleep:g} s per batch\n")
    print("| backend | workers | first batch (workers start) | next batch | same results as serial |")
    print("|---|---|---|---|---|")
    reference = None
    for backend, workers in runs:
        evaluator = make_backend(backend, spec, workers=workers)
        times, results = [], []
        for batch in (codes[: args.codes], codes[args.codes:]):
            start = time.perf_counter()
            results += [(r.ncode, r.status, r.metrics) for r in evaluator.evaluate(batch)]
            times.append(time.perf_counter() - start)
        evaluator.close()
        reference = reference or results
        print(f"| {backend} | {workers or 1} | {times[0]:.1f} s | {times[1]:.1f} s | "
              f"{'yes' if results == reference else 'NO'} |")


if __name__ == "__main__":
    main()
