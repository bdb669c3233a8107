"""Search spaces: NB201 NCode, user spaces from YAML/JSON, and loader errors."""

from __future__ import annotations

import itertools
import json
import random
import textwrap

import pytest
import yaml

from collm_nas.core.errors import UserError
from collm_nas.spaces import NB201Space, SPACES, load_space_file, parse_constraints, space_from_dict
from collm_nas.spaces.nb201 import EDGES, OPERATIONS
from collm_nas.tools import ValidityChecker

BEST_CIFAR10_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


# =============================================================== NB201 NCode
@pytest.fixture(scope="module")
def nb201() -> NB201Space:
    return NB201Space()


def test_nb201_shape(nb201):
    assert nb201.length == 6
    assert nb201.cardinality() == 5**6 == 15625
    assert [d.name for d in nb201.decisions] == [
        "edge_1<-0", "edge_2<-0", "edge_2<-1", "edge_3<-0", "edge_3<-1", "edge_3<-2",
    ]
    assert all(d.options == OPERATIONS for d in nb201.decisions)


def test_nb201_round_trip_for_every_architecture(nb201, nb201_evaluator):
    """parse_arch(format_arch(c)) == c, the string is the table's own, decode/encode round trip."""
    table_strings = nb201_evaluator.table.arch_strings
    codes = list(nb201.enumerate())
    assert len(codes) == len(set(codes)) == 15625
    assert set(codes) == set(table_strings)
    for code in codes:
        arch = nb201.format_arch(code)
        assert arch == table_strings[code], code
        assert nb201.parse_arch(arch) == code
        assert nb201.encode(nb201.decode(code)) == code


