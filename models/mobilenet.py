"""The MobileNetV3-like network of the ``mbv3`` space (Once-for-All / CoLLM-NAS) in plain PyTorch.

Layout, following OFA's MobileNetV3 space at width multiplier 1.0:

* stem: 3x3 conv, 16 channels, stride ``stem_stride`` (2), BN, h-swish;
* first block: depthwise 3x3 + linear 1x1 projection, 16 channels, residual;
* 5 searchable stages of MBConv layers, widths 24/40/80/112/160, strides
  2/2/2/1/2 (on the stage's first layer), activations ReLU, ReLU, h-swish,
  h-swish, h-swish, squeeze-and-excitation in stages 2, 4 and 5; each stage
  has 2-4 layers and every layer its own kernel (3/5/7) and expansion (3/4/6);
* head: 1x1 conv to 960 + BN + h-swish, global pooling, 1x1 conv to 1280 +
  h-swish, dropout, linear classifier.

An MBConv layer is 1x1 expansion (to ``make_divisible(expansion x input
channels)``) + BN + act, depthwise k x k (stride) + BN + act, optional SE,
1x1 projection + BN; it adds its input when stride is 1 and the channels
match. ``width_mult`` scales every width (rounded to multiples of 8), which
keeps small versions for quick training; ``stem_stride=1`` keeps more
resolution on 32x32 images.

    space = SPACES.resolve("mbv3")
    net = MobileNetV3Net(space.decode(code), num_classes=10)
    net = MobileNetV3Net(MBV3Arch.largest(), num_classes=1000)   # the space's largest network
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from collm_nas.core.errors import UserError
from collm_nas.models.family import NetworkFamily

__all__ = [
    "DEPTH_OPTIONS",
    "EXPAND_OPTIONS",
    "KERNEL_OPTIONS",
    "MBConv",
    "MBV3Arch",
    "MBV3_NETWORK",
    "MobileNetV3Net",
    "SqueezeExcite",
    "make_divisible",
]

N_STAGES = 5
DEPTH_OPTIONS = (2, 3, 4)
KERNEL_OPTIONS = (3, 5, 7)
EXPAND_OPTIONS = (3, 4, 6)
MAX_DEPTH = max(DEPTH_OPTIONS)

STEM_WIDTH = 16
STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTIVATIONS = ("relu", "relu", "hswish", "hswish", "hswish")
STAGE_SE = (False, True, False, True, True)
FINAL_EXPAND_WIDTH = 960
FEATURE_WIDTH = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, at least ``divisor``, never below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def depth_name(stage: int) -> str:
    return f"s{stage}_depth"


def kernel_name(stage: int, layer: int) -> str:
    return f"s{stage}_l{layer}_kernel"


def expand_name(stage: int, layer: int) -> str:
    return f"s{stage}_l{layer}_expand"


@dataclass(frozen=True)
class MBV3Arch:
    """One architecture of the space: per stage its depth and per layer (kernel, expansion).

    ``kernels[s]`` and ``expands[s]`` hold exactly ``depths[s]`` entries.
    """

    depths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.depths) != N_STAGES or len(self.kernels) != N_STAGES or len(self.expands) != N_STAGES:
            raise UserError(f"an mbv3 architecture has {N_STAGES} stages of depths, kernels and expansions")
        for s, (d, ks, es) in enumerate(zip(self.depths, self.kernels, self.expands), start=1):
            if d not in DEPTH_OPTIONS:
                raise UserError(f"stage {s} has depth {d}; choose one of {DEPTH_OPTIONS}")
            if len(ks) != d or len(es) != d:
                raise UserError(f"stage {s} has depth {d} but {len(ks)} kernels and {len(es)} expansions")
            for k in ks:
                if k not in KERNEL_OPTIONS:
                    raise UserError(f"stage {s} has kernel {k}; choose one of {KERNEL_OPTIONS}")
            for e in es:
                if e not in EXPAND_OPTIONS:
                    raise UserError(f"stage {s} has expansion {e}; choose one of {EXPAND_OPTIONS}")

    @classmethod
    def from_choice(cls, choice: Mapping[str, object]) -> MBV3Arch:
        """From a decoded architecture (``{"s1_depth": "3", "s1_l1_kernel": "5", ...}``)."""
        def get(name: str) -> int:
            if name not in choice:
                raise UserError(f"mbv3 architecture misses decision '{name}'")
            try:
                return int(str(choice[name]))
            except ValueError:
                raise UserError(f"decision '{name}' must be a number, got '{choice[name]}'") from None

        depths, kernels, expands = [], [], []
        for s in range(1, N_STAGES + 1):
            d = get(depth_name(s))
            depths.append(d)
            kernels.append(tuple(get(kernel_name(s, i)) for i in range(1, d + 1)))
            expands.append(tuple(get(expand_name(s, i)) for i in range(1, d + 1)))
        return cls(tuple(depths), tuple(kernels), tuple(expands))

    @classmethod
    def from_ncode(cls, ncode: str) -> MBV3Arch:
        from collm_nas.spaces.mbv3 import mbv3_space

        return cls.from_choice(mbv3_space().decode(ncode))

    def to_choice(self) -> dict[str, str]:
        """The decoded form (active decisions only), which ``mbv3`` encodes to an NCode."""
        out: dict[str, str] = {}
        for s, (d, ks, es) in enumerate(zip(self.depths, self.kernels, self.expands), start=1):
            out[depth_name(s)] = str(d)
            for i, (k, e) in enumerate(zip(ks, es), start=1):
                out[kernel_name(s, i)] = str(k)
                out[expand_name(s, i)] = str(e)
        return out

    @classmethod
    def uniform(cls, depth: int, kernel: int, expand: int) -> MBV3Arch:
        """Every stage at ``depth`` layers of the same kernel and expansion."""
        return cls((depth,) * N_STAGES, ((kernel,) * depth,) * N_STAGES, ((expand,) * depth,) * N_STAGES)

    @classmethod
    def smallest(cls) -> MBV3Arch:
        return cls.uniform(min(DEPTH_OPTIONS), min(KERNEL_OPTIONS), min(EXPAND_OPTIONS))

    @classmethod
    def largest(cls) -> MBV3Arch:
        return cls.uniform(MAX_DEPTH, max(KERNEL_OPTIONS), max(EXPAND_OPTIONS))


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.Hardswish(inplace=True)


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation (``None``: no activation)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu") -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act is not None:
            layers.append(_activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from globally pooled features (reduction 4, hard sigmoid)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = make_divisible(channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Inverted-residual layer: [1x1 expand] -> depthwise k x k -> [SE] -> 1x1 project (+ input)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand: int,
                 act: str = "relu", se: bool = False) -> None:
        super().__init__()
        mid = make_divisible(round(c_in * expand)) if expand != 1 else c_in
        self.expand = ConvBNAct(c_in, mid, 1, act=act) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(mid, mid, kernel_size, stride=stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid) if se else nn.Identity()
        self.project = ConvBNAct(mid, c_out, 1, act=None)
        self.residual = stride == 1 and c_in == c_out
        self.kernel_size, self.expand_ratio, self.stride = kernel_size, expand, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.residual else out


class MobileNetV3Net(nn.Module):
    """The network of one ``mbv3`` architecture.

    Args:
        arch: an :class:`MBV3Arch`, a decoded architecture of the ``mbv3``
            space (``{decision: option}``) or its NCode.
        num_classes: classifier outputs (1000 for ImageNet).
        in_channels: image channels.
        width_mult: scales every width (1.0 is OFA's network).
        stem_stride: stride of the stem (2; 1 suits 32x32 images).
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        arch: MBV3Arch | Mapping[str, object] | str,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(arch, str):
            arch = MBV3Arch.from_ncode(arch)
        elif not isinstance(arch, MBV3Arch):
            arch = MBV3Arch.from_choice(arch)
        if width_mult <= 0 or num_classes < 1 or in_channels < 1 or stem_stride not in (1, 2):
            raise UserError(
                f"MobileNetV3 network needs width_mult > 0, classes >= 1, in_channels >= 1 and stem stride 1 or 2; "
                f"got {width_mult}, {num_classes}, {in_channels}, {stem_stride}"
            )
        self.arch = arch

        def w(c: int) -> int:
            return make_divisible(c * width_mult)

        stem = w(STEM_WIDTH)
        self.stem = ConvBNAct(in_channels, stem, 3, stride=stem_stride, act="hswish")
        self.first_block = MBConv(stem, stem, 3, 1, expand=1, act="relu")
        stages: list[nn.Module] = []
        c_in = stem
        for s in range(N_STAGES):
            width = w(STAGE_WIDTHS[s])
            layers = []
            for i, (k, e) in enumerate(zip(arch.kernels[s], arch.expands[s])):
                layers.append(MBConv(c_in, width, k, STAGE_STRIDES[s] if i == 0 else 1, e,
                                     act=STAGE_ACTIVATIONS[s], se=STAGE_SE[s]))
                c_in = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        final = w(FINAL_EXPAND_WIDTH)
        feature = w(FEATURE_WIDTH)
        self.final_expand = ConvBNAct(c_in, final, 1, act="hswish")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = nn.Sequential(nn.Conv2d(final, feature, 1, bias=False), nn.Hardswish(inplace=True))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(feature, num_classes)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.out_channels = feature

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier, shape ``(batch, feature width)``."""
        x = self.final_expand(self.stages(self.first_block(self.stem(x))))
        return torch.flatten(self.feature_mix(self.pool(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


def _mbv3_options(config, input_shape):
    """A training run's settings as the network's: width, dropout, and a stem stride of 1 for images up to
    64 pixels (2 above) unless the run sets it."""
    stem = config.stem_stride or (1 if max(input_shape[1:]) <= 64 else 2)
    return {"width_mult": config.width_mult, "stem_stride": stem, "dropout": config.dropout}


# The mbv3 space's network (spaces/mbv3.yaml names it).
MBV3_NETWORK = NetworkFamily("mbv3", MobileNetV3Net, options=("width_mult", "stem_stride", "dropout"),
                             from_train=_mbv3_options,
                             describe=lambda config: f"MobileNetV3 network width x{config.width_mult:g}",
                             takes="ncode")
