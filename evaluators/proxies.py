"""Zero-cost proxies: score an untrained network in about one minibatch (``--evaluator proxy``).

Three training-free scores of the stand-alone NAS-Bench-201 network of an
architecture at its (seeded) initialisation, each higher-is-better:

* ``synflow`` (Tanaka et al. 2020; Abdelfattah et al. 2021): the network
  without BatchNorm, every weight replaced by its absolute value, in double
  precision, fed one all-ones input of the data's image shape; the score is
  the sum over convolution and linear weights of ``|theta * dR/dtheta|`` with
  ``R`` the sum of the outputs. Reported as its natural logarithm (the raw
  sums span hundreds of orders of magnitude; ranks are unchanged).
  Data-free by definition: only the image shape comes from the data.
* ``naswot`` (Mellor et al. 2021, "NAS without training"): on one minibatch
  of real images, the binary code of every ReLU's input (positive or not),
  concatenated over all ReLUs, gives each image a code ``c``; the kernel
  ``K[i, j] = c_i . c_j + (1 - c_i) . (1 - c_j)`` (units where two images
  agree) and the score is ``log |det K|``.
* ``grad_norm`` (Abdelfattah et al. 2021): on the same minibatch, the
  cross-entropy loss is back-propagated once and the score is the sum over
  convolution and linear layers of the L2 norm of the weight gradient.

``naswot`` and ``grad_norm`` share one forward and backward pass of the
minibatch; ``synflow`` adds one pass of a single image. On the CPU the
scores are deterministic (same architecture, data and seed: same numbers).

    from collm_nas.evaluators.proxies import ProxyConfig, proxy_scores, rank_codes
    proxy_scores("333132", load_dataset("digits"))          # {'synflow': ..., 'naswot': ..., 'grad_norm': ...}
    rank_codes(["333132", "101300", "212221"], data)        # best first, by the default proxy
    rank_codes(codes, data, proxy="vote")                   # by the mean rank of the three

:class:`ProxyEvaluator` (``--evaluator proxy``) searches one proxy
(``--train-option proxy=synflow|naswot|grad_norm``) and records all three,
with the network's parameters and FLOPs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from collm_nas.core.errors import UserError
from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.datasets import ImageDataEvaluator, ImageDataset
from collm_nas.evaluators.ranking import ranks
from collm_nas.evaluators.seeding import current_seed
from collm_nas.evaluators.trainer import _convert, _training_context, resolve_device
from collm_nas.models import build_network, count_flops, count_parameters

__all__ = [
    "DEFAULT_PROXY",
    "PROXIES",
    "ProxyConfig",
    "ProxyEvaluator",
    "grad_norm",
    "naswot",
    "proxy_batch",
    "proxy_scores",
    "rank_codes",
    "synflow",
]

PROXIES = ("synflow", "naswot", "grad_norm")
# The proxy a search uses by default: the best Kendall tau against the NAS-Bench-201 table
# of the three on digits images (benchmarks/proxy_tau.py; see docs/evaluators.md).
DEFAULT_PROXY = "naswot"
_WEIGHTED = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class ProxyConfig:
    """How proxies are computed. The defaults score the benchmark's network (C=16, N=5)
    on one minibatch of 64 digits images (16x16): all three in about 0.3 s of one CPU core."""

    proxy: str = DEFAULT_PROXY  # the searched one: synflow, naswot or grad_norm
    batch_size: int = 64
    channels: int = 16
    cells: int = 5
    image_size: int = 0  # 0: the data set's (digits 16)
    seed: int = 0  # initial weights and the minibatch; -1: the evaluation's seed inside a search
    device: str = "auto"
    threads: int = 0  # 0: OMP_NUM_THREADS, else half the cores

    def __post_init__(self) -> None:
        if self.proxy not in PROXIES:
            raise UserError(f"unknown proxy '{self.proxy}'; use {', '.join(PROXIES)}")
        for name in ("batch_size", "channels", "cells"):
            if getattr(self, name) < 1:
                raise UserError(f"proxy option {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise UserError("proxy option batch_size must be at least 2 (naswot compares images)")
        if self.threads < 0 or self.image_size < 0:
            raise UserError("proxy options threads and image_size must not be negative")
        if self.image_size and self.image_size < 4:
            raise UserError(f"proxy option image_size must be at least 4 pixels, got {self.image_size}")
        if self.seed < -1:
            raise UserError(f"proxy option seed must be -1 (the evaluation's) or a seed >= 0, got {self.seed}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> ProxyConfig:
        return _config_from_options(cls, options, "proxy")


def _config_from_options(cls: type, options: Mapping[str, Any] | None, what: str) -> Any:
    """A config dataclass from ``{name: value}`` (strings as on the command line); one-line errors."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in (options or {}).items():
        if key not in fields:
            raise UserError(f"unknown {what} option '{key}'; known: {', '.join(sorted(fields))}")
        values[key] = _convert(key, raw, type(getattr(cls(), key)))
    return cls(**values)


