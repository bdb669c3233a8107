"""Two-stage evaluation with a weight-sharing supernet (``--evaluator supernet``), as CoLLM-NAS does it.

Stage one trains one NAS-Bench-201 *supernet* — the cell network in which
every edge holds all five operations — with single-path one-shot training
(SPOS, Guo et al. 2020): each step samples one legal architecture uniformly
(one operation per edge, the same cell in every position, as in the
benchmark) and trains only that path on the minibatch. Stage two evaluates a
candidate without training it: its stand-alone :class:`NB201Network` is
built and *inherits* the supernet's weights (stem, reduction blocks, head,
classifier, and on every edge the weights of the chosen operation), its
BatchNorm statistics are recalibrated on a few training batches (the
supernet's running statistics mix every path, so they fit none), and its
validation accuracy is measured.

The supernet is trained once per (data set, training settings, seed) and kept
in a cache file (by default ``RUNS_DIR/supernets/``; the ``cache_dir`` option
names another folder), so every trial of a search, a resumed search and
other searches with the same settings reuse it. Training it is the cost of
the first evaluation that needs it: that trial's cost holds
``supernet_train_s``. Processes that need the same supernet at once (the
process backend's workers) wait on a file lock while one of them trains it.

Training and evaluation use the trainer's device and seed handling: CUDA when
present, with the data on the GPU, bf16 autocast and channels-last layout;
on the CPU everything is seeded and deterministic.

    from collm_nas.evaluators.supernet import SupernetConfig, SupernetEvaluator
    ev = SupernetEvaluator(SPACES.resolve("nb201"), "digits", options={"epochs": 30})
    ev.evaluate(["333132", "101300"])   # the first call trains (or loads) the supernet
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import nn

from collm_nas.core.errors import UserError
from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.datasets import (
    ImageDataEvaluator,
    ImageDataset,
    dataset_label,
)
from collm_nas.evaluators.proxies import ProxyConfig, _config_from_options, proxy_scores
from collm_nas.evaluators.supernet_blend import (
    BLENDS,
    BlendReference,
    blend_score,
    load_or_measure_reference,
    reference_codes,
    reference_path,
)
from collm_nas.evaluators.trainer import TrainingFailed, _accuracy, _training_context, resolve_device, run_sgd
from collm_nas.models import NB201Network, count_flops, count_parameters, measure_latency
from collm_nas.models.nb201_supernet import FewShotSupernet, NB201Supernet, inherit
from collm_nas.core.settings import load_settings
from collm_nas.spaces.nb201 import EDGES, OPERATIONS, NB201Space, cell_function, reaches_output

__all__ = [
    "SAMPLINGS",
    "SUPERNET_METRICS",
    "FewShotSupernet",
    "NB201Supernet",
    "PathSampler",
    "SupernetConfig",
    "SupernetEvaluator",
    "SupernetInfo",
    "calibration_batches",
    "evaluate_inherited",
    "inherit",
    "load_or_train_supernet",
    "recalibrate_bn",
    "sample_path",
    "supernet_cache_path",
    "train_supernet",
]

SUPERNET_METRICS = ("valid_acc", "test_acc", "params", "flops", "latency_ms", "naswot", "blend")
_FORMAT = 1  # bump when the file layout or the training procedure changes: old caches are not reused
# The settings that define a trained supernet (with the data set): its cache key.
_TRAINING_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "augment", "image_size",
                    "channels", "cells", "train_size", "sampling", "split_edge", "split_epochs")
# How a training step picks its path: every legal code equally likely, or every distinct network.
SAMPLINGS = ("codes", "networks")


@dataclass(frozen=True)
class SupernetConfig:
    """How the supernet is trained and candidates are evaluated with its weights.

    The defaults train a supernet of the trainer's default network (C=8, N=1)
    on 16x16 digits for 30 epochs, 15-60 s on a shared two-core machine; each
    candidate then costs about 0.2 s.

    ``sampling`` picks each step's path: ``codes`` draws every legal NCode with
    equal chance (SPOS), ``networks`` every distinct network (the NB201 space
    writes one network with up to dozens of codes, so uniform codes train the
    simplest networks' weights most; Ning et al. 2021 call the fix
    de-isomorphic sampling). ``split_edge`` (0-5) makes a few-shot supernet
    (Zhao et al. 2021): after ``epochs`` of one-shot training, five copies, one
    per operation on that edge, each train ``split_epochs`` more on the paths
    with their operation there. ``calib_batches`` 0 keeps the supernet's own
    BatchNorm statistics instead of recalibrating them per candidate.
    ``blend`` ``naswot`` also scores each candidate's untrained network with
    NASWOT and searches ``blend``, the mean of the two scores standardised on
    ``blend_reference`` seeded reference cells
    (:mod:`collm_nas.evaluators.supernet_blend`).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0  # weights, path sampling, shuffling and the calibration batches
    device: str = "auto"
    threads: int = 0  # 0: OMP_NUM_THREADS, else half the cores
    augment: str = "auto"  # auto (the data set's default), yes, no
    image_size: int = 0  # 0: the data set's
    channels: int = 8
    cells: int = 1
    train_size: int = 0  # train on a seeded, stratified subset of this many training images; 0: all of them
    sampling: str = "codes"  # codes (SPOS: every legal code equally likely) or networks (every distinct network)
    split_edge: int = -1  # -1: one-shot; 0-5: a few-shot supernet split on this edge (one part per operation)
    split_epochs: int = 0  # epochs each few-shot part trains after the split
    calib_batches: int = 8  # training batches that recalibrate BatchNorm for each candidate; 0: keep the supernet's
    calib_batch_size: int = 64
    eval_batch_size: int = 1024
    eval_test: bool = True  # also score the test split (False halves an evaluation where only validation ranks)
    latency_repeats: int = 5  # 0: do not time the inherited network
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA
    check_every: int = 25  # steps between NaN checks on CUDA (every step on the CPU)
    cache_dir: str = ""  # '': RUNS_DIR/supernets
    blend: str = "none"  # none, or naswot: search the mean of the standardised accuracy and NASWOT score
    blend_reference: int = 32  # reference cells that standardise the two scores of the blend
    proxy_batch_size: int = 64  # training images NASWOT sees (blend naswot)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "channels", "cells", "calib_batch_size", "eval_batch_size",
                     "check_every"):
            if getattr(self, name) < 1:
                raise UserError(f"supernet option {name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "momentum", "weight_decay", "threads", "image_size", "latency_repeats", "train_size",
                     "calib_batches", "split_epochs"):
            if not getattr(self, name) >= 0:
                raise UserError(f"supernet option {name} must not be negative, got {getattr(self, name)}")
        if self.seed < 0:
            raise UserError(f"supernet option seed must be a seed >= 0, got {self.seed}")
        if self.augment not in ("auto", "yes", "no"):
            raise UserError(f"supernet option augment must be auto, yes or no, got '{self.augment}'")
        if self.image_size and self.image_size < 4:
            raise UserError(f"supernet option image_size must be at least 4 pixels, got {self.image_size}")
        if self.sampling not in SAMPLINGS:
            raise UserError(f"supernet option sampling must be {' or '.join(SAMPLINGS)}, got '{self.sampling}'")
        if not -1 <= self.split_edge < len(EDGES):
            raise UserError(f"supernet option split_edge must be -1 (one-shot) or an edge 0-{len(EDGES) - 1}, "
                            f"got {self.split_edge}")
        if self.blend not in BLENDS:
            raise UserError(f"supernet option blend must be {' or '.join(BLENDS)}, got '{self.blend}'")
        if self.blend_reference < 2:
            raise UserError(f"supernet option blend_reference must be at least 2 cells, got {self.blend_reference}")
        if self.proxy_batch_size < 2:
            raise UserError("supernet option proxy_batch_size must be at least 2 (NASWOT compares images)")
        if (self.split_edge >= 0) != (self.split_epochs > 0):
            raise UserError("a few-shot supernet needs both split_edge (0-5) and split_epochs (at least 1); "
                            "set both, or neither for a one-shot supernet")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> SupernetConfig:
        return _config_from_options(cls, options, "supernet")

    def training_settings(self) -> dict[str, Any]:
        """The settings that define the trained weights (part of the cache key)."""
        return {name: getattr(self, name) for name in _TRAINING_FIELDS}


