"""A space's trainable network: what the train and proxy evaluators build for an architecture.

A space names its network family (``SearchSpace.network``: ``module.path:attribute``); a new trainable space
is its space file plus its network file, with a :class:`NetworkFamily` in it::

    NETWORK = NetworkFamily("my net", MyNet, options=("width",),
                            from_train=lambda config, input_shape: {"width": config.channels},
                            describe=lambda config: f"my net of width {config.channels}")

``MyNet(arch, *, num_classes, in_channels, **options)`` gets the architecture as the space's decoded choices
(``{"width": "64", ...}``), or as its NCode with ``takes="ncode"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from collm_nas.core.errors import UserError
from collm_nas.core.registry import import_attribute


@dataclass(frozen=True)
class NetworkFamily:
    """The networks of one space: how to build one, which options it takes, how training settings map to them."""

    label: str
    network: Callable[..., nn.Module]  # network(arch, *, num_classes, in_channels, **options)
    options: tuple[str, ...] = ()
    # The options a training run gives the network, from its settings (a TrainConfig) and input shape (C, H, W).
    from_train: Callable[[Any, Sequence[int]], dict[str, Any]] = lambda config, input_shape: {}
    describe: Callable[[Any], str] | None = None  # the network in words, for the run's metric note
    takes: str = "choices"  # how the network takes an architecture: "choices" (decoded) or "ncode"

    def build(self, arch: str | Mapping[str, Any], *, num_classes: int, in_channels: int = 3, space: Any = None,
              **options: Any) -> nn.Module:
        """The network of ``arch`` (an NCode, decoded with ``space`` when the network takes choices)."""
        if isinstance(arch, str) and self.takes == "choices":
            if space is None:
                raise ValueError(f"the {self.label} network takes decoded choices: give the space to decode {arch}")
            arch = space.decode(arch)
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise UserError(f"the {self.label} network has no option(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(self.options) or 'none'}")
        return self.network(arch, num_classes=num_classes, in_channels=in_channels, **options)

    def for_training(self, arch: str | Mapping[str, Any], config: Any, *, num_classes: int,
                     input_shape: Sequence[int], space: Any = None) -> nn.Module:
        """The network of ``arch`` as a training run with settings ``config`` builds it."""
        return self.build(arch, num_classes=num_classes, in_channels=int(input_shape[0]), space=space,
                          **self.from_train(config, input_shape))

    def words(self, config: Any) -> str:
        return self.describe(config) if self.describe is not None else f"{self.label} network"


def network_of(space: Any) -> NetworkFamily:
    """The network family a space names; a one-line UserError when it names none (or a wrong thing)."""
    name = getattr(space, "name", str(space))
    target = getattr(space, "network", None)
    if not target:
        raise UserError(f"no network for space '{name}': its definition names none (network: module.path:attribute "
                        "of a collm_nas.models.NetworkFamily); score it with --evaluator module.path:function")
    family = import_attribute(target, f"network of space '{name}'")
    if not isinstance(family, NetworkFamily):
        raise UserError(f"the network of space '{name}' ({target}) is a {type(family).__name__}, not a "
                        "collm_nas.models.NetworkFamily")
    return family
