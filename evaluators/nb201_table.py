"""NAS-Bench-201 looked up in its results table (a simulator backend).

Reads ``nb201.csv.gz`` (one row per architecture, see shared/data/README.md)
and answers evaluations from it instantly, like Syne Tune's tabular
blackbox backends.

It also reads the project's own ground-truth tables of a subset of the
cells, such as ``benchmarks/fmnist_nb201_ground_truth.csv`` (Fashion-MNIST,
``--dataset fashion-mnist``): a table without the NB201 accuracy columns may
hold any number of rows. With such a partial table the cells it lacks are
*illegal* for the run (:meth:`NB201TableEvaluator.problem`, which the validity
checker asks), so every strategy proposes only cells of the table, LLM
Generators are told why a code was refused, and evaluating an unknown cell
anyway fails that trial with a one-line reason.
"""

from __future__ import annotations

import csv
import gzip
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from collm_nas.core.errors import UserError
from collm_nas.core import Evaluator, Trial
from collm_nas.spaces.nb201 import NB201Space

ACCURACY_COLUMNS = (
    "cifar10_valid",
    "cifar10_valid_test",
    "cifar10_valid_train",
    "cifar10_test",
    "cifar100_test",
    "imagenet16_test",
)
TABLE_SIZE = 15625
RESOURCE_PREFIXES = ("params_mb_", "flops_m_", "lat_ms_")


@dataclass(frozen=True)
class DatasetSpec:
    searched: str
    reported: str
    resource_suffix: str
    note: str


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10_valid",
        "cifar10_test",
        "cifar10",
        "searched on CIFAR-10 validation accuracy (cifar10_valid); reported as CIFAR-10 test accuracy (cifar10_test)",
    ),
    "cifar100": DatasetSpec(
        "cifar100_test",
        "cifar100_test",
        "cifar100",
        "the table has no CIFAR-100 validation accuracy: searched and reported on CIFAR-100 test accuracy (cifar100_test)",
    ),
    "imagenet16": DatasetSpec(
        "imagenet16_test",
        "imagenet16_test",
        "imagenet16",
        "the table has no ImageNet16-120 validation accuracy: searched and reported on ImageNet16-120 test accuracy (imagenet16_test)",
    ),
    # The project's own table (benchmarks/fmnist_ground_truth.py): NB201 cells (C=8, N=1) trained on Fashion-MNIST.
    "fashion-mnist": DatasetSpec(
        "fmnist_valid",
        "fmnist_test",
        "fmnist",
        "searched on Fashion-MNIST validation accuracy (fmnist_valid); reported as Fashion-MNIST test accuracy "
        "(fmnist_test), from the project's ground-truth table of a subset of the cells",
    ),
}
# Tables other than NAS-Bench-201's own: recognised by their searched and reported columns.
PARTIAL_DATASETS = ("fashion-mnist",)


@dataclass(frozen=True)
class NB201Table:
    """All rows of the table, keyed by NCode."""

    path: str
    columns: tuple[str, ...]
    rows: dict[str, tuple[float, ...]]
    arch_strings: dict[str, str]
    complete: bool = True  # every cell of the space (NAS-Bench-201's own table); else a subset

    @property
    def accuracy_columns(self) -> tuple[str, ...]:
        """The numeric columns that are not resources (parameters, FLOPs, latencies)."""
        found = [c for c in self.columns if not c.startswith(RESOURCE_PREFIXES)]
        # NAS-Bench-201's own columns first, in their usual order (messages list them), then the table's others.
        return (*(c for c in ACCURACY_COLUMNS if c in found), *(c for c in found if c not in ACCURACY_COLUMNS))

    def datasets(self) -> tuple[str, ...]:
        """The ``--dataset`` names whose searched and reported columns the table holds."""
        return tuple(d for d, spec in DATASETS.items() if spec.searched in self.columns and spec.reported in self.columns)

    def column(self, name: str) -> int:
        return self.columns.index(name)

    def value(self, ncode: str, name: str) -> float:
        return self.rows[ncode][self.column(name)]

    def best(self, metric: str, ncodes=None, mode: str = "max") -> tuple[str, float]:
        """The best code by ``metric`` among ``ncodes`` (default: all rows)."""
        j = self.column(metric)
        pool = self.rows if ncodes is None else ncodes
        pick = max if mode == "max" else min
        code = pick(pool, key=lambda c: self.rows[c][j])
        return code, self.rows[code][j]


