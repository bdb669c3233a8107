"""What a `collm` search on a local model costs, per call: prompt and completion tokens and seconds per role.

Each configuration (batch size x llama.cpp prompt cache on/off) is one real search through the command line
(`collm-nas search --strategy collm --llm local --llm-model FILE --json`) on the NAS-Bench-201 table, so
the server, the prompts, the grammars and the cache are exactly what a user gets. Configurations run one
after another on the same machine; compare them within one run of this script, since a busy machine moves
every figure. Printed per configuration: the search's wall time, rounds answered by the LLM, and per role
the calls, the mean prompt / completion tokens of a call and its mean seconds.

    python benchmarks/collm_speed.py --model ~/.cache/collm-nas/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \\
        --budget 100 --batch 10 --navigate-every 2
    python benchmarks/collm_speed.py --model FILE --budget 20 --batch 5 --cache-mb 0 --cache-mb 256
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M)")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--batch", type=int, action="append", default=[], help="batch sizes (repeatable; default 10)")
    p.add_argument("--cache-mb", type=int, action="append", default=[],
                   help="prompt cache sizes in MiB, 0 = off (repeatable; default 256)")
    p.add_argument("--navigate-every", type=int, action="append", default=[],
                   help="the Navigator plans every N rounds (repeatable; default 1, the paper's protocol)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--out", default=None, help="also write the records as JSON here")
    return p.parse_args(argv)


def one_search(args: argparse.Namespace, batch: int, cache_mb: int, every: int, runs_dir: Path) -> dict:
    command = [sys.executable, "-m", "collm_nas.cli", "search", "--strategy", "collm", "--llm", "local",
               "--dataset", args.dataset, "--budget", str(args.budget), "--batch-size", str(batch),
               "--seed", str(args.seed), "--runs-dir", str(runs_dir), "--run-id", f"b{batch}-c{cache_mb}-n{every}",
               "--navigate-every", str(every), "--no-progress", "--json"]
    if args.model:
        command += ["--llm-model", args.model]
    env = dict(os.environ, COLLM_NAS_LLM_PROMPT_CACHE_MB=str(cache_mb))
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"batch": batch, "cache_mb": cache_mb, "every": every, "wall_s": wall, "error": done.stderr.strip()[-300:]}
    out = json.loads(done.stdout)
    llm = out.get("llm") or {}
    return {"batch": batch, "cache_mb": cache_mb, "every": every, "wall_s": wall, "evaluations": out["evaluations"],
            "best": out["best"]["ncode"] if out.get("best") else None,
            "rounds": llm.get("rounds"), "llm_rounds": llm.get("llm_rounds"),
            "fallback_rounds": llm.get("fallback_rounds"), "server_timeouts": llm.get("server_timeouts"),
            "by_role": llm.get("by_role") or {}}


def table(records: list[dict]) -> str:
    head = ("| batch | prompt cache | plan every | wall s | LLM rounds | navigator: calls, tokens in/out a call, s a call "
            "| generator: calls, tokens in/out a call, s a call |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['batch']} | {r['cache_mb']} MiB | {r['every']} | {r['wall_s']:.0f} "
                         f"| failed: {r['error']} | | |")
            continue
        cells = []
        for role in ("navigator", "generator"):
            row = r["by_role"].get(role)
            if not row:
                cells.append("-")
                continue
            one = row["per_call"]
            cells.append(f"{row['calls']}, {one['prompt_tokens']:.0f} / {one['completion_tokens']:.0f}, "
                         f"{one['seconds']:.1f}")
        cache = f"{r['cache_mb']} MiB" if r["cache_mb"] else "off"
        lines.append(f"| {r['batch']} | {cache} | {r['every']} | {r['wall_s']:.0f} | {r['llm_rounds']}/{r['rounds']} "
                     f"| {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    records = []
    with tempfile.TemporaryDirectory(prefix="collm-speed-") as tmp:
        for batch, cache_mb, every in itertools.product(args.batch or [10], args.cache_mb or [256],
                                                        args.navigate_every or [1]):
            records.append(one_search(args, batch, cache_mb, every, Path(tmp) / "runs"))
            print(table(records[-1:]).splitlines()[-1], flush=True)
    print(f"\nmodel {args.model or 'SmolLM2-135M (embedded)'}, {args.budget} evaluations, seed {args.seed}, "
          f"{args.dataset}, {os.cpu_count()} CPUs\n")
    print(table(records))
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
