"""A user's trainable space, as a newcomer writes one: this network file plus a space file naming it
(``network: tiny_network:NETWORK``)."""

from __future__ import annotations

from torch import nn

from collm_nas.models import NetworkFamily


class TinyNet(nn.Module):
    """One conv layer of the chosen width and kernel, pooled, then a linear classifier."""

    def __init__(self, arch, *, num_classes: int, in_channels: int = 3, scale: int = 1) -> None:
        super().__init__()
        width, kernel = int(arch["width"]) * scale, int(arch["kernel"])
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, kernel, padding=kernel // 2), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


NETWORK = NetworkFamily("tiny", TinyNet, options=("scale",),
                        from_train=lambda config, input_shape: {"scale": 1},
                        describe=lambda config: "tiny conv network")

SPACE_YAML = """
name: tinyconv
network: tiny_network:NETWORK
decisions:
  - name: width
    options: [4, 8, 16]
  - name: kernel
    options: [1, 3]
"""