# ------------------------------------------------------------------- the model
def sample_path(rng: random.Random) -> str:
    """A uniformly random legal NCode (one operation per edge; degenerate cells drawn again)."""
    while True:
        code = "".join(str(rng.randrange(len(OPERATIONS))) for _ in EDGES)
        if reaches_output(code):
            return code


@lru_cache(maxsize=8)
def _networks(fixed: tuple[int, int] | None) -> tuple[tuple[str, ...], ...]:
    """The legal codes grouped by the network they write (optionally only those with one operation on one edge)."""
    groups: dict[str, list[str]] = {}
    for digits in product("01234", repeat=len(EDGES)):
        code = "".join(digits)
        if reaches_output(code) and (fixed is None or code[fixed[0]] == str(fixed[1])):
            groups.setdefault(cell_function(code), []).append(code)
    return tuple(tuple(codes) for _, codes in sorted(groups.items()))


class PathSampler:
    """Draws the path each supernet training step trains (seeded by ``rng``).

    ``sampling="codes"``: a uniformly random legal NCode (:func:`sample_path`);
    ``"networks"``: a uniformly random distinct network, then one of its codes.
    ``fixed=(edge, op)`` draws only paths with operation ``op`` on ``edge`` (a
    few-shot part's paths).
    """

    def __init__(self, rng: random.Random, sampling: str = "codes", fixed: tuple[int, int] | None = None) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling '{sampling}'")
        self.rng, self.sampling, self.fixed = rng, sampling, fixed
        self._groups = _networks(fixed) if sampling == "networks" else None

    def __call__(self) -> str:
        if self._groups is not None:
            return self.rng.choice(self.rng.choice(self._groups))
        if self.fixed is None:
            return sample_path(self.rng)
        edge, op = self.fixed
        while True:
            digits = [str(self.rng.randrange(len(OPERATIONS))) for _ in EDGES]
            digits[edge] = str(op)
            code = "".join(digits)
            if reaches_output(code):
                return code


