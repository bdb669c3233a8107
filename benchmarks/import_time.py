"""What importing each layer costs: seconds (best of ``--repeats`` fresh interpreters) and the heavy packages
it drags in (LangGraph, LangChain, torch, the engine, the LLM strategies).

The core, the spaces, the tools and an evaluation worker should load neither LangGraph nor LangChain: a
process-pool worker imports them for every evaluation process it starts.

    python benchmarks/import_time.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MODULES = (
    "collm_nas",
    "collm_nas.core",
    "collm_nas.spaces",
    "collm_nas.tools",
    "collm_nas.evaluators",
    "collm_nas.backends.worker",
    "collm_nas.agents",
    "collm_nas.engine",
    "collm_nas.api",
    "collm_nas.cli",
)
HEAVY = ("langgraph", "langchain_core", "langchain_openai", "torch", "collm_nas.engine", "collm_nas.agents",
         "collm_nas.llm")
PROBE = """
import importlib, json, sys, time
started = time.perf_counter()
try:
    importlib.import_module(sys.argv[1])
except ModuleNotFoundError as e:
    print(json.dumps({"missing": str(e)})); raise SystemExit
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "heavy": [m for m in sys.argv[2:] if m in sys.modules]}))
"""


def measure(module: str, repeats: int) -> dict:
    best: dict = {}
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE, module, *HEAVY], capture_output=True, text=True,
                             check=True).stdout
        data = json.loads(out)
        if "missing" in data:
            return data
        if not best or data["seconds"] < best["seconds"]:
            best = data
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"| module | import s (best of {args.repeats}) | loads |")
    print("|---|---|---|")
    for module in MODULES:
        data = measure(module, args.repeats)
        if "missing" in data:
            print(f"| `{module}` | - | (not in this tree) |")
            continue
        print(f"| `{module}` | {data['seconds']:.2f} | {', '.join(data['heavy']) or 'none of them'} |")


if __name__ == "__main__":
    main()
