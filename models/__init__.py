"""Networks of the built-in search spaces in plain PyTorch, and how to measure them.

* :class:`NB201Network` (``nb201``): the NAS-Bench-201 cell network;
* :class:`MobileNetV3Net` (``mbv3``): the Once-for-All MobileNetV3-like network;
* :func:`build_network`: the network of an NCode or decoded architecture of
  either space;
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

from collm_nas.core.errors import UserError
from collm_nas.models.measure import (
    ModelCost,
    count_flops,
    count_macs,
    count_parameters,
    measure_latency,
    profile_model,
)
from collm_nas.models.mobilenet import MBV3Arch, MobileNetV3Net
from collm_nas.models.nb201_net import NB201Network, nb201_ops

# Per space: the network class and the options build_network passes on.
NETWORKS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "nb201": (NB201Network, ("channels", "cells_per_stage")),
    "mbv3": (MobileNetV3Net, ("width_mult", "stem_stride", "dropout")),
}


def build_network(
    space: Any,
    arch: str | Mapping[str, Any],
    *,
    num_classes: int,
    in_channels: int = 3,
    **options: Any,
) -> nn.Module:
    """The network of ``arch`` (an NCode or a decoded architecture) in ``space`` (a name or a SearchSpace).

    ``options`` are the network's own settings: ``channels`` and
    ``cells_per_stage`` for ``nb201``; ``width_mult``, ``stem_stride`` and
    ``dropout`` for ``mbv3``. Options of the other space are refused.
    """
    name = space if isinstance(space, str) else getattr(space, "name", str(space))
    if name not in NETWORKS:
        raise UserError(f"no network for space '{name}'; networks exist for {', '.join(NETWORKS)}")
    cls, allowed = NETWORKS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"the {name} network has no option(s) {', '.join(unknown)}; it takes {', '.join(allowed)}")
    return cls(arch, num_classes=num_classes, in_channels=in_channels, **options)


__all__ = [
    "NETWORKS",
    "MBV3Arch",
    "MobileNetV3Net",
    "ModelCost",
    "NB201Network",
    "build_network",
    "count_flops",
    "count_macs",
    "count_parameters",
    "measure_latency",
    "nb201_ops",
    "profile_model",
]
