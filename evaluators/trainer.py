"""Real training: the "GPU trainer" evaluator (``--evaluator train``).

:func:`train_architecture` builds the network of an architecture
(:mod:`collm_nas.models`), trains it on an :class:`ImageDataset` and returns
its validation accuracy (and test accuracy where the data set has a test
split), last-epoch training loss and accuracy, parameters, FLOPs, measured
inference latency, and the training time. :class:`TrainEvaluator` runs it for
every architecture a search proposes; a trial that fails (NaN or infinite
loss, an exception, the time limit) is recorded as failed with one line
saying why, and the search goes on.

On CUDA the data set is moved to the GPU once; batches are drawn by a random
permutation made on the device and indexed there (no per-batch host copies),
the network runs in channels-last layout under bf16 autocast, and cuDNN picks
its fastest kernels. On the CPU training is seeded and deterministic: the
same architecture, data and configuration give the same numbers.

    from collm_nas.evaluators.datasets import load_dataset
    from collm_nas.evaluators.trainer import TrainConfig, train_architecture
    out = train_architecture("nb201", "333132", load_dataset("digits"), TrainConfig(epochs=5))
    out.metrics["valid_acc"], out.cost["train_s"]
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from collm_nas.core.errors import UserError
from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.callable import import_callable
from collm_nas.evaluators.datasets import ImageDataEvaluator, ImageDataset
from collm_nas.evaluators.seeding import current_seed
from collm_nas.models import count_flops, count_parameters, measure_latency, network_of

__all__ = [
    "TRAIN_METRICS",
    "TrainConfig",
    "TrainEvaluator",
    "TrainOutcome",
    "TrainingFailed",
    "auto_threads",
    "effective_seed",
    "resolve_device",
    "train_architecture",
    "train_network",
]

# What a trial reports; accuracies in percent (like the NAS-Bench-201 table).
TRAIN_METRICS = ("valid_acc", "test_acc", "train_acc", "train_loss", "params", "flops", "latency_ms", "params_mb",
                 "flops_m")
ModelHook = Callable[[nn.Module, Mapping[str, str]], Any]


class TrainingFailed(Exception):
    """Training stopped early: NaN/infinite loss or the time limit. The message is one line."""


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained and measured. The defaults train one NAS-Bench-201
    cell network (C=8, N=1) on 16x16 digits in a few seconds on two CPU cores.

    Network settings: ``channels`` / ``cells`` are the NB201 network's C and N
    (the benchmark uses 16 and 5); ``width_mult`` and ``stem_stride`` shape the
    mbv3 network (``stem_stride`` None: 1 for images up to 64 pixels, else 2).
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    time_limit_s: float = 600.0  # per trial, training included; 0 for none
    seed: int = -1  # -1: the evaluation's seed inside a search (run seed + NCode), else 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    threads: int = 0  # CPU threads while training; 0: OMP_NUM_THREADS, else half the cores (see auto_threads)
    augment: str = "auto"  # auto (the data set's default), yes, no: random crops and flips
    image_size: int = 0  # 0: the data set's (digits 16, CIFAR 32, Fashion-MNIST 28)
    train_size: int = 0  # train on a seeded, stratified subset of this many training images; 0: all of them
    channels: int = 8
    cells: int = 1
    width_mult: float = 0.5
    stem_stride: int = 0  # 0: automatic
    dropout: float = 0.0
    eval_batch_size: int = 1024
    latency_repeats: int = 20
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA
    check_every: int = 25  # steps between NaN / time checks on CUDA (every step on the CPU)
    model_hook: str = ""  # module.path:function called as fn(model, arch) after the network is built

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "channels": self.channels, "cells": self.cells, "check_every": self.check_every}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"train option {name} must be at least 1, got {value}")
        non_negative = {"lr": self.lr, "weight_decay": self.weight_decay, "time_limit_s": self.time_limit_s,
                        "threads": self.threads, "image_size": self.image_size, "momentum": self.momentum,
                        "latency_repeats": self.latency_repeats, "stem_stride": self.stem_stride,
                        "train_size": self.train_size}
        for name, value in non_negative.items():
            if not value >= 0:
                raise UserError(f"train option {name} must not be negative, got {value}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise UserError("train options label_smoothing and dropout must lie in [0, 1)")
        if self.width_mult <= 0:
            raise UserError(f"train option width_mult must be positive, got {self.width_mult}")
        if self.augment not in ("auto", "yes", "no"):
            raise UserError(f"train option augment must be auto, yes or no, got '{self.augment}'")
        if self.stem_stride not in (0, 1, 2):
            raise UserError(f"train option stem_stride must be 0 (automatic), 1 or 2, got {self.stem_stride}")
        if self.image_size and self.image_size < 4:
            raise UserError(f"train option image_size must be at least 4 pixels, got {self.image_size}")
        if self.seed < -1:
            raise UserError(f"train option seed must be -1 (automatic) or a seed >= 0, got {self.seed}")
        if self.model_hook and ":" not in self.model_hook:
            raise UserError(f"train option model_hook '{self.model_hook}' must be written module.path:function")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> TrainConfig:
        """From ``{name: value}`` (values may be strings, as given on the command line)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in (options or {}).items():
            if key not in fields:
                raise UserError(f"unknown train option '{key}'; known: {', '.join(fields)}")
            values[key] = _convert(key, raw, type(getattr(cls(), key)))
        return cls(**values)

    def to_options(self) -> dict[str, Any]:
        """The settings that differ from the defaults."""
        default = TrainConfig()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def _convert(key: str, raw: Any, kind: type) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            number = float(text)
            if number != int(number):
                raise ValueError(text)
            return int(number)
        if kind is float:
            return float(text)
    except ValueError:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
        raise UserError(f"train option {key} needs {wanted}, got '{raw}'") from None
    return text