# ------------------------------------------------------------------ the scores
def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, _WEIGHTED)]


def _without_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm replaced by the identity."""
    clone = copy.deepcopy(model)
    for name, child in list(clone.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                setattr(child, attr, nn.Identity())
    return clone


def synflow(model: nn.Module, input_shape: Sequence[int]) -> float:
    """log of SynFlow: sum |theta * dR/dtheta| over conv/linear weights of the BN-free,
    all-positive, double-precision copy of ``model``, for one all-ones input."""
    net = _without_batchnorm(model).double()
    net.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    torch.sum(net(x)).backward()
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for w in _weights(net):
            if w.grad is not None:
                total += (w * w.grad).abs().sum()
    value = float(total)
    return math.log(value) if value > 0 else -math.inf


def _naswot_and_grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One forward and backward pass of a minibatch: (NASWOT log-det, gradient norm)."""
    batch = x.shape[0]
    kernel = torch.zeros((batch, batch), dtype=torch.float64, device=x.device)

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        codes = (inputs[0].detach().reshape(batch, -1) > 0).to(torch.float64)
        kernel.add_(codes @ codes.t()).add_((1.0 - codes) @ (1.0 - codes).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    F.cross_entropy(logits.float(), y).backward()
    norm = sum(float(w.grad.norm()) for w in _weights(model) if w.grad is not None)
    sign, logdet = torch.linalg.slogdet(kernel)
    score = float(logdet) if float(sign) != 0 else -math.inf
    model.zero_grad(set_to_none=True)
    return score, norm


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """NASWOT: log |det K| of the binary ReLU-code kernel of the minibatch ``x``."""
    y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return _naswot_and_grad_norm(model, x, y)[0]


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over conv/linear layers of the L2 norm of the cross-entropy loss's weight gradient."""
    return _naswot_and_grad_norm(model, x, y)[1]


# --------------------------------------------------------------- architectures
def proxy_batch(data: ImageDataset, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch proxies see: ``batch_size`` training images drawn by a seeded permutation."""
    n = len(data.train_y)
    if batch_size > n:
        raise UserError(f"proxy batch_size {batch_size} exceeds the {n} training images; lower it")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=generator)[:batch_size].to(data.device)
    return data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)


def _seed(config: ProxyConfig) -> int:
    if config.seed >= 0:
        return config.seed
    seed = current_seed()
    return seed if seed is not None else 0


def proxy_scores(arch: str | Mapping[str, str], data: ImageDataset, config: ProxyConfig = ProxyConfig(),
                 *, device: torch.device | None = None, network: bool = False) -> dict[str, float]:
    """``synflow``, ``naswot`` and ``grad_norm`` of the NB201 network of ``arch`` at its seeded init.

    With ``network`` also its ``params`` and ``flops`` (FLOPs per image, counted like the trainer).
    """
    device = device or resolve_device(config.device)
    seed = _seed(config)
    with _training_context(config, device, seed):
        model = build_network("nb201", arch, num_classes=data.num_classes, in_channels=data.channels,
                              channels=config.channels, cells_per_stage=config.cells).to(device)
        x, y = proxy_batch(data.to(device), config.batch_size, seed)
        scores = {"synflow": synflow(model, data.input_shape)}
        scores["naswot"], scores["grad_norm"] = _naswot_and_grad_norm(model, x, y)
        if network:
            scores["params"] = float(count_parameters(model))
            scores["flops"] = float(count_flops(model, data.input_shape))
    return scores


def rank_codes(codes: Sequence[str], data: ImageDataset, proxy: str = DEFAULT_PROXY,
               config: ProxyConfig = ProxyConfig(), *, keep: int | None = None) -> list[tuple[str, float]]:
    """Pre-screen: ``codes`` ordered best first by ``proxy`` (or ``vote``: the mean rank of the three,
    lower is better), as ``(code, score)`` pairs; ``keep`` cuts the list to the best ones."""
    if proxy not in (*PROXIES, "vote"):
        raise UserError(f"unknown proxy '{proxy}'; use {', '.join(PROXIES)} or vote")
    codes = list(dict.fromkeys(codes))
    scores = [proxy_scores(code, data, config) for code in codes]
    if proxy == "vote":
        mean_rank = sum(ranks([_finite(s[p]) for s in scores], descending=True) for p in PROXIES) / len(PROXIES)
        pairs = [(code, float(r)) for code, r in zip(codes, mean_rank)]
        pairs.sort(key=lambda pair: pair[1])
    else:
        pairs = [(code, s[proxy]) for code, s in zip(codes, scores)]
        pairs.sort(key=lambda pair: -_finite(pair[1]))
    return pairs[:keep] if keep is not None else pairs


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -1e300


# ------------------------------------------------------------------ evaluator
class ProxyEvaluator(ImageDataEvaluator, Evaluator):
    """Scores every architecture with zero-cost proxies (``--evaluator proxy``): no training.

    Searches the proxy chosen by the ``proxy`` option (or ``--metric``) and
    records all three with ``params`` and ``flops`` of the scored network.
    """

    name = "proxy"

    def __init__(self, space: Any, dataset: str = "digits", *, options: Mapping[str, Any] | None = None,
                 config: ProxyConfig | None = None, data_dir: str | Path | None = None,
                 metric: str | None = None, mode: str = "max") -> None:
        if space.name != "nb201":
            raise UserError(f"the proxy evaluator scores NAS-Bench-201 networks (space nb201), not '{space.name}'; "
                            "use --evaluator module.path:function for your own space")
        options = self._place(space, dataset, options, data_dir)
        if metric is not None and metric not in PROXIES:
            raise UserError(f"unknown metric '{metric}' for the proxy evaluator; choose one of {', '.join(PROXIES)}")
        if metric is not None and "proxy" in options and options["proxy"] != metric:
            raise UserError(f"--metric {metric} and proxy={options['proxy']} disagree; give one of them")
        if metric is not None:
            options["proxy"] = metric
        if mode != "max":
            raise UserError("proxies are higher-is-better: the proxy evaluator only maximises (drop --mode min)")
        self.config = config or ProxyConfig.from_options(options)
        self.device = resolve_device(self.config.device)
        self.searched_metric = self.config.proxy
        self.reported_metric = self.config.proxy
        self.mode = "max"
        c = self.config
        self.metric_note = (f"searched and reported on the zero-cost proxy {c.proxy} of the untrained NB201 network "
                            f"C={c.channels}, N={c.cells} on one minibatch of {c.batch_size} {dataset} images "
                            "(a pre-screen score, not an accuracy); synflow, naswot and grad_norm all recorded")
        self._data: ImageDataset | None = None

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        return list(self.iter_evaluate(ncodes))

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[Trial]:
        data = self.data()
        for code in ncodes:
            start = time.perf_counter()
            arch = code
            try:
                arch = self.space.format_arch(code)
                metrics = proxy_scores(code, data, self.config, device=self.device, network=True)
                if not math.isfinite(metrics[self.searched_metric]):
                    raise ValueError(f"proxy {self.searched_metric} is not finite ({metrics[self.searched_metric]})")
            except Exception as e:  # one bad code fails its trial, not the search
                message = str(e) if isinstance(e, UserError) else _one_line(e)
                yield Trial(code, arch, status="failed", error=message,
                                  cost={"wall_s": time.perf_counter() - start})
                continue
            yield Trial(code, arch, metrics=metrics, cost={"wall_s": time.perf_counter() - start})


def _one_line(e: BaseException) -> str:
    return " ".join(traceback.format_exception_only(type(e), e)[-1].split())
