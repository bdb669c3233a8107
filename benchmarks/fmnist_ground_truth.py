"""Fashion-MNIST ground truth for NAS-Bench-201 cells, made by collm-nas itself.

Trains a fixed set of NB201 cells from scratch on Fashion-MNIST with one
schedule (``SCHEDULE`` below) through the train evaluator, as ordinary
collm-nas runs of the ``codes:PATH`` strategy, then writes the table
``benchmarks/fmnist_nb201_ground_truth.csv`` that the table evaluator reads
(``--evaluator table --table benchmarks/fmnist_nb201_ground_truth.csv
--dataset fashion-mnist``). Recipe and figures: benchmarks/fmnist_ground_truth.md.

    python benchmarks/fmnist_ground_truth.py            # start or resume the runs, then export the CSV
    python benchmarks/fmnist_ground_truth.py --export   # export what the runs hold so far (no training)
    python benchmarks/fmnist_ground_truth.py --select   # (re)write the cell lists (needs the NB201 table)
    python benchmarks/fmnist_ground_truth.py --select-heldout   # write the held-out list (needs it too)
    python benchmarks/fmnist_ground_truth.py --heldout  # train the held-out cells, export their table

Three runs, in this order, each resumable (a killed run resumes with
``collm-nas resume RUN_ID``, and this script does that for you) and never
trains a network twice:

1. ``fmnist-gt-s0-paired``: seed 0, the first ``PAIRED`` cells;
2. ``fmnist-gt-s1-paired``: seed 1, the same cells (seed-to-seed noise);
3. ``fmnist-gt-s0-rest``: seed 0, the other cells.

A fourth, ``fmnist-gt-s0-heldout`` (seed 0), trains ``HELDOUT`` more cells
with the same schedule, none of them a network of the table's cells, into
their own table (``benchmarks/fmnist_nb201_heldout.csv``, the same columns):
cells no ranking choice was ever made on, to check a choice made on the
table (``benchmarks/fmnist_supernet_tau.py --ground-truth`` that file).

The cells (``benchmarks/fmnist_cells_paired.txt``, ``..._rest.txt``) are
chosen once with ``--select``: legal cells spread over the quantiles of their
NB201 CIFAR-10 validation accuracy (from ``$COLLM_NAS_NB201_TABLE``), plus a few
known-poor ones (pooling only, skips only), in a seeded random order so a
partial table is spread over the space too. The lists are committed; running
or resuming needs neither the NB201 table nor the network.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path("benchmarks")  # relative to ROOT: the runs store relative codes-file paths
PAIRED_FILE = BENCH / "fmnist_cells_paired.txt"
REST_FILE = BENCH / "fmnist_cells_rest.txt"
HELDOUT_FILE = BENCH / "fmnist_cells_heldout.txt"
CSV_FILE = BENCH / "fmnist_nb201_ground_truth.csv"
HELDOUT_CSV = BENCH / "fmnist_nb201_heldout.csv"
MD_FILE = BENCH / "fmnist_ground_truth.md"  # its figures block is rewritten by every export
RUNS_DIR = Path(os.environ.get("FMNIST_GT_RUNS_DIR", "runs/fmnist-gt"))

CELLS = 200  # cells in the table
PAIRED = 60  # of them trained with two seeds
HELDOUT = 60  # cells of the held-out table (one seed)
# Known-poor (and one strong) cells, always included: all pooling, all skips, one op on the 0->3 edge only,
# all 3x3 convolutions.
FIXED = ("444444", "111111", "000100", "000400", "000200", "040004", "333333", "222222")

# The schedule: one NB201 cell network (C=8, N=1) on 16x16 images, 10,000 training images (a fixed, seeded,
# stratified subset), 3 epochs of SGD (Nesterov, cosine, batch 128, lr 0.1, wd 5e-4), one CPU thread.
SCHEDULE = {
    "epochs": 3,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "image_size": 16,
    "train_size": 10000,
    "channels": 8,
    "cells": 1,
    "device": "cpu",
    "threads": 1,
}
RUNS = (  # run id, run seed, codes file
    ("fmnist-gt-s0-paired", 0, PAIRED_FILE),
    ("fmnist-gt-s1-paired", 1, PAIRED_FILE),
    ("fmnist-gt-s0-rest", 0, REST_FILE),
)
HELDOUT_RUN = ("fmnist-gt-s0-heldout", 0, HELDOUT_FILE)


def cli(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("collm-nas")
    cmd = [str(exe) if exe.exists() else "collm-nas", *args]
    out = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture)
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or '').strip()}")
    return out


def read_codes(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in (ROOT / path).read_text().splitlines()
            if line.split("#", 1)[0].strip()]


# ------------------------------------------------------------------ cell choice
def select(seed: int = 0) -> None:
    """Write the two cell lists: quantiles of NB201 CIFAR-10 validation accuracy plus FIXED, shuffled."""
    from collm_nas.core.settings import load_settings
    from collm_nas.evaluators.nb201_table import load_table
    from collm_nas.spaces.nb201 import NB201Space

    table_path = load_settings().nb201_table
    if not table_path:
        raise SystemExit("--select needs the NB201 table: set COLLM_NAS_NB201_TABLE")
    table = load_table(str(table_path))
    space = NB201Space()
    legal = [c for c in table.rows if not space.format_problems(c) and not list(space.structural_problems(c))]
    legal.sort(key=lambda c: (table.value(c, "cifar10_valid"), c))
    rng = random.Random(seed)
    chosen = list(dict.fromkeys(c for c in FIXED if c in set(legal)))
    want = CELLS - len(chosen)
    # one cell from each of `want` equal slices of the accuracy order (a seeded pick inside the slice)
    for i in range(want):
        lo, hi = (i * len(legal)) // want, ((i + 1) * len(legal)) // want
        pick = legal[rng.randrange(lo, max(lo + 1, hi))]
        if pick not in chosen:
            chosen.append(pick)
    rng.shuffle(chosen)
    head = ("# NB201 NCodes for the Fashion-MNIST ground truth (benchmarks/fmnist_ground_truth.py --select);\n"
            "# legal cells spread over the quantiles of NB201 cifar10_valid, plus known-poor ones; seeded order.\n")
    (ROOT / PAIRED_FILE).write_text(head + "# trained with seeds 0 and 1\n" + "\n".join(chosen[:PAIRED]) + "\n")
    (ROOT / REST_FILE).write_text(head + "# trained with seed 0\n" + "\n".join(chosen[PAIRED:]) + "\n")
    print(f"wrote {len(chosen[:PAIRED])} cells to {PAIRED_FILE} and {len(chosen[PAIRED:])} to {REST_FILE}")


def select_heldout(seed: int = 1) -> None:
    """Write the held-out list: HELDOUT legal cells spread over the quantiles of NB201 CIFAR-10 validation
    accuracy as the table's are, none of them a network of the table's cells (nor two of one network)."""
    from collm_nas.core.settings import load_settings
    from collm_nas.evaluators.nb201_table import load_table
    from collm_nas.spaces.nb201 import NB201Space

    table_path = load_settings().nb201_table
    if not table_path:
        raise SystemExit("--select-heldout needs the NB201 table: set COLLM_NAS_NB201_TABLE")
    table = load_table(str(table_path))
    space = NB201Space()
    taken = {space.network_key(c) for c in read_codes(PAIRED_FILE) + read_codes(REST_FILE)}
    legal = [c for c in table.rows if not space.format_problems(c) and not list(space.structural_problems(c))
             and space.network_key(c) not in taken]
    legal.sort(key=lambda c: (table.value(c, "cifar10_valid"), c))
    rng = random.Random(seed)
    chosen: list[str] = []
    for i in range(HELDOUT):
        lo, hi = (i * len(legal)) // HELDOUT, ((i + 1) * len(legal)) // HELDOUT
        for _ in range(50):  # a seeded pick inside the slice, a network not chosen yet
            pick = legal[rng.randrange(lo, max(lo + 1, hi))]
            if space.network_key(pick) not in taken:
                taken.add(space.network_key(pick))
                chosen.append(pick)
                break
    rng.shuffle(chosen)
    (ROOT / HELDOUT_FILE).write_text(
        "# NB201 NCodes held out of the Fashion-MNIST ground truth (benchmarks/fmnist_ground_truth.py "
        "--select-heldout);\n# legal cells spread over the quantiles of NB201 cifar10_valid, no network of "
        "the table's cells; seeded order.\n# trained with seed 0\n" + "\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} cells to {HELDOUT_FILE}")


# ----------------------------------------------------------------------- runs
def run_status(run_id: str) -> str | None:
    out = cli("runs", "--runs-dir", str(RUNS_DIR), "--json")
    for row in json.loads(out.stdout or "[]"):
        if row["run_id"] == run_id:
            return row["status"]
    return None


def run_all(runs=RUNS) -> None:
    for run_id, seed, codes in runs:
        status = run_status(run_id)
        if status == "finished":
            print(f"{run_id}: finished", flush=True)
            continue
        common = ["--no-progress"]
        if status is None:
            budget = len(read_codes(codes))
            args = ["search", "--runs-dir", str(RUNS_DIR), "--run-id", run_id, "--space", "nb201",
                    "--evaluator", "train", "--dataset", "fashion-mnist", "--strategy", f"codes:{codes}",
                    # Every listed cell is trained, also two codes of one network: a ground truth row each.
                    "--same-networks", "evaluate", "--budget", str(budget), "--seed", str(seed), "--backend", "process", "--workers", "1",
                    *(x for k, v in SCHEDULE.items() for x in ("--train-option", f"{k}={v}")), *common]
            print(f"{run_id}: starting ({budget} cells, seed {seed})", flush=True)
        else:
            args = ["resume", "--runs-dir", str(RUNS_DIR), run_id, *common]
            print(f"{run_id}: resuming ({status})", flush=True)
        started = time.time()
        cli(*args, capture=False)
        print(f"{run_id}: done in {time.time() - started:.0f}s", flush=True)


# --------------------------------------------------------------------- export
def trials(run_id: str) -> list[dict[str, str]]:
    out = cli("show", "--runs-dir", str(RUNS_DIR), run_id, "--format", "csv", check=False)
    if out.returncode != 0:
        return []
    return [row for row in csv.DictReader(io.StringIO(out.stdout)) if row.get("status") == "ok"]


def kendall_tau(a: list[float], b: list[float]) -> float:
    n, s = len(a), 0
    ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = a[i] - a[j], b[i] - b[j]
            if x == 0 and y == 0:
                continue
            if x == 0:
                ties_a += 1
            elif y == 0:
                ties_b += 1
            else:
                s += 1 if (x > 0) == (y > 0) else -1
    pairs = n * (n - 1) // 2
    denom = math.sqrt((pairs - ties_a) * (pairs - ties_b)) if pairs else 0.0
    return s / denom if denom else float("nan")


COLUMNS = ["arch", "fmnist_valid", "fmnist_test", "fmnist_train", "seeds", "fmnist_valid_seed0",
           "fmnist_valid_seed1", "fmnist_test_seed0", "fmnist_test_seed1", "params_mb_fmnist",
           "flops_m_fmnist", "train_s"]


def table_lines(by_seed: dict[int, dict[str, dict[str, str]]], order: list[str]) -> list[dict[str, str]]:
    """The CSV's rows for ``order``'s cells that have a result (the mean over the seeds trained)."""
    lines = []
    for code in order:
        rows = [by_seed[s][code] for s in (0, 1) if code in by_seed[s]]
        if not rows:
            continue
        mean = lambda key: statistics.fmean(float(r[key]) for r in rows)  # noqa: E731
        seed_val = lambda s, key: f"{float(by_seed[s][code][key]):.2f}" if code in by_seed[s] else ""  # noqa: E731
        lines.append({
            "arch": rows[0]["arch"], "fmnist_valid": f"{mean('valid_acc'):.3f}", "fmnist_test": f"{mean('test_acc'):.3f}",
            "fmnist_train": f"{mean('train_acc'):.3f}", "seeds": str(len(rows)),
            "fmnist_valid_seed0": seed_val(0, "valid_acc"), "fmnist_valid_seed1": seed_val(1, "valid_acc"),
            "fmnist_test_seed0": seed_val(0, "test_acc"), "fmnist_test_seed1": seed_val(1, "test_acc"),
            "params_mb_fmnist": f"{float(rows[0]['params_mb']):.6f}", "flops_m_fmnist": f"{float(rows[0]['flops_m']):.4f}",
            "train_s": f"{mean('train_s'):.1f}", "ncode": code,
        })
    return lines


def write_csv(path: Path, lines: list[dict[str, str]]) -> None:
    with open(ROOT / path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(lines)


def export_heldout() -> None:
    """Write the held-out table from its run, when it holds anything."""
    run_id, seed, codes = HELDOUT_RUN
    by_seed: dict[int, dict[str, dict[str, str]]] = {0: {}, 1: {}}
    for row in trials(run_id):
        by_seed[seed][row["ncode"]] = row
    lines = table_lines(by_seed, read_codes(codes)) if (ROOT / codes).is_file() else []
    if lines:
        write_csv(HELDOUT_CSV, lines)
        print(f"wrote {HELDOUT_CSV}: {len(lines)} cells of {len(read_codes(codes))}", flush=True)


def export() -> dict[str, float]:
    """Write the CSV from the runs' successful trials; return summary figures."""
    by_seed: dict[int, dict[str, dict[str, str]]] = {0: {}, 1: {}}
    for run_id, seed, _ in RUNS:
        for row in trials(run_id):
            by_seed[seed][row["ncode"]] = row
    order = read_codes(PAIRED_FILE) + read_codes(REST_FILE)
    lines = table_lines(by_seed, order)
    write_csv(CSV_FILE, lines)
    paired = [c for c in order if c in by_seed[0] and c in by_seed[1]]
    v0 = [float(by_seed[0][c]["valid_acc"]) for c in paired]
    v1 = [float(by_seed[1][c]["valid_acc"]) for c in paired]
    valid = [float(r["fmnist_valid"]) for r in lines]
    figures = {
        "cells": len(lines), "paired": len(paired),
        "valid_min": min(valid, default=float("nan")), "valid_max": max(valid, default=float("nan")),
        "valid_median": statistics.median(valid) if valid else float("nan"),
        "valid_sd": statistics.pstdev(valid) if len(valid) > 1 else float("nan"),
        "mean_abs_delta": statistics.fmean(abs(a - b) for a, b in zip(v0, v1)) if paired else float("nan"),
        "tau_seeds": kendall_tau(v0, v1) if len(paired) > 1 else float("nan"),
        "train_s_mean": statistics.fmean(float(r["train_s"]) for r in lines) if lines else float("nan"),
    }
    print(f"wrote {CSV_FILE}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in figures.items()), flush=True)
    write_figures(figures, lines, by_seed, paired)
    return figures


def write_figures(figures: dict[str, float], lines: list[dict[str, str]], by_seed, paired: list[str]) -> None:
    """Rewrite the block between the figures markers of MD_FILE (the rest of the file is hand-written)."""
    md = ROOT / MD_FILE
    if not md.is_file():
        return
    text = md.read_text()
    start, end = "<!-- figures -->", "<!-- /figures -->"
    if start not in text or end not in text:
        return
    valid = sorted(float(r["fmnist_valid"]) for r in lines)
    q = lambda p: valid[min(len(valid) - 1, int(p * (len(valid) - 1) + 0.5))] if valid else float("nan")  # noqa: E731
    by_arch = {r["ncode"]: float(r["fmnist_valid"]) for r in lines}
    best = max(by_arch, key=by_arch.get) if by_arch else "-"
    worst = min(by_arch, key=by_arch.get) if by_arch else "-"
    deltas = sorted(abs(float(by_seed[0][c]["valid_acc"]) - float(by_seed[1][c]["valid_acc"])) for c in paired)
    wall = [float(by_seed[s][c]["train_s"]) for s in (0, 1) for c in by_seed[s]]
    body = "\n".join([
        f"Cells in the table: **{figures['cells']}** of {CELLS} planned; with two seeds: **{figures['paired']}** "
        f"of {PAIRED} planned (exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| fmnist_valid: min / 10% / median / 90% / max | {q(0):.2f} / {q(0.1):.2f} / {q(0.5):.2f} / "
        f"{q(0.9):.2f} / {q(1):.2f} % |",
        f"| fmnist_valid: standard deviation over cells | {figures['valid_sd']:.2f} points |",
        f"| best cell | `{best}` {by_arch.get(best, float('nan')):.2f} % |",
        f"| worst cell | `{worst}` {by_arch.get(worst, float('nan')):.2f} % |",
        f"| seed 0 vs seed 1 (fmnist_valid): mean abs difference | {figures['mean_abs_delta']:.2f} points "
        f"(median {statistics.median(deltas) if deltas else float('nan'):.2f}, max "
        f"{max(deltas, default=float('nan')):.2f}) |",
        f"| seed 0 vs seed 1: Kendall tau over the paired cells | {figures['tau_seeds']:.3f} |",
        f"| training time per network (train_s, one niced thread) | mean {statistics.fmean(wall) if wall else float('nan'):.1f} s, "
        f"min {min(wall, default=float('nan')):.1f} s, max {max(wall, default=float('nan')):.1f} s |",
    ])
    head, rest = text.split(start, 1)
    md.write_text(head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--select", action="store_true", help="(re)write the cell lists from the NB201 table and stop")
    p.add_argument("--select-heldout", action="store_true",
                   help="write the held-out cell list from the NB201 table and stop")
    p.add_argument("--heldout", action="store_true",
                   help="train (or resume) the held-out cells and export their table only")
    p.add_argument("--export", action="store_true", help="only export the CSV from what the runs hold")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    if args.select:
        select()
        return
    if args.select_heldout:
        select_heldout()
        return
    if args.heldout:
        if not args.export:
            run_all((HELDOUT_RUN,))
        export_heldout()
        return
    if not args.export:
        run_all()
    export()


if __name__ == "__main__":
    main()