@dataclass
class TrainOutcome:
    """What training one network produced."""

    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{spec}' asked for but CUDA is not available here; use device=auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device '{spec}' is not supported; use auto, cpu, cuda or cuda:N")
    return device


def auto_threads() -> int:
    """CPU threads a trial uses by default: ``OMP_NUM_THREADS`` where set (as the
    process backend sets it for its workers), else half the cores, at least 1.

    Small networks gain little from more threads, and on a shared machine
    threads that wait for a busy core slow training down many times over.
    """
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 2) // 2)


def effective_seed(config: TrainConfig) -> int:
    """``config.seed``, or for -1 the seed of the evaluation in progress (see evaluators/seeding.py), else 0."""
    if config.seed >= 0:
        return config.seed
    seed = current_seed()
    return seed if seed is not None else 0


@contextmanager
def _training_context(config: TrainConfig, device: torch.device, seed: int) -> Iterator[None]:
    """Seeded RNGs, deterministic CPU kernels, thread count; global settings restored afterwards."""
    cuda = device.type == "cuda"
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    benchmark = torch.backends.cudnn.benchmark
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.set_num_threads(config.threads or auto_threads())
        if cuda:
            torch.backends.cudnn.benchmark = True
        else:
            torch.use_deterministic_algorithms(True)
            # Deterministic mode also fills every new tensor with NaN, a cost on each
            # allocation; the training loop never reads memory it did not write.
            torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
            torch.utils.deterministic.fill_uninitialized_memory = fill
            torch.backends.cudnn.benchmark = benchmark


def _augment(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random crops (zero padding ``pad``) and horizontal flips, batched on the data's device."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device, generator=generator)
    rows = (dy + torch.arange(h, device=x.device)).unsqueeze(2)  # (b, h, 1)
    cols = dx + torch.arange(w, device=x.device)  # (b, w)
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    cols = torch.where(flip.unsqueeze(1), cols.flip(1), cols).unsqueeze(1)  # (b, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@dataclass(frozen=True)
class SGDOutcome:
    """What :func:`run_sgd` did: full epochs, steps, and the last epoch's mean loss and accuracy (%)."""

    epochs: int
    steps: int
    steps_per_epoch: int
    batch: int
    last_epoch_loss: float
    last_epoch_acc: float


def run_sgd(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], data: ImageDataset, config: Any, *,
            generator: torch.Generator, augment: bool, pad: int, channels_last: bool, autocast: Any,
            check_every: int, check: Callable[[int, int, torch.Tensor], None],
            label_smoothing: float = 0.0) -> SGDOutcome:
    """The training loop the trainer and the supernet share.

    SGD with Nesterov momentum and weight decay, cosine learning rate per
    step, full minibatches of a seeded on-device permutation (random crops and
    flips when ``augment``). ``forward(xb)`` gives the logits (the supernet
    samples its path there). ``check(epoch, step_in_epoch, epoch_loss)`` runs
    every ``check_every`` steps and at each epoch's end; it raises to stop.
    """
    n = len(data.train_y)
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch  # full batches only: steady shapes, no one-image BatchNorm batches
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    device = data.train_y.device
    epoch_loss = torch.zeros((), device=device)
    epoch_correct = torch.zeros((), dtype=torch.long, device=device)
    step = epochs_done = 0
    for epoch in range(config.epochs):
        perm = torch.randperm(n, device=device, generator=generator)
        epoch_loss.zero_()
        epoch_correct.zero_()
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb = data.train_x.index_select(0, idx)
            yb = data.train_y.index_select(0, idx)
            if augment:
                xb = _augment(xb, generator, pad)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * config.lr * (1.0 + math.cos(math.pi * step / total_steps))
            with autocast:
                logits = forward(xb)
            loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            epoch_loss += loss.detach()
            epoch_correct += (logits.detach().argmax(1) == yb).sum()
            if step % check_every == 0 or i == steps_per_epoch - 1:
                check(epoch, i, epoch_loss)
        epochs_done = epoch + 1
    return SGDOutcome(epochs_done, step, steps_per_epoch, batch, float(epoch_loss) / max(1, steps_per_epoch),
                      100.0 * int(epoch_correct) / max(1, steps_per_epoch * batch))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, autocast, channels_last: bool) -> float:
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    finite = torch.ones((), dtype=torch.bool, device=x.device)
    with torch.inference_mode(), autocast:
        for i in range(0, len(y), batch):
            xb = x[i:i + batch]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            logits = model(xb)
            finite &= torch.isfinite(logits).all()
            correct += (logits.argmax(1) == y[i:i + batch]).sum()
    if not bool(finite):
        raise TrainingFailed("the trained network outputs NaN or infinite values")
    return 100.0 * int(correct) / max(1, len(y))