def test_nb201_digits_and_edge_order(nb201):
    # Digits 0-4 are the operations in this order.
    assert OPERATIONS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    # A hand-written example: node 1 <- conv3x3(0); node 2 <- conv3x3(0), conv3x3(1);
    # node 3 <- skip(0), conv3x3(1), conv1x1(2).
    assert nb201.parse_arch(BEST_CIFAR10_ARCH) == "333132"
    assert nb201.format_arch("333132") == BEST_CIFAR10_ARCH
    # Every digit of each position means the same operation on the same edge.
    assert nb201.decode("012340") == {
        "edge_1<-0": "none",
        "edge_2<-0": "skip_connect",
        "edge_2<-1": "nor_conv_1x1",
        "edge_3<-0": "nor_conv_3x3",
        "edge_3<-1": "avg_pool_3x3",
        "edge_3<-2": "none",
    }
    assert nb201.format_arch("401234") == (
        "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    )
    # Whitespace around a string is tolerated.
    assert nb201.parse_arch("  " + BEST_CIFAR10_ARCH + "\n") == "333132"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not an architecture",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",  # two nodes
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|+|none~0|",
        "nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # bar
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # edge count
        "|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # src
        "|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # order
        "|conv_5x5~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # op
        "|Nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
        "|nor_conv_3x3|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # no ~
    ],
)
def test_nb201_malformed_strings_raise_user_error(nb201, text):
    with pytest.raises(UserError) as err:
        nb201.parse_arch(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("code", ["33333", "3333333", "33x333", "339333", "", "33 333"])
def test_nb201_decode_rejects_malformed_codes(nb201, code):
    with pytest.raises(UserError, match="malformed NCode"):
        nb201.decode(code)


def test_nb201_neighbours_and_mutate(nb201):
    ns = nb201.neighbours("333132")
    assert len(ns) == len(set(ns)) == 6 * 4
    assert all(sum(a != b for a, b in zip(n, "333132")) == 1 for n in ns)
    rng = random.Random(0)
    for _ in range(200):
        code = nb201.sample(rng)
        child = nb201.mutate(code, rng)
        assert sum(a != b for a, b in zip(code, child)) == 1


def test_nb201_describe_mentions_ncode_and_rule(nb201):
    text = nb201.describe(["params_mb<=1"])
    assert "15,625 architectures" in text
    assert "exactly 6 characters" in text
    for d in nb201.decisions:
        assert d.name in text
    assert "0=none" in text and "4=avg_pool_3x3" in text
    assert "degenerate" in text
    assert "params_mb<=1" in text


def test_get_space():
    assert isinstance(SPACES.resolve("nb201"), NB201Space)
    with pytest.raises(UserError, match="unknown space 'nb999'"):
        SPACES.resolve("nb999")


# ================================================================ user space
TOY_YAML = textwrap.dedent(
    """\
    name: toy
    description: A small space with a wide decision and conditional ones.
    decisions:
      - name: width
        description: channels of the stem
        options: [w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11]
        costs:
          params: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
      - name: block
        options: [conv, attn, none]
        costs:
          params: [1.0, 2.0, 0.0]
          latency: [3.0, 5.0, 0.0]
      - name: heads
        options: [1, 2, 4, 8]
        active_if: {block: [attn]}
        costs:
          params: [0.1, 0.2, 0.4, 0.8]
      - name: head_dim
        options: [32, 64]
        active_if: {heads: [8]}
        costs:
          params: [0.5, 1.0]
      - name: act
        options: [relu, gelu]
    base_costs:
      params: 0.5
      latency: 2.0
    constraints: ["params<=4.0"]
    """
)
TOY_NAMES = ["width", "block", "heads", "head_dim", "act"]


def toy_brute_force() -> set[str]:
    """Every canonical code of the toy space, written out by hand (independent of the library)."""
    codes = set()
    width_chars = "0123456789ab"
    for w in width_chars:
        for act in "01":
            codes.add(f"{w}00{0}{act}")  # conv: heads/head_dim inactive
            codes.add(f"{w}20{0}{act}")  # none
            for heads in "012":  # attn with heads 1/2/4: head_dim inactive
                codes.add(f"{w}1{heads}0{act}")
            for hd in "01":  # attn with heads 8: head_dim active
                codes.add(f"{w}13{hd}{act}")
    return codes


def toy_active(code: str) -> set[int]:
    """Active positions of a toy code (hand-written rule)."""
    active = {0, 1, 4}
    if code[1] == "1":
        active.add(2)
        if code[2] == "3":
            active.add(3)
    return active


@pytest.fixture(params=["yaml", "json"])
def toy_space(request, tmp_path):
    if request.param == "yaml":
        path = tmp_path / "toy.yaml"
        path.write_text(TOY_YAML, encoding="utf-8")
    else:
        path = tmp_path / "toy.json"
        path.write_text(json.dumps(yaml.safe_load(TOY_YAML)), encoding="utf-8")
    space = load_space_file(path)
    assert SPACES.resolve(str(path)).to_dict() == space.to_dict()
    return space


def test_user_space_definition(toy_space):
    assert toy_space.name == "toy"
    assert [d.name for d in toy_space.decisions] == TOY_NAMES
    assert toy_space.decision("heads").options == ("1", "2", "4", "8")
    assert toy_space.has_conditions
    assert toy_space.default_constraints == ("params<=4.0",)
    assert toy_space.cost_names == {"params", "latency"}
    # The definition survives a round trip through plain data.
    assert space_from_dict(toy_space.to_dict()).to_dict() == toy_space.to_dict()


def test_user_space_letters_beyond_ten_options(toy_space):
    assert toy_space.encode({"width": "w10", "block": "conv", "act": "relu"}) == "a0000"
    assert toy_space.encode({"width": "w11", "block": "conv", "act": "relu"}) == "b0000"
    assert toy_space.decode("b0000")["width"] == "w11"
    # Upper-case letters are not NCode.
    assert [p.kind for p in toy_space.format_problems("B0000")] == ["character"]
    # 'c' would be option 13: out of range.
    problems = toy_space.format_problems("c0000")
    assert [p.kind for p in problems] == ["character"]
    assert "'0'..'b'" in problems[0].message


def test_user_space_encode_decode_conditional(toy_space):
    full = {"width": "w11", "block": "attn", "heads": "8", "head_dim": "64", "act": "gelu"}
    assert toy_space.encode(full) == "b1311"
    assert toy_space.decode("b1311") == full
    # Inactive decisions are omitted by decode and written 0 by encode (even if given).
    assert toy_space.decode("31000") == {"width": "w3", "block": "attn", "heads": "1", "act": "relu"}
    assert toy_space.encode({"width": "w3", "block": "conv", "heads": "8", "act": "relu"}) == "30000"
    assert toy_space.decode("30000") == {"width": "w3", "block": "conv", "act": "relu"}
    # Option values given as numbers work too.
    assert toy_space.encode({"width": "w0", "block": "attn", "heads": 4, "act": "relu"}) == "01200"
    # An inactive decision written as anything but 0 is not a code of the space.
    for code in ["30200", "31010", "32100"]:
        assert [p.kind for p in toy_space.format_problems(code)] == ["inactive"], code
        with pytest.raises(UserError, match="inactive"):
            toy_space.decode(code)
    # A missing active decision, an unknown decision and an unknown option are refused.
    with pytest.raises(UserError, match="misses decision 'heads'"):
        toy_space.encode({"width": "w0", "block": "attn", "act": "relu"})
    with pytest.raises(UserError, match="unknown decision"):
        toy_space.encode({"width": "w0", "block": "conv", "act": "relu", "colour": "red"})
    with pytest.raises(UserError, match="has no option 'mlp'"):
        toy_space.encode({"width": "w0", "block": "mlp", "act": "relu"})


def test_user_space_arch_text_round_trip(toy_space):
    for code in toy_space.enumerate():
        assert toy_space.parse_arch(toy_space.format_arch(code)) == code
    assert toy_space.format_arch("b1311") == "width=w11, block=attn, heads=8, head_dim=64, act=gelu"
    with pytest.raises(UserError):
        toy_space.parse_arch("width w11")


def test_user_space_canonical_enumeration_and_cardinality(toy_space):
    expected = toy_brute_force()
    codes = list(toy_space.enumerate())
    assert len(codes) == len(set(codes))
    assert set(codes) == expected
    assert toy_space.cardinality() == len(expected) == 168  # 12 widths x 2 acts x (conv, none, attn x 5)
    assert all(not toy_space.format_problems(c) for c in codes)
    assert toy_space.canonical([3, 0, 2, 1, 1]) == "30001"
    assert toy_space.canonical([3, 1, 2, 1, 1]) == "31201"
    assert toy_space.canonical([3, 1, 3, 1, 1]) == "31311"


def test_user_space_costs(toy_space):
    # base 0.5 + width 1.1 + attn 2.0 + heads(8) 0.8 + head_dim(64) 1.0
    assert toy_space.costs("b1311") == pytest.approx({"params": 5.4, "latency": 7.0})
    # Costs of inactive decisions do not count: conv 1.0 + base 0.5 + width 0.3.
    assert toy_space.costs("30000") == pytest.approx({"params": 1.8, "latency": 5.0})
    assert toy_space.costs("02000") == pytest.approx({"params": 0.5, "latency": 2.0})


def test_user_space_default_constraints(toy_space):
    constraints = parse_constraints(toy_space.default_constraints, toy_space.cost_names)
    checker = ValidityChecker(toy_space, constraints)
    assert checker.is_valid("30000")
    assert [p.kind for p in checker.problems("b1311")] == ["constraint"]
    assert "params=5.4 breaks params<=4" in checker.problems("b1311")[0].message
    legal = {c for c in toy_brute_force() if toy_space.costs(c)["params"] <= 4.0}
    assert checker.count_legal() == len(legal)


def test_user_space_neighbours(toy_space):
    all_codes = toy_brute_force()
    for code in sorted(all_codes):
        ns = toy_space.neighbours(code)
        assert len(ns) == len(set(ns)), code
        assert code not in ns
        assert set(ns) <= all_codes  # canonical codes of the space
        # Independently: d is a neighbour iff exactly one decision active in both differs
        # and every decision that d newly activates takes its first option.
        expected = set()
        for other in all_codes - {code}:
            both = toy_active(code) & toy_active(other)
            differ = [p for p in both if code[p] != other[p]]
            fresh = toy_active(other) - toy_active(code)
            if len(differ) == 1 and all(other[p] == "0" for p in fresh):
                expected.add(other)
        assert set(ns) == expected, code
    assert len(toy_space.neighbours("b1311")) == 11 + 2 + 3 + 1 + 1
    assert set(toy_space.neighbours("b1311")) >= {"b0001", "b2001", "b1001", "b1301", "b1310"}


def test_user_space_mutate_and_sample(toy_space):
    all_codes = toy_brute_force()
    rng = random.Random(1)
    seen = set()
    for _ in range(2000):
        code = toy_space.sample(rng)
        assert code in all_codes
        seen.add(code)
        child = toy_space.mutate(code, rng)
        assert child in toy_space.neighbours(code)
    assert len(seen) > 100  # the sampler covers the space
    # A seeded generator gives the same draws.
    a, b = random.Random(7), random.Random(7)
    assert [toy_space.sample(a) for _ in range(20)] == [toy_space.sample(b) for _ in range(20)]


def test_user_space_describe(toy_space):
    text = toy_space.describe(["latency<=6"])
    assert "Search space 'toy': 5 decisions, 168 architectures." in text
    assert "A small space" in text
    assert "NCode" in text and "exactly 5 characters" in text and "(0-9, then a-z)" in text
    for name in TOY_NAMES:
        assert f". {name}: " in text
    assert "a=w10, b=w11" in text
    assert "channels of the stem" in text
    assert "used only when block in {attn}; otherwise write 0" in text
    assert "used only when heads in {8}; otherwise write 0" in text
    assert "params<=4.0" in text and "latency<=6" in text


# ============================================================= loader errors
def _decisions(**extra) -> dict:
    return {"name": "s", "decisions": [{"name": "a", "options": ["x", "y", "z"]}], **extra}


LOADER_ERRORS = [
    # (id, file content as data, fragment the message must contain)
    ("duplicate option", {"name": "s", "decisions": [{"name": "a", "options": ["x", "x"]}]}, "options must be distinct"),
    ("duplicate option after str", {"name": "s", "decisions": [{"name": "a", "options": [1, "1"]}]}, "distinct"),
    ("unknown key top", _decisions(colour="red"), "colour"),
    ("unknown key decision", {"name": "s", "decisions": [{"name": "a", "options": ["x"], "choices": [1]}]},
     "decisions.0.choices"),
    ("no decisions", {"name": "s", "decisions": []}, "decisions"),
    ("no options", {"name": "s", "decisions": [{"name": "a", "options": []}]}, "options"),
    ("missing name", {"decisions": [{"name": "a", "options": ["x"]}]}, "name"),
    ("unknown dependency",
     {"name": "s", "decisions": [{"name": "a", "options": ["x"]},
                                 {"name": "b", "options": ["p"], "active_if": {"ghost": ["x"]}}]},
     "depends on unknown decision 'ghost'"),
    ("later dependency",
     {"name": "s", "decisions": [{"name": "b", "options": ["p"], "active_if": {"a": ["x"]}},
                                 {"name": "a", "options": ["x"]}]},
     "must come before it"),
    ("self dependency", {"name": "s", "decisions": [{"name": "a", "options": ["x"], "active_if": {"a": ["x"]}}]},
     "must come before it"),
    ("dependency on unknown option",
     {"name": "s", "decisions": [{"name": "a", "options": ["x"]},
                                 {"name": "b", "options": ["p"], "active_if": {"a": ["nope"]}}]},
     "has no option 'nope'"),
    ("costs length",
     {"name": "s", "decisions": [{"name": "a", "options": ["x", "y", "z"], "costs": {"params": [1, 2]}}]},
     "gives 2 'params' costs for 3 options"),
    ("too many options", {"name": "s", "decisions": [{"name": "a", "options": [f"o{i}" for i in range(37)]}]},
     "36"),
    ("bad constraint", _decisions(constraints=["params <= lots"]), "bad constraint 'params <= lots'"),
    ("non-finite constraint", _decisions(constraints=["params<=1e999"]), "finite"),
    ("duplicate decision",
     {"name": "s", "decisions": [{"name": "a", "options": ["x"]}, {"name": "a", "options": ["y"]}]},
     "names a decision twice"),
]


@pytest.mark.parametrize("data,fragment", [c[1:] for c in LOADER_ERRORS], ids=[c[0] for c in LOADER_ERRORS])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_loader_errors_are_one_line_user_errors(tmp_path, fmt, data, fragment):
    path = tmp_path / f"space.{fmt}"
    path.write_text(yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_space_file(path)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_exactly_36_options_is_allowed(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump({"name": "wide", "decisions": [{"name": "a", "options": list(range(36))}]}))
    space = load_space_file(path)
    assert space.cardinality() == 36
    assert space.encode({"a": 35}) == "z"


def test_loader_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        load_space_file(tmp_path / "nope.yaml")
    assert "does not exist" in str(err.value) and "nope.yaml" in str(err.value)


@pytest.mark.parametrize(
    "name,text",
    [
        ("bad.yaml", "name: s\ndecisions: [\n  - {name: a, options: [x}\n"),
        ("bad.yml", "name: s\n  decisions:\n - a: : :\n"),
        ("bad.json", '{"name": "s", "decisions": [}'),
    ],
)
def test_loader_unreadable_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_space_file(path)
    assert f"cannot read space file '{path}'" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", ""])
def test_loader_requires_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_space_file(path)


def test_space_from_dict_names_the_source():
    with pytest.raises(UserError, match="my source: decisions"):
        space_from_dict({"name": "s", "decisions": "nope"}, source="my source")


def test_single_decision_space_and_bool_options():
    space = space_from_dict(
        {"name": "flags", "decisions": [{"name": "use_bn", "options": [True, False]},
                                        {"name": "k", "options": [3, 5], "active_if": {"use_bn": [True]}}]}
    )
    assert space.decision("use_bn").options == ("true", "false")
    assert sorted(space.enumerate()) == ["00", "01", "10"]
    assert space.cardinality() == 3
    assert list(itertools.islice(space.enumerate(), 1)) == ["00"]


def test_live_edges_are_those_on_a_complete_input_to_output_path() -> None:
    """Against the definition itself: the four input-to-output paths of the cell, an edge live when some path
    through it has no ``none`` edge; over every code of the space."""
    from collm_nas.spaces.nb201 import live_edges, live_operation_shares

    paths = [[EDGES.index(step) for step in steps] for steps in
             ([(3, 0)], [(1, 0), (3, 1)], [(2, 0), (3, 2)], [(1, 0), (2, 1), (3, 2)])]
    for code in NB201Space().enumerate():
        complete = [p for p in paths if all(code[e] != "0" for e in p)]
        want = [any(e in p for p in complete) for e in range(len(EDGES))]
        assert live_edges(code) == want, code
        shares = live_operation_shares(code)
        assert sum(shares) == pytest.approx(sum(want) / len(EDGES))
    assert live_operation_shares("000300") == (0.0, 0.0, 1 / 6, 0.0)  # one 3x3 convolution straight to the output
    assert live_operation_shares("333000") == (0.0, 0.0, 0.0, 0.0)  # nothing reaches node 3
    assert live_edges("303030") == [True, False, False, False, True, False]  # 0 -> 1 -> 3; 2 <- 1 dangles
    assert live_edges("003003") == [False] * 6  # node 1 has no input, so 1 -> 2 -> 3 carries nothing
    assert live_operation_shares("100033") == (1 / 6, 0.0, 1 / 6, 0.0)  # 1<-0 skip, 3<-1 conv; 3<-2 dangles
