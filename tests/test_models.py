"""Networks of the built-in spaces: forward shapes, the mbv3 space, and FLOPs / parameters
against NAS-Bench-201's own figures."""

from __future__ import annotations

import random

import pytest
import torch

from collm_nas.core.errors import UserError
from collm_nas.evaluators import load_table
from collm_nas.models import (
    MBV3Arch,
    MobileNetV3Net,
    NB201Network,
    build_network,
    count_flops,
    count_macs,
    count_parameters,
    measure_latency,
    profile_model,
)
from collm_nas.models.mobilenet import MBConv
from collm_nas.spaces import NB201Space, SPACES, load_space_file
from collm_nas.spaces.mbv3 import MBV3_FILE

torch.set_num_threads(1)

# The table's figures: (params in millions, millions of multiply-accumulates) per data set
# network: CIFAR-10 (10 classes, 32x32), CIFAR-100 (100, 32x32), ImageNet16-120 (120, 16x16).
TABLE_SETTINGS = (("cifar10", 10, 32), ("cifar100", 100, 32), ("imagenet16", 120, 16))


# ---------------------------------------------------------------- NB201 network
@pytest.mark.parametrize("arch", ["333132", "000001", "444444", "111111", "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|"
                                  "+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"])
@pytest.mark.parametrize("in_channels,size,classes", [(3, 32, 10), (1, 16, 10), (3, 16, 120)])
def test_nb201_forward_shapes(arch: str, in_channels: int, size: int, classes: int) -> None:
    net = NB201Network(arch, channels=4, cells_per_stage=1, num_classes=classes, in_channels=in_channels)
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()
    assert net.features(torch.randn(3, in_channels, size, size)).shape == (3, 16)  # 4C channels


def test_nb201_structure_follows_the_benchmark() -> None:
    net = NB201Network("333132", channels=16, cells_per_stage=5)
    cells = [m for m in net.cells if type(m).__name__ == "NB201Cell"]
    reductions = [m for m in net.cells if type(m).__name__ == "ResNetReduction"]
    assert len(cells) == 15 and len(reductions) == 2
    assert net.arch_string == NB201Space().format_arch("333132")
    # one way in, every form of the architecture gives the same network
    same = [NB201Network(a) for a in ("333132", NB201Space().format_arch("333132"), NB201Space().decode("333132"),
                                      list(NB201Space().decode("333132").values()))]
    assert {count_parameters(n) for n in same} == {count_parameters(net)}


def test_nb201_refuses_bad_architectures_in_one_line() -> None:
    for bad in ("33313", "33313x", "|nor_conv_3x3~0|", ["nor_conv_3x3"] * 5, ["conv"] * 6):
        with pytest.raises(UserError) as err:
            NB201Network(bad)
        assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def table(table_path: str):
    return load_table(table_path)


def _table_codes(table) -> list[str]:
    fixed = ["333132", "333333", "111111", "444444", "020304", "223133", "333133", "100000"]
    return fixed + random.Random(201).sample(sorted(table.rows), 4)


@pytest.mark.e2e
def test_nb201_params_and_flops_match_the_table(table) -> None:
    """Parameters equal the table's; FlopCounterMode MACs (FLOPs / 2) equal the table's
    flops_m less the classifier's bias additions, which the table counts (one per class)."""
    for code in _table_codes(table):
        for dataset, classes, size in TABLE_SETTINGS:
            net = NB201Network(code, num_classes=classes)
            params_m = count_parameters(net) / 1e6
            macs_m = count_macs(net, (3, size, size)) / 1e6
            assert params_m == pytest.approx(table.value(code, f"params_mb_{dataset}"), abs=1e-6), (code, dataset)
            table_flops = table.value(code, f"flops_m_{dataset}")
            assert macs_m + classes / 1e6 == pytest.approx(table_flops, abs=2e-5), (code, dataset, macs_m)
            assert abs(macs_m - table_flops) / table_flops < 2e-4


def test_pooling_is_counted_only_when_asked() -> None:
    net = NB201Network("444444", channels=16, cells_per_stage=5)
    plain = count_flops(net, (3, 32, 32))
    pooled = count_flops(net, (3, 32, 32), count_pooling=True)
    # every cell: 6 pooling edges of 9 multiply-accumulates per output; plus the two reduction shortcuts (2x2)
    cells = sum(6 * 9 * c * s * s for c, s in ((16, 32), (32, 16), (64, 8))) * 5
    shortcuts = 16 * 16 * 16 * 4 + 32 * 8 * 8 * 4
    assert pooled - plain == 2 * (cells + shortcuts)
    cost = profile_model(net, (3, 32, 32))
    assert cost.flops == plain and cost.macs == plain // 2 and cost.params == count_parameters(net)


def test_latency_is_measured() -> None:
    net = NB201Network("333132", channels=4, cells_per_stage=1)
    ms = measure_latency(net, (3, 16, 16), repeats=3, warmup=1)
    assert 0 < ms < 1000 and net.training  # the mode the network was in comes back


