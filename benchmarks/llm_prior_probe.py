"""What a local model knows of NAS-Bench-201 before any result: the prior ``--prior llm`` asks it for.

Where a search has few results (its first rounds), an LLM can help only with what it already knows. This
probe asks each model exactly what a run with ``--prior llm`` asks (:mod:`collm_nas.agents.llm_prior`): for
every pair of the five NAS-Bench-201 operations and in both orders, which of the two on a cell's edge gives
the higher validation accuracy, read as the model's log-probability of each letter, so a position bias cancels
between the two orders. Printed per model: the operations from most to least preferred with their scores, how
often the first-listed option is preferred (0.50: no position bias), the Kendall tau between the prior's
network values and the table's test accuracy on each dataset over the space's 4,929 networks (one row each:
the mean of the codes the table trained separately), and where that tau stands among the 120 orders of the
five operations (scored 4, 3, 2, 1, 0): the share of orders whose tau on CIFAR-10 is lower.

Beside them, rows no model wrote: the textbook order (3x3 convolution, 1x1 convolution, skip, pooling, zero:
what a model with the common knowledge would answer), the median of the 120 orders, and the parameter count.

    python benchmarks/llm_prior_probe.py --model ~/.cache/collm-nas/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

from collm_nas.agents.llm_prior import OptionPreferences, ask_preferences
from collm_nas.evaluators.nb201_table import DATASETS, load_table
from collm_nas.spaces.nb201 import OPERATIONS, NB201Space, reaches_output

TEXTBOOK = ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none"]  # best first
TABLE_DATASETS = ("cifar10", "cifar100", "imagenet16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[],
                   help="a GGUF chat model to probe (repeatable); the embedded SmolLM2-135M is always probed")
    p.add_argument("--table", default=os.environ.get("COLLM_NAS_NB201_TABLE"),
                   help="nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE)")
    return p.parse_args(argv)


def of_order(order: list[str]) -> OptionPreferences:
    """Preferences that put ``order`` first to last, evenly spaced."""
    table = {op: float(len(order) - 1 - i) for i, op in enumerate(order)}
    return OptionPreferences(scores=[table] * 6, first_listed=0.5, calls=[])


def probe_model(model: str | None) -> tuple[str, OptionPreferences, float]:
    """Ask the model what ``--prior llm`` asks; its name, its preferences and the seconds it took."""
    from collm_nas.llm.session import open_llm

    with open_llm("local", {"ranker.model": model} if model else {}, roles=("ranker",)) as roles:
        chat = roles.chat("ranker")
        started = time.perf_counter()
        preferences = ask_preferences(chat, NB201Space(), "cifar10_valid")
        return chat.cfg.model, preferences, time.perf_counter() - started


def networks(table_path: str) -> tuple[list[str], dict[str, dict[str, float]], dict[str, float]]:
    """One code per network, each dataset's test accuracy per network (the mean of its codes), its parameters."""
    table, space = load_table(table_path), NB201Space()
    codes_of: dict[str, list[str]] = defaultdict(list)
    for code in table.rows:
        if reaches_output(code):
            codes_of[space.network_key(code)].append(code)
    first = [codes[0] for codes in codes_of.values()]
    accuracy = {d: {codes[0]: statistics.mean(table.value(c, DATASETS[d].reported) for c in codes)
                    for codes in codes_of.values()} for d in TABLE_DATASETS}
    params = {codes[0]: min(table.value(c, "params_mb_cifar10") for c in codes) for codes in codes_of.values()}
    return first, accuracy, params


def kendall(codes: list[str], x: list[float], y: dict[str, float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(x, [y[c] for c in codes]).statistic)


def taus(codes: list[str], preferences: OptionPreferences, accuracy: dict[str, dict[str, float]]) -> list[float]:
    values = preferences.values(NB201Space(), codes)
    return [kendall(codes, values, accuracy[d]) for d in TABLE_DATASETS]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.table or not Path(args.table).is_file():
        raise SystemExit("the NAS-Bench-201 table is missing; set --table or COLLM_NAS_NB201_TABLE")
    codes, accuracy, params = networks(args.table)
    orders = [taus(codes, of_order(list(o)), accuracy) for o in itertools.permutations(OPERATIONS)]
    chance_c10 = sorted(t[0] for t in orders)
    print(f"NAS-Bench-201, {len(codes)} networks; {platform.machine()}, {os.cpu_count()} cores")
    print("| prior | operations, most preferred first | first-listed preferred | tau C10 / C100 / IN16 "
          "| orders below (C10) | s / question |")
    print("|---|---|---|---|---|---|")

    def row(name: str, order: str, bias: str, t: list[float], speed: str) -> None:
        below = sum(x < t[0] for x in chance_c10) / len(chance_c10)
        print(f"| {name} | {order} | {bias} | {' / '.join(f'{x:.3f}' for x in t)} | {below:.0%} | {speed} |")

    row("textbook order (no model)", " > ".join(TEXTBOOK), "–", taus(codes, of_order(TEXTBOOK), accuracy), "–")
    median = [statistics.median(t[k] for t in orders) for k in range(3)]
    print(f"| median of the 120 orders (no model) | – | – | {' / '.join(f'{x:.3f}' for x in median)} | – | – |")
    for model in [None, *args.model]:
        name, preferences, seconds = probe_model(model)
        table = preferences.scores[0]
        order = " > ".join(f"{op} {table[op]:.3f}" for op in preferences.ranking(0))
        calls = preferences.calls
        speed = (f"{seconds / len(calls):.2f} ({statistics.mean(c['prompt_tokens'] for c in calls):.0f} prompt "
                 "tokens)")
        row(name, order, f"{preferences.first_listed:.2f}", taus(codes, preferences, accuracy), speed)
    t = [kendall(codes, [params[c] for c in codes], accuracy[d]) for d in TABLE_DATASETS]
    row("parameter count (no model)", "–", "–", t, "–")


if __name__ == "__main__":
    main()
