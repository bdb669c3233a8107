"""The NAS-Bench-201 supernet: every operation on every edge, weights shared by all cells' paths (SPOS).

:class:`NB201Supernet` has the module names of :class:`~collm_nas.models.nb201_net.NB201Network` except that
each cell edge holds all five candidate operations, so :func:`inherit` copies a path's weights into the
stand-alone network of one NCode. Training it and evaluating with it: :mod:`collm_nas.evaluators.supernet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from collm_nas.models.nb201_net import NB201Cell, NB201Network, ResNetReduction, make_nb201_op
from collm_nas.spaces.nb201 import EDGES, OPERATIONS

__all__ = ["FewShotSupernet", "MixedEdge", "NB201Supernet", "SupernetCell", "inherit"]


class MixedEdge(nn.Module):
    """One cell edge holding all five operations; a forward runs the one chosen."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(make_nb201_op(op, channels) for op in OPERATIONS)

    def forward(self, x: torch.Tensor, op: int) -> torch.Tensor:
        return self.candidates[op](x)


class SupernetCell(nn.Module):
    """A NAS-Bench-201 cell whose edges are :class:`MixedEdge`; summed like :class:`NB201Cell`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedEdge(channels) for _ in EDGES)

    def forward(self, x: torch.Tensor, ops: Sequence[int]) -> torch.Tensor:
        nodes = [x]
        for dst in (1, 2, 3):
            total = None
            for k, (d, src) in enumerate(EDGES):
                if d != dst or ops[k] == 0:  # 'none' adds zeros
                    continue
                out = self.edges[k](nodes[src], ops[k])
                total = out if total is None else total + out
            nodes.append(total if total is not None else torch.zeros_like(x))
        return nodes[3]


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 network with every operation on every edge (weight sharing).

    Same layout and module names as :class:`NB201Network` except that each cell
    edge ``cells.i.edges.k`` holds ``candidates.0..4`` (the five operations in
    NCode order), so :func:`inherit` maps weights by name. ``forward(x, code)``
    runs the single path of one NCode.
    """

    def __init__(self, *, channels: int = 8, cells_per_stage: int = 1, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetReduction(c, 2 * c))
                c *= 2
            layers.extend(SupernetCell(c) for _ in range(cells_per_stage))
        self.cells = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor, code: str | Sequence[int]) -> torch.Tensor:
        ops = [int(c) for c in code]
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, ops) if isinstance(layer, SupernetCell) else layer(x)
        x = self.pool(self.head(x))
        return self.classifier(torch.flatten(x, 1))


class FewShotSupernet(nn.Module):
    """A few-shot supernet (Zhao et al. 2021): one :class:`NB201Supernet` per operation on one edge.

    Splitting the one-shot supernet on ``edge`` gives five sub-supernets; the
    paths of each carry one fixed operation there, so they share weights only
    with paths of that operation. ``part(code)`` is the sub-supernet that holds
    ``code``'s path; :func:`inherit` takes the weights from it.
    """

    def __init__(self, *, edge: int, channels: int = 8, cells_per_stage: int = 1, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        if not 0 <= edge < len(EDGES):
            raise ValueError(f"a few-shot split needs an edge 0-{len(EDGES) - 1}, got {edge}")
        self.edge = edge
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.parts = nn.ModuleList(
            NB201Supernet(channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                          in_channels=in_channels) for _ in OPERATIONS)

    def part(self, code: str | Sequence[int]) -> NB201Supernet:
        return self.parts[int(code[self.edge])]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, code: str | Sequence[int]) -> torch.Tensor:
        return self.part(code)(x, code)


def inherit(supernet: NB201Supernet | FewShotSupernet, code: str) -> NB201Network:
    """The stand-alone network of ``code`` with the supernet's weights (copies; BN statistics included)."""
    if isinstance(supernet, FewShotSupernet):
        supernet = supernet.part(code)
    net = NB201Network(code, channels=supernet.channels, cells_per_stage=supernet.cells_per_stage,
                       num_classes=supernet.num_classes, in_channels=supernet.in_channels)
    ops = [OPERATIONS.index(op) for op in net.ops]
    source = supernet.state_dict()
    state = {}
    for key in net.state_dict():
        parts = key.split(".")
        if parts[0] == "cells" and isinstance(net.cells[int(parts[1])], NB201Cell) and parts[2] == "edges":
            k = int(parts[3])
            key_in_supernet = ".".join([*parts[:4], "candidates", str(ops[k]), *parts[4:]])
        else:
            key_in_supernet = key
        state[key] = source[key_in_supernet].detach().clone()
    net.load_state_dict(state, strict=True)
    return net.to(next(supernet.parameters()).device)