def recalibrate_bn(model: nn.Module, batches: Sequence[torch.Tensor], *, autocast=None,
                   channels_last: bool = False) -> None:
    """Replace every BatchNorm's running statistics by the exact mean and variance over ``batches``.

    Statistics are reset and accumulated as a cumulative average (momentum None)
    in training mode without gradients; the model is left in evaluation mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad(), autocast or nullcontext():
            for xb in batches:
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                model(xb)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


def calibration_batches(data: ImageDataset, config: SupernetConfig) -> list[torch.Tensor]:
    """The fixed training batches every candidate recalibrates on (seeded; the same for all)."""
    n = len(data.train_y)
    size = min(config.calib_batch_size, n)
    generator = torch.Generator().manual_seed(config.seed + 1)
    perm = torch.randperm(n, generator=generator).to(data.device)
    count = min(config.calib_batches, max(1, n // size))
    return [data.train_x.index_select(0, perm[i * size:(i + 1) * size]) for i in range(count)]


# -------------------------------------------------------------------- training
@dataclass
class SupernetInfo:
    """How a supernet came to be: trained now, or loaded from its cache file."""

    path: str | None
    trained: bool
    train_s: float = 0.0  # seconds of training (when trained, now or when the cache file was made)
    load_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def _autocast(device: torch.device, config: SupernetConfig):
    return (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" and config.amp
            else nullcontext())


def train_supernet(data: ImageDataset, config: SupernetConfig = SupernetConfig(), *,
                   device: torch.device | None = None) -> tuple[NB201Supernet | FewShotSupernet, dict[str, Any]]:
    """SPOS training: every step one sampled legal path (``config.sampling``) on one minibatch.

    SGD with Nesterov momentum, cosine learning rate per step, weight decay;
    random crops and flips where the data set asks for them. With
    ``split_edge`` the one-shot supernet is then split into a
    :class:`FewShotSupernet` whose five parts start from its weights and train
    ``split_epochs`` each on their own paths (a fresh cosine schedule). Returns
    the supernet and its training figures. Raises a UserError when the loss
    becomes NaN or infinite.
    """
    device = device or resolve_device(config.device)
    cuda = device.type == "cuda"
    channels_last = cuda and config.channels_last
    shape = _shape(data, config)
    with _training_context(config, device, config.seed):
        model = NB201Supernet(**shape).to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        data = data.to(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        sgd = _train_paths(model, PathSampler(random.Random(config.seed), config.sampling), data, config,
                           config.epochs, config.seed, device)
        figures: dict[str, Any] = {"steps": sgd.steps, "final_train_loss": sgd.last_epoch_loss,
                                   "final_train_acc": sgd.last_epoch_acc}
        result: NB201Supernet | FewShotSupernet = model
        if config.split_edge >= 0:
            figures["one_shot_train_s"] = time.perf_counter() - started
            few = FewShotSupernet(edge=config.split_edge, **shape).to(device)
            parts = []
            for op, part in enumerate(few.parts):
                part.load_state_dict(model.state_dict())
                if channels_last:
                    part.to(memory_format=torch.channels_last)
                seed = config.seed + 1 + op
                part_sgd = _train_paths(part, PathSampler(random.Random(seed), config.sampling,
                                                          (config.split_edge, op)),
                                        data, config, config.split_epochs, seed, device)
                figures["steps"] += part_sgd.steps
                parts.append({"operation": OPERATIONS[op], "final_train_loss": part_sgd.last_epoch_loss,
                              "final_train_acc": part_sgd.last_epoch_acc})
            figures["parts"] = parts
            figures["final_train_loss"] = sum(p["final_train_loss"] for p in parts) / len(parts)
            figures["final_train_acc"] = sum(p["final_train_acc"] for p in parts) / len(parts)
            result = few
        if cuda:
            torch.cuda.synchronize(device)
        figures.update({"train_s": time.perf_counter() - started, "train_cpu_s": time.process_time() - cpu_started,
                        "device": str(device)})
    result.eval()
    return result, figures


def _train_paths(model: NB201Supernet, sampler: PathSampler, data: ImageDataset, config: SupernetConfig,
                 epochs: int, seed: int, device: torch.device) -> Any:
    """``epochs`` of SGD on ``model``, each step on the path ``sampler`` draws (the trainer's loop)."""
    cuda = device.type == "cuda"
    augment = data.augment if config.augment == "auto" else config.augment == "yes"

    def check(epoch: int, i: int, epoch_loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(epoch_loss)):
            raise UserError(f"supernet training diverged: the loss became NaN or infinite at epoch "
                            f"{epoch + 1} (lr {config.lr:g}); lower the supernet option lr")

    model.train()
    return run_sgd(model, lambda xb: model(xb, sampler()), data, dataclasses.replace(config, epochs=epochs),
                   generator=torch.Generator(device=device).manual_seed(seed), augment=augment,
                   pad=max(1, data.input_shape[-1] // 8), channels_last=cuda and config.channels_last,
                   autocast=_autocast(device, config), check_every=config.check_every if cuda else 1, check=check)


def supernet_cache_path(dataset: str, config: SupernetConfig, cache_dir: str | Path | None = None) -> Path:
    """The cache file of the supernet of ``dataset`` trained with ``config``'s settings."""
    folder = Path(cache_dir or config.cache_dir or load_settings().runs_dir / "supernets").expanduser()
    key = json.dumps({"format": _FORMAT, "dataset": dataset, **config.training_settings()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    label = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset_label(dataset))[:40]
    return folder / f"nb201-supernet-{label}-c{config.channels}n{config.cells}-{digest}.pt"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _shape(data: ImageDataset, config: SupernetConfig) -> dict[str, int]:
    """The constructor arguments of the supernet of ``config`` for ``data``."""
    return {"channels": config.channels, "cells_per_stage": config.cells, "num_classes": data.num_classes,
            "in_channels": data.channels}


def _empty_supernet(data: ImageDataset, config: SupernetConfig) -> NB201Supernet | FewShotSupernet:
    shape = _shape(data, config)
    return FewShotSupernet(edge=config.split_edge, **shape) if config.split_edge >= 0 else NB201Supernet(**shape)


def _load(path: Path, data: ImageDataset, config: SupernetConfig,
          device: torch.device) -> NB201Supernet | FewShotSupernet | None:
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        model = _empty_supernet(data, config).to(device)
        model.load_state_dict(saved["state_dict"], strict=True)
    except Exception:  # a damaged or foreign file is trained over, not trusted
        return None
    model.eval()
    model.meta = dict(saved.get("meta", {}))  # type: ignore[assignment]
    return model


def load_or_train_supernet(dataset: str, data: ImageDataset, config: SupernetConfig = SupernetConfig(), *,
                           cache_dir: str | Path | None = None, device: torch.device | None = None,
                           use_cache: bool = True) -> tuple[NB201Supernet | FewShotSupernet, SupernetInfo]:
    """The supernet from its cache file, else trained now and saved there (one process trains at a time)."""
    device = device or resolve_device(config.device)
    if not use_cache:
        model, figures = train_supernet(data, config, device=device)
        return model, SupernetInfo(None, True, train_s=figures["train_s"], meta=figures)
    path = supernet_cache_path(dataset, config, cache_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the supernet cache folder '{path.parent}' ({e.strerror}); "
                        "set the supernet option cache_dir to a writable folder") from None
    with _file_lock(path.with_name(path.name + ".lock")):
        start = time.perf_counter()
        if path.is_file():
            model = _load(path, data, config, device)
            if model is not None:
                return model, SupernetInfo(str(path), False, train_s=float(model.meta.get("train_s", 0.0)),
                                           load_s=time.perf_counter() - start, meta=model.meta)
        model, figures = train_supernet(data, config, device=device)
        meta = {**figures, "dataset": dataset, "settings": config.training_settings(), "format": _FORMAT,
                "created": time.time()}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}, tmp)
        os.replace(tmp, path)
        model.meta = meta  # type: ignore[assignment]
        return model, SupernetInfo(str(path), True, train_s=figures["train_s"], meta=meta)


# ------------------------------------------------------------------ evaluation
def evaluate_inherited(supernet: NB201Supernet | FewShotSupernet, code: str, data: ImageDataset,
                       config: SupernetConfig = SupernetConfig(), *, device: torch.device | None = None,
                       calibration: Sequence[torch.Tensor] | None = None) -> dict[str, float]:
    """Validation (and test) accuracy of ``code`` with inherited weights and recalibrated BatchNorm,
    with parameters, FLOPs and latency of its stand-alone network.

    No calibration batches (``calib_batches`` 0, or ``calibration=[]``) keeps the supernet's running
    statistics.
    """
    device = device or next(supernet.parameters()).device
    cuda = device.type == "cuda"
    channels_last = cuda and config.channels_last
    autocast = _autocast(device, config)
    data = data.to(device)
    with _training_context(config, device, config.seed):
        net = inherit(supernet, code)
        metrics = {"params": float(count_parameters(net)), "flops": float(count_flops(net, data.input_shape))}
        if channels_last:
            net.to(memory_format=torch.channels_last)
        batches = calibration if calibration is not None else calibration_batches(data, config)
        if batches:
            recalibrate_bn(net, batches, autocast=autocast, channels_last=channels_last)
        net.eval()
        metrics["valid_acc"] = _accuracy(net, data.valid_x, data.valid_y, config.eval_batch_size, autocast,
                                         channels_last)
        if data.test_x is not None and config.eval_test:
            metrics["test_acc"] = _accuracy(net, data.test_x, data.test_y, config.eval_batch_size, autocast,
                                            channels_last)
        if config.latency_repeats:
            metrics["latency_ms"] = measure_latency(
                net, data.input_shape, repeats=config.latency_repeats, warmup=1, device=device,
                autocast_dtype=torch.bfloat16 if cuda and config.amp else None, channels_last=channels_last)
    return metrics


class SupernetEvaluator(ImageDataEvaluator, Evaluator):
    """Evaluates architectures with weights inherited from one trained supernet (``--evaluator supernet``).

    Searches ``valid_acc`` (validation accuracy, %, after BN recalibration)
    and reports ``test_acc`` where the data set has a test split. With the
    option ``blend=naswot`` it searches ``blend`` (the accuracy and the NASWOT
    score, standardised on reference cells, weighted alike) and records
    ``naswot`` too. ``options`` are :class:`SupernetConfig` fields plus
    ``data_dir``.
    """

    name = "supernet"

    def __init__(self, space: Any, dataset: str = "digits", *, options: Mapping[str, Any] | None = None,
                 config: SupernetConfig | None = None, data_dir: str | Path | None = None,
                 metric: str | None = None, mode: str = "max") -> None:
        if not isinstance(space, NB201Space) and getattr(space, "name", None) != "nb201":
            raise UserError(f"the supernet evaluator covers the nb201 space, not '{space.name}'; "
                            "use --evaluator train or module.path:function for other spaces")
        options = self._place(space, dataset, options, data_dir)
        self.config = config or SupernetConfig.from_options(options)
        self.device = resolve_device(self.config.device)
        has_test = dataset not in ("digits",) and not dataset.startswith("imagefolder:")
        blended = self.config.blend != "none"
        metrics = ("valid_acc", "test_acc", "blend") if blended else ("valid_acc", "test_acc")
        if metric is not None and metric not in metrics:
            hint = "" if blended or metric != "blend" else " (blend needs the supernet option blend=naswot)"
            raise UserError(f"unknown metric '{metric}' for the supernet evaluator; choose "
                            f"{', '.join(metrics[:-1])} or {metrics[-1]}{hint}")
        if metric == "test_acc" and not has_test:
            raise UserError(f"dataset '{dataset}' has no test split; search valid_acc instead")
        if metric == "test_acc" and not self.config.eval_test:
            raise UserError("the supernet option eval_test=false scores no test split; search valid_acc instead")
        has_test = has_test and self.config.eval_test
        if mode != "max":
            raise UserError("accuracy is higher-is-better: the supernet evaluator only maximises (drop --mode min)")
        self.searched_metric = metric or ("blend" if blended else "valid_acc")
        self.reported_metric = "test_acc" if has_test else self.searched_metric
        self.mode = "max"
        c = self.config
        kind = (f"few-shot NB201 supernet (C={c.channels}, N={c.cells}; split on edge {c.split_edge}, "
                f"{c.epochs} + {c.split_epochs} epochs a part)" if c.split_edge >= 0 else
                f"NB201 supernet (C={c.channels}, N={c.cells}) trained {c.epochs} epochs")
        paths = "uniform single-path sampling" if c.sampling == "codes" else "single paths sampled by network"
        norm = (f"BatchNorm recalibrated on {c.calib_batches} training batches" if c.calib_batches else
                "the supernet's BatchNorm statistics")
        how = f"inherited from a {kind} on {dataset} with {paths}, {norm}; the first evaluation trains or loads it"
        if blended:
            how += (f"; blend: the validation accuracy and the NASWOT score of the untrained network, each "
                    f"standardised on {c.blend_reference} seeded reference cells, weighted alike")
        if self.reported_metric == self.searched_metric:
            self.metric_note = f"searched and reported on {self.searched_metric} (%) with weights {how}"
        else:
            self.metric_note = (f"searched on {self.searched_metric} (validation split), reported as "
                                f"{self.reported_metric} (test split), with weights {how}")
        self._data: ImageDataset | None = None
        self._supernet: NB201Supernet | FewShotSupernet | None = None
        self._calibration: list[torch.Tensor] | None = None
        self.info: SupernetInfo | None = None
        self._eval_s: list[float] = []
        self._reference: BlendReference | None = None

    @property
    def cache_path(self) -> Path:
        return supernet_cache_path(self.dataset, self.config)

    def supernet(self) -> tuple[NB201Supernet | FewShotSupernet, SupernetInfo]:
        """The trained supernet: in memory, else from the cache file, else trained now (and cached)."""
        if self._supernet is None:
            self._supernet, self.info = load_or_train_supernet(self.dataset, self.data(), self.config,
                                                               device=self.device)
            self._calibration = calibration_batches(self.data(), self.config)
        return self._supernet, self.info  # type: ignore[return-value]

    def naswot(self, code: str) -> float:
        """The NASWOT score of ``code``'s untrained network (the supernet's width, depth and seed)."""
        c = self.config
        config = ProxyConfig(proxy="naswot", batch_size=c.proxy_batch_size, channels=c.channels, cells=c.cells,
                             seed=c.seed, device=c.device, threads=c.threads)
        return float(proxy_scores(code, self.data(), config, device=self.device)["naswot"])

    def blend_reference(self) -> tuple[BlendReference, bool]:
        """The reference that standardises the blend: from its file beside the supernet's cache file, else
        measured now (every reference cell evaluated with inherited weights and scored by NASWOT).
        Returns it and whether it was measured here."""
        if self._reference is not None:
            return self._reference, False
        supernet, info = self.supernet()
        c = self.config
        codes = reference_codes(self.space, c.blend_reference, c.seed)
        quick = dataclasses.replace(c, eval_test=False, latency_repeats=0)
        valid_only = dataclasses.replace(self.data(), test_x=None, test_y=None)

        def valid_acc(code: str) -> float:
            return evaluate_inherited(supernet, code, valid_only, quick, device=self.device,
                                      calibration=self._calibration)["valid_acc"]

        depends = {"supernet": Path(info.path).name if info.path else None, "codes": codes,
                   "calib_batches": c.calib_batches, "calib_batch_size": c.calib_batch_size,
                   "proxy_batch_size": c.proxy_batch_size, "dataset": self.dataset}
        path = reference_path(Path(info.path), depends) if info.path else None
        self._reference, measured = load_or_measure_reference(path, codes, valid_acc, self.naswot)
        return self._reference, measured

    def estimate_cost(self, ncode: str) -> dict[str, float]:
        """Seconds of one inherited-weight evaluation once measured (unknown before: training may come first)."""
        if self._supernet is None or not self._eval_s:
            return {}
        return {"eval_s": sum(self._eval_s) / len(self._eval_s)}

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        return list(self.iter_evaluate(ncodes))

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[Trial]:
        data = self.data()  # a missing data set stops the search (UserError), it does not fail trials
        for code in ncodes:
            start = time.perf_counter()
            arch = code
            cost: dict[str, float] = {}
            try:
                arch = self.space.format_arch(code)
                problems = self.space.structural_problems(code)
                if problems:
                    raise ValueError(problems[0].message)
            except Exception as e:  # a malformed or degenerate code fails its trial
                message = str(e) if isinstance(e, UserError) else _one_line(e)
                yield Trial(code, arch, status="failed", error=message,
                                  cost={"wall_s": time.perf_counter() - start})
                continue
            fresh = self._supernet is None
            supernet, info = self.supernet()  # a diverging supernet stops the search (UserError)
            if fresh and info.trained:
                cost["supernet_train_s"] = info.train_s  # this evaluation paid for the supernet
            elif fresh:
                cost["supernet_load_s"] = info.load_s
            try:
                eval_start = time.perf_counter()
                metrics = evaluate_inherited(supernet, code, data, self.config, device=self.device,
                                             calibration=self._calibration)
                if self.config.blend == "naswot":
                    reference, measured = self.blend_reference()
                    if measured:  # this evaluation paid for the reference too
                        cost["blend_reference_s"] = reference.measure_s
                        eval_start += reference.measure_s
                    metrics["naswot"] = self.naswot(code)
                    metrics["blend"] = blend_score(metrics["valid_acc"], metrics["naswot"], reference)
                cost["eval_s"] = time.perf_counter() - eval_start
                self._eval_s.append(cost["eval_s"])
            except Exception as e:  # NaN outputs, out of memory: this trial fails, the search goes on
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                message = str(e) if isinstance(e, (UserError, TrainingFailed)) else _one_line(e)
                cost["wall_s"] = time.perf_counter() - start
                yield Trial(code, arch, status="failed", error=message, cost=cost)
                continue
            cost["wall_s"] = time.perf_counter() - start
            yield Trial(code, arch, metrics=metrics, cost=cost)


def _one_line(e: BaseException) -> str:
    return " ".join(traceback.format_exception_only(type(e), e)[-1].split())