def train_network(model: nn.Module, data: ImageDataset, config: TrainConfig = TrainConfig(),
                  *, device: torch.device | None = None) -> TrainOutcome:
    """Train ``model`` on ``data`` and measure it; raises :class:`TrainingFailed` on NaN loss or the time limit.

    Seeds shuffling, augmentation and dropout with ``config.seed`` (see
    :func:`effective_seed`); the model's initial weights are the caller's
    (:func:`train_architecture` draws them from the same seed).
    """
    device = device or resolve_device(config.device)
    seed = effective_seed(config)
    with _training_context(config, device, seed):
        return _fit(model, data, config, device, time.perf_counter(), seed)


def _fit(model: nn.Module, data: ImageDataset, config: TrainConfig, device: torch.device,
         started: float, seed: int) -> TrainOutcome:
    cuda = device.type == "cuda"
    channels_last = cuda and config.channels_last
    input_shape = data.input_shape
    params = count_parameters(model)
    flops = count_flops(model, input_shape)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    data = data.to(device)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda and config.amp else nullcontext())
    augment = data.augment if config.augment == "auto" else config.augment == "yes"
    pad = max(1, input_shape[-1] // 8)

    deadline = started + config.time_limit_s if config.time_limit_s > 0 else math.inf

    def check(epoch: int, i: int, epoch_loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(epoch_loss)):
            raise TrainingFailed(
                f"loss became NaN or infinite at epoch {epoch + 1}, step {i + 1} (lr {config.lr:g}); "
                "the trial is failed"
            )
        if time.perf_counter() > deadline:
            raise TrainingFailed(
                f"time limit of {config.time_limit_s:g}s reached at epoch {epoch + 1}/{config.epochs}; "
                "raise time_limit_s or lower epochs"
            )

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    model.train()
    train_start = time.perf_counter()
    cpu_start = time.process_time()
    sgd = run_sgd(model, model, data, config, generator=generator, augment=augment, pad=pad,
                  channels_last=channels_last, autocast=autocast, check_every=1 if not cuda else config.check_every,
                  check=check, label_smoothing=config.label_smoothing)
    epochs_done, steps_per_epoch, batch = sgd.epochs, sgd.steps_per_epoch, sgd.batch
    if cuda:
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - train_start
    train_cpu_s = time.process_time() - cpu_start

    eval_start = time.perf_counter()
    model.eval()
    metrics: dict[str, float] = {
        "valid_acc": _accuracy(model, data.valid_x, data.valid_y, config.eval_batch_size, autocast, channels_last),
    }
    if data.test_x is not None:
        metrics["test_acc"] = _accuracy(model, data.test_x, data.test_y, config.eval_batch_size, autocast,
                                        channels_last)
    metrics["train_acc"] = sgd.last_epoch_acc
    metrics["train_loss"] = sgd.last_epoch_loss
    metrics["params"] = float(params)
    metrics["flops"] = float(flops)
    metrics["params_mb"] = params / 1e6  # in the units of the table and the constraints
    metrics["flops_m"] = flops / 1e6
    metrics["latency_ms"] = measure_latency(
        model, input_shape, repeats=max(1, config.latency_repeats), device=device,
        autocast_dtype=torch.bfloat16 if cuda and config.amp else None, channels_last=channels_last,
    )
    eval_s = time.perf_counter() - eval_start
    images = epochs_done * steps_per_epoch * batch
    cost = {
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,  # CPU time of this process while training (wall time on a shared machine is noisy)
        "eval_s": eval_s,
        "wall_s": time.perf_counter() - started,
        "epochs": float(epochs_done),
        "images_per_s": images / train_s if train_s > 0 else 0.0,
    }
    return TrainOutcome(metrics=metrics, cost=cost)


def train_architecture(
    space: Any,
    arch: str | Mapping[str, str],
    data: ImageDataset,
    config: TrainConfig = TrainConfig(),
    *,
    model_hook: ModelHook | None = None,
) -> TrainOutcome:
    """Build the network of ``arch`` (NCode or decoded) of ``space`` (name or SearchSpace), train and measure it.

    The initial weights are drawn from the seed (:func:`effective_seed`); ``model_hook(model, arch)``
    runs after the network is built (register forward hooks, freeze layers...).
    Raises :class:`TrainingFailed` on NaN loss or the time limit; other errors propagate.
    """
    device = resolve_device(config.device)
    started = time.perf_counter()
    if isinstance(space, str):
        from collm_nas.spaces import SPACES

        space = SPACES.resolve(space)
    family = network_of(space)
    seed = effective_seed(config)
    with _training_context(config, device, seed):
        model = family.for_training(arch, config, num_classes=data.num_classes, input_shape=data.input_shape,
                                    space=space)
        if model_hook is not None:
            decoded = arch if isinstance(arch, Mapping) else space.decode(arch)
            model_hook(model, decoded)
        try:
            return _fit(model, data, config, device, started, seed)
        finally:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _one_line(e: BaseException) -> str:
    return " ".join(traceback.format_exception_only(type(e), e)[-1].split())


class TrainEvaluator(ImageDataEvaluator, Evaluator):
    """Trains every proposed architecture for real (``--evaluator train``).

    Searches ``valid_acc`` (validation accuracy, %) and reports ``test_acc``
    where the data set has a test split (CIFAR, torchvision), else
    ``valid_acc``. ``options`` are :class:`TrainConfig` fields plus
    ``data_dir`` (the folder of CIFAR / torchvision / ImageFolder data).
    """

    name = "train"

    def __init__(
        self,
        space: Any,
        dataset: str = "digits",
        *,
        options: Mapping[str, Any] | None = None,
        config: TrainConfig | None = None,
        data_dir: str | Path | None = None,
        metric: str | None = None,
        mode: str = "max",
        model_hook: ModelHook | None = None,
    ) -> None:
        self.network = network_of(space)  # the space's own network (a one-line error when it names none)
        options = self._place(space, dataset, options, data_dir)
        self.config = config or TrainConfig.from_options(options)
        self.device = resolve_device(self.config.device)
        self._hook = model_hook or (import_callable(self.config.model_hook) if self.config.model_hook else None)
        has_test = dataset not in ("digits",) and not dataset.startswith("imagefolder:")
        self._has_test = has_test
        if metric is not None and metric not in TRAIN_METRICS:
            raise UserError(f"unknown metric '{metric}' for the train evaluator; choose one of {', '.join(TRAIN_METRICS)}")
        if metric == "test_acc" and not has_test:
            raise UserError(f"dataset '{dataset}' has no test split; search valid_acc instead")
        if mode not in ("max", "min"):
            raise UserError(f"unknown mode '{mode}'; use max or min")
        self.searched_metric = metric or "valid_acc"
        self.reported_metric = "test_acc" if has_test else self.searched_metric
        self.mode = mode  # type: ignore[assignment]
        c = self.config
        trained = f"{self.network.words(c)} trained {c.epochs} epochs on {dataset}"
        if self.reported_metric == self.searched_metric:
            self.metric_note = f"searched and reported on {self.searched_metric} (%): {trained}, accuracy on the held-out validation split"
        else:
            self.metric_note = (f"searched on {self.searched_metric} (held-out validation split); reported as "
                                f"{self.reported_metric} (test split): {trained}")
        self._data: ImageDataset | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Accuracies, loss, parameters and FLOPs (also as params_mb / flops_m), and latency_ms measured on
        the machine that trains (``device``); test_acc only where the data set has a test split."""
        return tuple(m for m in TRAIN_METRICS if m != "test_acc" or self._has_test)

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        return list(self.iter_evaluate(ncodes))

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[Trial]:
        data = self.data()  # a missing data set stops the search (UserError), it does not fail trials
        for code in ncodes:
            start = time.perf_counter()
            arch = code
            try:
                arch = self.space.format_arch(code)
                outcome = train_architecture(self.space, code, data, self.config, model_hook=self._hook)
            except Exception as e:  # NaN loss, time limit, OOM, a broken hook: this trial fails, the search goes on
                message = str(e) if isinstance(e, (TrainingFailed, UserError)) else _one_line(e)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                yield Trial(code, arch, status="failed", error=" ".join(message.split()),
                                  cost={"wall_s": time.perf_counter() - start})
                continue
            yield Trial(code, arch, metrics=outcome.metrics, cost=outcome.cost)