# ----------------------------------------------------------------- mbv3 space
def test_mbv3_space_is_a_yaml_space_loaded_by_the_loader() -> None:
    space = SPACES.resolve("mbv3")
    from_file = load_space_file(MBV3_FILE)
    assert space.name == from_file.name == "mbv3" and space.length == from_file.length == 45
    assert [d.name for d in space.decisions] == [d.name for d in from_file.decisions]
    assert space.decision("s3_depth").options == ("2", "3", "4")
    assert space.decision("s3_l2_kernel").options == ("3", "5", "7")
    assert space.decision("s3_l2_expand").options == ("3", "4", "6")
    assert dict(space.decision("s3_l3_kernel").active_if) == {"s3_depth": ("3", "4")}
    assert dict(space.decision("s3_l4_expand").active_if) == {"s3_depth": ("4",)}
    assert space.size_bound() == (3 * 9 ** 4) ** 5


def test_mbv3_inactive_layers_are_canonical_zeros() -> None:
    space = SPACES.resolve("mbv3")
    arch = MBV3Arch.uniform(2, 7, 6)  # every stage 2 layers: layers 3 and 4 inactive
    code = space.encode(arch.to_choice())
    for s in range(5):
        stage = code[9 * s: 9 * (s + 1)]
        assert stage == "0" + "22" * 2 + "0000"
    assert space.format_problems(code) == []
    touched = code[:5] + "1" + code[6:]  # layer 3 of stage 1 set while its depth is 2
    assert [p.kind for p in space.format_problems(touched)] == ["inactive"]
    assert space.parse_arch(space.format_arch(code)) == code
    assert MBV3Arch.from_ncode(code) == arch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mbv3_forward_shapes_and_layers_follow_the_code(seed: int) -> None:
    space = SPACES.resolve("mbv3")
    code = space.sample(random.Random(seed))
    arch = MBV3Arch.from_ncode(code)
    net = MobileNetV3Net(space.decode(code), num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    for s, stage in enumerate(net.stages):
        layers = [m for m in stage if isinstance(m, MBConv)]
        assert len(layers) == arch.depths[s]
        assert [m.kernel_size for m in layers] == list(arch.kernels[s])
        assert [m.expand_ratio for m in layers] == list(arch.expands[s])
        assert [m.depthwise[0].kernel_size[0] for m in layers] == list(arch.kernels[s])


def test_mbv3_full_size_network_matches_ofa() -> None:
    """OFA's MobileNetV3 space at width 1.0 and 224x224: about 3.4M-7.7M parameters and
    120-570M multiply-accumulates from its smallest to its largest network."""
    small, large = MobileNetV3Net(MBV3Arch.smallest()), MobileNetV3Net(MBV3Arch.largest())
    assert small(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    p_small, p_large = count_parameters(small), count_parameters(large)
    assert 3.3e6 < p_small < 3.5e6 and 7.5e6 < p_large < 7.8e6
    m_small, m_large = count_macs(small, (3, 224, 224)), count_macs(large, (3, 224, 224))
    assert 110e6 < m_small < 130e6 and 550e6 < m_large < 580e6
    # every larger choice costs more: depth, kernel, expansion
    base = count_macs(MobileNetV3Net(MBV3Arch.uniform(3, 5, 4), width_mult=0.5), (3, 64, 64))
    for arch in (MBV3Arch.uniform(4, 5, 4), MBV3Arch.uniform(3, 7, 4), MBV3Arch.uniform(3, 5, 6)):
        assert count_macs(MobileNetV3Net(arch, width_mult=0.5), (3, 64, 64)) > base


def test_build_network_dispatches_by_space_and_checks_options() -> None:
    nb = build_network("nb201", "333132", num_classes=5, in_channels=1, channels=4, cells_per_stage=1)
    assert isinstance(nb, NB201Network) and nb(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    code = SPACES.resolve("mbv3").encode(MBV3Arch.smallest().to_choice())
    mb = build_network(SPACES.resolve("mbv3"), code, num_classes=3, width_mult=0.25)
    assert isinstance(mb, MobileNetV3Net) and mb(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(UserError, match="no option"):
        build_network("nb201", "333132", num_classes=10, width_mult=0.5)
    with pytest.raises(UserError, match="no network for space 'tiny'"):
        build_network("tiny", "0", num_classes=10)
    with pytest.raises(UserError):
        MBV3Arch((2, 2, 2, 2, 2), ((3, 3),) * 5, ((3, 3),) * 4 + ((3, 5),))


def test_a_space_file_and_a_network_file_make_a_trainable_space(tmp_path) -> None:
    """A new trainable space touches two files: its space file names its network file's NetworkFamily."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_network import SPACE_YAML, TinyNet

    from collm_nas.evaluators import EVALUATORS

    spec = tmp_path / "tinyconv.yaml"
    spec.write_text(SPACE_YAML, encoding="utf-8")
    space = SPACES.resolve(str(spec))
    assert space.network == "tiny_network:NETWORK" and space.to_dict()["network"] == "tiny_network:NETWORK"
    assert isinstance(build_network(space, "21", num_classes=3, in_channels=1), TinyNet)
    evaluator = EVALUATORS.resolve("train", space, dataset="digits",
                                   options={"epochs": 1, "device": "cpu", "latency_repeats": 0})
    assert "tiny conv network trained 1 epochs on digits" in evaluator.metric_note
    (trial,) = evaluator.evaluate(["21"])
    assert trial.status == "ok" and trial.metrics["valid_acc"] > 0 and trial.metrics["params"] == 16 * 1 * 9 + 16 + 16 * 10 + 10
