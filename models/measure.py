"""Parameters, FLOPs and inference latency of a network.

FLOPs are measured by running the network once under
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per
multiply-accumulate of convolutions and matrix products and nothing for
elementwise work (BatchNorm, activations, additions, pooling). Half of that,
``count_macs``, is the unit of NAS-Bench-201's ``flops_m_*`` columns
(millions of multiply-accumulates): for every architecture checked it equals
the table's figure less the classifier's bias additions (one per class,
which the table counts), i.e. it agrees to 1e-4 M. ``count_pooling=True``
also counts average pooling (one multiply-accumulate per window element),
which the table does not.

    net = NB201Network("333132")
    count_parameters(net)                 # 1,073,466 (the table's params_mb_cifar10: 1.073466)
    count_macs(net, (3, 32, 32)) / 1e6    # 153.27296 (the table's flops_m_cifar10: 153.27297)
    measure_latency(net, (3, 32, 32))     # median milliseconds of one batch-1 forward
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelCost", "count_flops", "count_macs", "count_parameters", "measure_latency", "profile_model"]

aten = torch.ops.aten


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _avg_pool_flops(x_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    window = math.prod(kernel_size) if len(kernel_size) > 1 else kernel_size[0] ** 2
    return 2 * math.prod(out_shape) * window


_POOLING = {aten.avg_pool2d: _avg_pool_flops}


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _example(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1,
             device: torch.device | str | None = None) -> torch.Tensor:
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    return torch.zeros((batch_size, *input_shape), device=device)


def count_flops(model: nn.Module, input_shape: Sequence[int], *, count_pooling: bool = False) -> int:
    """FLOPs of one forward pass of one image of shape ``(channels, height, width)``.

    Measured with ``FlopCounterMode`` (2 FLOPs per multiply-accumulate), in
    evaluation mode and without gradients; ``count_pooling`` also counts
    average pooling, one multiply-accumulate per window element.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_POOLING if count_pooling else None)
    with _eval_mode(model), torch.no_grad(), counter:
        model(_example(model, input_shape))
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_shape: Sequence[int], *, count_pooling: bool = False) -> int:
    """Multiply-accumulates of one forward pass (``count_flops / 2``), NAS-Bench-201's unit."""
    return count_flops(model, input_shape, count_pooling=count_pooling) // 2


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> float:
    """Median wall time in milliseconds of one inference forward pass.

    Runs on ``device`` (default: where the model's parameters are), in
    evaluation mode without gradients, after ``warmup`` untimed passes; CUDA
    work is synchronised around every timed pass. ``autocast_dtype`` (e.g.
    ``torch.bfloat16`` on CUDA) and ``channels_last`` time the network as the
    trainer runs it.
    """
    x = _example(model, input_shape, batch_size, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = x.device.type == "cuda"
    autocast = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
                if autocast_dtype is not None else _null())
    times = []
    with _eval_mode(model), torch.inference_mode(), autocast:
        for i in range(warmup + max(1, repeats)):
            if cuda:
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


@contextmanager
def _null():
    yield


@dataclass(frozen=True)
class ModelCost:
    """Size and compute of a network for one input shape."""

    params: int
    flops: int  # per image, FlopCounterMode convention (2 per multiply-accumulate)

    @property
    def macs(self) -> int:
        return self.flops // 2

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def flops_m(self) -> float:
        """Millions of multiply-accumulates, the unit of NAS-Bench-201's ``flops_m_*`` columns."""
        return self.macs / 1e6


def profile_model(model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
    """Parameters and FLOPs of ``model`` for images of shape ``(channels, height, width)``."""
    return ModelCost(count_parameters(model), count_flops(model, input_shape))
