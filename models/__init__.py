"""Networks of the built-in search spaces in plain PyTorch, and how to measure them.

* :class:`NB201Network` (``nb201``): the NAS-Bench-201 cell network;
* :class:`MobileNetV3Net` (``mbv3``): the Once-for-All MobileNetV3-like network;
* :class:`NB201Supernet` (:mod:`.nb201_supernet`): the weight-sharing NB201 supernet;
* :class:`NetworkFamily` (:mod:`.family`): a space's networks, named by the space (``SearchSpace.network``);
  :func:`build_network` builds the network of an NCode or decoded architecture of any space that names one;
* :mod:`collm_nas.models.measure`: parameters, FLOPs (``torch.utils.flop_counter``)
  and inference latency.

    from collm_nas.models import build_network, profile_model
    net = build_network("nb201", "333132", num_classes=10)
    cost = profile_model(net, (3, 32, 32))      # cost.params, cost.flops, cost.flops_m
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from collm_nas.models.measure import (
    ModelCost,
    count_flops,
    count_macs,
    count_parameters,
    measure_latency,
    profile_model,
)
from collm_nas.models.family import NetworkFamily, network_of
from collm_nas.models.mobilenet import MBV3_NETWORK, MBV3Arch, MobileNetV3Net
from collm_nas.models.nb201_net import NB201_NETWORK, NB201Network, nb201_ops
from collm_nas.models.nb201_supernet import NB201Supernet, inherit

def build_network(
    space: Any,
    arch: str | Mapping[str, Any],
    *,
    num_classes: int,
    in_channels: int = 3,
    **options: Any,
) -> nn.Module:
    """The network of ``arch`` (an NCode or a decoded architecture) in ``space`` (a name or a SearchSpace).

    ``options`` are the network's own settings (``channels`` and ``cells_per_stage`` for ``nb201``;
    ``width_mult``, ``stem_stride`` and ``dropout`` for ``mbv3``); others are refused in one line.
    """
    if isinstance(space, str):
        from collm_nas.spaces import SPACES

        space = SPACES.resolve(space) if space in SPACES or ":" in space else _Named(space)
    return network_of(space).build(arch, num_classes=num_classes, in_channels=in_channels, space=space, **options)


class _Named:
    """A space known only by a name that is not registered (it names no network)."""

    network = None

    def __init__(self, name: str) -> None:
        self.name = name


__all__ = [
    "MBV3_NETWORK",
    "NB201_NETWORK",
    "MBV3Arch",
    "MobileNetV3Net",
    "ModelCost",
    "NB201Network",
    "NB201Supernet",
    "NetworkFamily",
    "build_network",
    "count_flops",
    "count_macs",
    "count_parameters",
    "inherit",
    "measure_latency",
    "nb201_ops",
    "network_of",
    "profile_model",
]