@lru_cache(maxsize=4)
def load_table(path: str) -> NB201Table:
    """Read and check the table; any problem is a one-line :class:`UserError`."""
    p = Path(path).expanduser()
    fix = "set --table or COLLM_NAS_NB201_TABLE to the path of nb201.csv.gz"
    if not p.is_file():
        raise UserError(f"NAS-Bench-201 table '{p}' not found; {fix}")
    space = NB201Space()
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or "arch" not in header:
                raise ValueError("no header with an 'arch' column")
            partial = [d for d in PARTIAL_DATASETS
                       if DATASETS[d].searched in header and DATASETS[d].reported in header]
            # NAS-Bench-201's own table has all its accuracy columns; a partial table one of PARTIAL_DATASETS'
            complete = not partial or any(c in header for c in ACCURACY_COLUMNS)
            missing = [c for c in ACCURACY_COLUMNS if c not in header]
            if complete and missing:
                raise ValueError(f"missing column(s) {', '.join(missing)}")
            arch_at = header.index("arch")
            numeric = tuple(c for c in header if c not in ("arch", "index"))
            at = [header.index(c) for c in numeric]
            rows: dict[str, tuple[float, ...]] = {}
            arch_strings: dict[str, str] = {}
            for lineno, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ValueError(f"line {lineno} has {len(row)} fields, the header {len(header)}")
                try:
                    code = space.parse_arch(row[arch_at])
                except UserError as e:
                    raise ValueError(f"line {lineno}: {e}") from None
                if code in rows:
                    raise ValueError(f"line {lineno} repeats architecture {row[arch_at]}")
                rows[code] = tuple(float(row[i]) if row[i] != "" else float("nan") for i in at)
                arch_strings[code] = row[arch_at]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, ValueError) as e:
        raise UserError(f"NAS-Bench-201 table '{p}' is malformed ({e}); {fix}") from None
    if complete and len(rows) != TABLE_SIZE:
        raise UserError(
            f"NAS-Bench-201 table '{p}' is malformed ({len(rows)} distinct architectures, expected {TABLE_SIZE}); {fix}"
        )
    if not rows:
        raise UserError(f"NAS-Bench-201 table '{p}' is malformed (no architectures); {fix}")
    return NB201Table(str(p), numeric, rows, arch_strings, complete=complete)


class NB201TableEvaluator(Evaluator):
    """Evaluates NAS-Bench-201 cells by looking them up in the results table."""

    name = "table"
    deterministic = True

    def __init__(self, table_path: str | Path, dataset: str = "cifar10", metric: str | None = None,
                 mode: str = "max") -> None:
        if dataset not in DATASETS:
            raise UserError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
        spec = DATASETS[dataset]
        self.dataset = dataset
        self.space = NB201Space()
        self.table = load_table(str(Path(table_path).expanduser().resolve()))
        if dataset not in self.table.datasets():
            raise UserError(f"table '{self.table.path}' has no {dataset} columns ({spec.searched}, {spec.reported}); "
                            f"use --dataset {' or '.join(self.table.datasets())} with it")
        self._accuracy_columns = self.table.accuracy_columns
        self.searched_metric = metric or spec.searched
        self.mode = "min" if mode == "min" and metric else "max"  # (the accuracies are maximised)
        self.reported_metric = spec.reported
        if metric and metric != spec.searched:
            self.metric_note = (
                f"searched on {self.searched_metric} (chosen with --metric); reported as {self.reported_metric}"
            )
        else:
            self.metric_note = spec.note
        self._resource_columns = {
            **{k: f"{k}_{spec.resource_suffix}" for k in ("params_mb", "flops_m")
               if f"{k}_{spec.resource_suffix}" in self.table.columns},
            **{c: c for c in self.table.columns if c.startswith("lat_ms_")},
        }
        self._resource_idx = {k: self.table.column(c) for k, c in self._resource_columns.items()}
        if metric is not None and metric not in self.metric_names:
            raise UserError(f"unknown metric '{metric}'; choose one of {', '.join(self.metric_names)}")
        self._set_metrics((self.searched_metric, self.reported_metric))

    def _set_metrics(self, names: Sequence[str]) -> None:
        """What every trial carries: these metrics (accuracy columns or resources), then parameters and FLOPs."""
        names = tuple(dict.fromkeys(names))
        self._metric_columns = tuple(n for n in names if n in self._accuracy_columns)
        self._metric_idx = [self.table.column(c) for c in self._metric_columns]
        self._returned_resources = tuple(dict.fromkeys(
            (*(n for n in names if n in self._resource_columns),
             *(n for n in ("params_mb", "flops_m") if n in self._resource_columns))))

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The accuracy columns, parameters, FLOPs and the measured latency on every device of the table."""
        return (*self._accuracy_columns, *self._resource_columns)

    def want_metrics(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.metric_names]
        if unknown:
            raise UserError(f"the table has no metric {unknown[0]}; it has {', '.join(self.metric_names)}")
        self._set_metrics((*self._metric_columns, *self._returned_resources, *names))

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(self._resource_columns)

    @property
    def reference_columns(self) -> tuple[str, ...]:
        """Every numeric column of the table (other datasets' accuracies, resources)."""
        return self.table.columns

    def reference_values(self, column: str) -> dict[str, float]:
        j = self.table.column(column)
        return {code: row[j] for code, row in self.table.rows.items()}

    def resources(self, ncode: str) -> dict[str, float]:
        row = self.table.rows.get(ncode)
        if row is None:
            return {}
        return {k: row[j] for k, j in self._resource_idx.items()}

    def problem(self, ncode: str) -> str | None:
        """Why this table cannot evaluate ``ncode`` (None: it can); only a partial table lacks cells."""
        if self.table.complete or ncode in self.table.rows:
            return None
        return (f"not in the table {Path(self.table.path).name} ({len(self.table.rows)} of the {TABLE_SIZE} cells); "
                "propose one of its cells")

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        out = []
        for code in ncodes:
            start = time.perf_counter()
            row = self.table.rows.get(code)
            if row is None:
                out.append(Trial(code, code, status="failed",
                                 error=f"architecture not in the table {Path(self.table.path).name}"))
                continue
            metrics = {c: row[j] for c, j in zip(self._metric_columns, self._metric_idx)}
            for name in self._returned_resources:
                metrics[name] = row[self._resource_idx[name]]
            out.append(
                Trial(
                    ncode=code,
                    arch=self.table.arch_strings[code],
                    metrics=metrics,
                    cost={"lookup_s": time.perf_counter() - start},
                )
            )
        return out
