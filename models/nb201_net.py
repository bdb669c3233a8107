"""The NAS-Bench-201 network in plain PyTorch.

Layout (as in the benchmark): a 3x3 convolution stem with BatchNorm, then
three stages of ``cells_per_stage`` cells at ``C``, ``2C`` and ``4C``
channels, separated by ResNet-style reduction blocks (stride 2), then
BatchNorm + ReLU, global average pooling and a linear classifier. The
defaults (``C=16``, ``N=5``) are the benchmark's; both are configurable, and
so are the input channels and the number of classes. Any input size of at
least 4x4 works (the network ends in global pooling).

A cell is a DAG of 4 nodes; node ``i`` sums the operations on its edges from
every earlier node, and node 3 is the cell's output. Every edge is computed,
also where its result cannot reach the output, so parameter and FLOP counts
match the benchmark's figures. Operations:

* ``none``: the edge contributes nothing (zeros);
* ``skip_connect``: identity;
* ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU -> Conv (no bias) -> BatchNorm;
* ``avg_pool_3x3``: 3x3 average pooling, stride 1, padding not counted.

Build one from an NCode, the benchmark string, a decoded architecture or the
six operation names::

    net = NB201Network("333132", num_classes=10)
    net = NB201Network("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    net = NB201Network(NB201Space().decode("333132"), channels=8, cells_per_stage=1, in_channels=1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from collm_nas.core.errors import UserError
from collm_nas.models.family import NetworkFamily
from collm_nas.spaces.nb201 import EDGES, OPERATIONS, NB201Space, arch_string

__all__ = ["NB201_NETWORK", "NB201Cell", "NB201Network", "ReLUConvBN", "ResNetReduction", "make_nb201_op", "nb201_ops"]


def nb201_ops(arch: str | Sequence[str] | Mapping[str, str]) -> tuple[str, ...]:
    """The six edge operations (benchmark edge order) of an architecture.

    ``arch`` is an NCode (``"333132"``), a benchmark string (``"|op~0|+..."``),
    a decoded architecture (``{"edge_1<-0": "nor_conv_3x3", ...}``) or a
    sequence of six operation names. Bad input raises a one-line UserError.
    """
    space = NB201Space()
    if isinstance(arch, str):
        code = space.parse_arch(arch) if "|" in arch else arch
        return tuple(space.decode(code).values())
    if isinstance(arch, Mapping):
        return tuple(space.decode(space.encode(arch)).values())
    ops = tuple(str(op) for op in arch)
    if len(ops) != len(EDGES):
        raise UserError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} operations")
    for op in ops:
        if op not in OPERATIONS:
            raise UserError(f"unknown operation '{op}'; known: {', '.join(OPERATIONS)}")
    return ops


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d, the benchmark's convolution op."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class _Zero(nn.Module):
    """The ``none`` operation: contributes zeros (kept as a module for structure)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def make_nb201_op(name: str, channels: int) -> nn.Module:
    """One cell operation at ``channels`` channels, stride 1."""
    if name == "none":
        return _Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise UserError(f"unknown operation '{name}'; known: {', '.join(OPERATIONS)}")


class NB201Cell(nn.Module):
    """A 4-node cell: node ``dst`` = sum of op(node ``src``) over its incoming edges."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.edges = nn.ModuleList(make_nb201_op(op, channels) for op in self.ops)
        # For each node 1..3 the (edge index, source node) pairs that feed it;
        # 'none' edges add zeros, so they are skipped in the sum.
        self._inputs: list[list[tuple[int, int]]] = [[] for _ in range(4)]
        for k, ((dst, src), op) in enumerate(zip(EDGES, self.ops)):
            if op != "none":
                self._inputs[dst].append((k, src))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for dst in (1, 2, 3):
            feeds = self._inputs[dst]
            if not feeds:
                nodes.append(torch.zeros_like(x))
                continue
            total = self.edges[feeds[0][0]](nodes[feeds[0][1]])
            for k, src in feeds[1:]:
                total = total + self.edges[k](nodes[src])
            nodes.append(total)
        return nodes[3]


class ResNetReduction(nn.Module):
    """The benchmark's reduction block: a stride-2 ResNet basic block.

    Main path ReLU-Conv3x3(stride 2)-BN -> ReLU-Conv3x3-BN; shortcut 2x2
    average pooling then a 1x1 convolution (no BN); the two are added.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, stride=1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    """The NAS-Bench-201 cell network for one architecture.

    Args:
        arch: NCode, benchmark string, decoded architecture or six op names.
        channels: ``C``, the channels of the first stage (16 in the benchmark).
        cells_per_stage: ``N``, cells per stage (5 in the benchmark).
        num_classes: outputs of the classifier (10 for CIFAR-10).
        in_channels: image channels (3 for colour, 1 for grey images).
    """

    def __init__(
        self,
        arch: str | Sequence[str] | Mapping[str, str],
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if channels < 1 or cells_per_stage < 1 or num_classes < 1 or in_channels < 1:
            raise UserError(
                f"NB201 network needs positive channels, cells per stage, classes and input channels; got "
                f"C={channels}, N={cells_per_stage}, classes={num_classes}, in_channels={in_channels}"
            )
        self.ops = nb201_ops(arch)
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetReduction(c, 2 * c))
                c *= 2
            layers.extend(NB201Cell(self.ops, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.out_channels = c

    @property
    def arch_string(self) -> str:
        """The benchmark's string of this network's cell."""
        return arch_string(self.ops)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier, shape ``(batch, 4C)``."""
        x = self.head(self.cells(self.stem(x)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# The nb201 space's network (NB201Space.network names it): C and N from the run's settings.
NB201_NETWORK = NetworkFamily(
    "nb201", NB201Network, options=("channels", "cells_per_stage"),
    from_train=lambda config, input_shape: {"channels": config.channels, "cells_per_stage": config.cells},
    describe=lambda config: f"NB201 network C={config.channels}, N={config.cells}", takes="ncode")
