"""NAS-Bench-201 looked up in its results table (a simulator backend).

Reads ``nb201.csv.gz`` (one row per architecture, see shared/data/README.md)
and answers evaluations from it instantly, like Syne Tune's tabular
blackbox backends.
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
}


@dataclass(frozen=True)
class NB201Table:
    """All rows of the table, keyed by NCode."""

    path: str
    columns: tuple[str, ...]
    rows: dict[str, tuple[float, ...]]
    arch_strings: dict[str, str]

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
            missing = [c for c in ACCURACY_COLUMNS if c not in header]
            if missing:
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
    if len(rows) != TABLE_SIZE:
        raise UserError(
            f"NAS-Bench-201 table '{p}' is malformed ({len(rows)} distinct architectures, expected {TABLE_SIZE}); {fix}"
        )
    return NB201Table(str(p), numeric, rows, arch_strings)


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
            "params_mb": f"params_mb_{spec.resource_suffix}",
            "flops_m": f"flops_m_{spec.resource_suffix}",
            **{c: c for c in self.table.columns if c.startswith("lat_ms_")},
        }
        self._resource_idx = {k: self.table.column(c) for k, c in self._resource_columns.items()}
        if metric is not None and metric not in self.metric_names:
            raise UserError(f"unknown metric '{metric}'; choose one of {', '.join(self.metric_names)}")
        self._set_metrics((self.searched_metric, self.reported_metric))

    def _set_metrics(self, names: Sequence[str]) -> None:
        """What every trial carries: these metrics (accuracy columns or resources), then parameters and FLOPs."""
        names = tuple(dict.fromkeys(names))
        self._metric_columns = tuple(n for n in names if n in ACCURACY_COLUMNS)
        self._metric_idx = [self.table.column(c) for c in self._metric_columns]
        self._returned_resources = tuple(dict.fromkeys(
            (*(n for n in names if n in self._resource_columns), "params_mb", "flops_m")))

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The accuracy columns, parameters, FLOPs and the measured latency on every device of the table."""
        return (*ACCURACY_COLUMNS, *self._resource_columns)

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

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        out = []
        for code in ncodes:
            start = time.perf_counter()
            row = self.table.rows.get(code)
            if row is None:
                out.append(Trial(code, code, status="failed", error="architecture not in the table"))
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
