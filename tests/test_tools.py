"""The validity checker, the NCode tools, and constraint expressions."""

from __future__ import annotations

import itertools

import pytest

from collm_nas.core.errors import UserError
from collm_nas.spaces import NB201Space, parse_constraint, parse_constraints, space_from_dict
from collm_nas.spaces.constraints import Constraint, violated
from collm_nas.tools import ValidityChecker, make_ncode_tools, make_validity_tool

BEST_CIFAR10_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


@pytest.fixture(scope="module")
def nb201() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="module")
def cond_space():
    """A user space with a conditional decision (position 3 is used only with block=attn)."""
    return space_from_dict(
        {
            "name": "cond",
            "decisions": [
                {"name": "depth", "options": [1, 2, 3]},
                {"name": "block", "options": ["conv", "attn"]},
                {"name": "heads", "options": [2, 4, 8], "active_if": {"block": ["attn"]}},
            ],
        }
    )


def kinds(report: dict) -> list[str]:
    return [p["kind"] for p in report["problems"]]


def connected(code: str) -> bool:
    """Independent check: is there a path 0 -> 3 of non-'none' edges? (DFS over an edge list.)"""
    edge_list = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]  # (from, to) in NCode order
    graph = {n: [] for n in range(4)}
    for (src, dst), digit in zip(edge_list, code):
        if digit != "0":
            graph[src].append(dst)
    stack, seen = [0], {0}
    while stack:
        node = stack.pop()
        for nxt in graph[node]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return 3 in seen


# ============================================================ validity rules
@pytest.mark.parametrize(
    "code,kind",
    [
        ("3333333", "length"),
        ("33333", "length"),
        ("", "length"),
        ("33x333", "character"),
        ("339333", "character"),
        ("335333", "character"),
        ("33A333", "character"),
        ("000000", "structure"),
        ("100000", "structure"),  # only node 1 is fed
        ("000033", "structure"),  # node 3 fed only by nodes 1 and 2, which get nothing
        ("001003", "structure"),  # 1 -> 2 -> 3, but node 1 is dead (1<-0 is none)
        ("330000", "structure"),  # nodes 1 and 2 alive, nothing reaches node 3
    ],
)
def test_checker_rule_per_failing_case(nb201, code, kind):
    checker = ValidityChecker(nb201)
    tool = make_validity_tool(checker)
    report = checker.report(code)
    assert report["ncode"] == code
    assert report["valid"] is False
    assert kinds(report) and set(kinds(report)) == {kind}
    assert all(p["message"] for p in report["problems"])
    assert not checker.is_valid(code)
    assert tool.invoke({"ncodes": [code]}) == [report]


def test_checker_non_string_code(nb201):
    assert [p.kind for p in ValidityChecker(nb201).problems(333132)] == ["length"]


@pytest.mark.parametrize("code", ["333132", "000300", "010003", "100010", "101001", "444444", "111111"])
def test_checker_valid_codes(nb201, code):
    checker = ValidityChecker(nb201)
    assert checker.report(code) == {"ncode": code, "valid": True, "problems": []}
    assert make_validity_tool(checker).invoke({"ncodes": [code]})[0]["valid"] is True


def test_checker_inactive_rule(cond_space):
    checker = ValidityChecker(cond_space)
    tool = make_validity_tool(checker)
    reports = tool.invoke({"ncodes": ["101", "000", "112", "113", "1111"]})
    assert [r["valid"] for r in reports] == [False, True, True, False, False]
    assert kinds(reports[0]) == ["inactive"]
    assert "heads" in reports[0]["problems"][0]["message"]
    assert kinds(reports[3]) == ["character"]
    assert kinds(reports[4]) == ["length"]
    assert checker.count_legal() == cond_space.cardinality() == 3 * (1 + 3)


@pytest.mark.parametrize(
    "constraint,resource,bound",
    [("params_mb<=1.0", "params_mb", 1.0), ("flops_m<=100", "flops_m", 100.0), ("lat_ms_pixel3<=20", "lat_ms_pixel3", 20.0)],
)
def test_checker_constraint_rule(nb201, nb201_evaluator, constraint, resource, bound):
    constraints = parse_constraints([constraint], nb201_evaluator.resource_names)
    checker = ValidityChecker(nb201, constraints, nb201_evaluator.resources)
    tool = make_validity_tool(checker)
    assert nb201_evaluator.resources("333333")[resource] > bound
    [report] = tool.invoke({"ncodes": ["333333"]})
    assert report["valid"] is False
    assert kinds(report) == ["constraint"]
    assert resource in report["problems"][0]["message"]
    # A small cell that meets the bound passes.
    small = "000100"
    assert nb201_evaluator.resources(small)[resource] <= bound
    assert tool.invoke({"ncodes": [small]})[0]["valid"] is True
    # Count under the constraint agrees with the table.
    expected = sum(
        1 for c in nb201.enumerate() if connected(c) and nb201_evaluator.resources(c)[resource] <= bound
    )
    assert checker.count_legal() == expected < 15284


def test_checker_reports_every_broken_constraint_and_structure(nb201, nb201_evaluator):
    constraints = parse_constraints(["params_mb<=1.0", "flops_m<=100", "lat_ms_pixel3<=20"])
    checker = ValidityChecker(nb201, constraints, nb201_evaluator.resources)
    assert kinds(checker.report("333333")) == ["constraint"] * 3
    # A degenerate cell is reported as such; format problems stop the check early.
    assert "structure" in kinds(checker.report("000000"))
    assert kinds(checker.report("33333")) == ["length"]


def test_checker_constraint_on_unknown_resource(nb201):
    checker = ValidityChecker(nb201, [parse_constraint("params_mb<=1")], resources=lambda code: {})
    [problem] = checker.problems("333132")
    assert problem.kind == "constraint"
    assert "unknown for this architecture" in problem.message


def test_checker_uses_space_costs(cond_space):
    space = space_from_dict(
        {
            "name": "costed",
            "decisions": [{"name": "a", "options": ["s", "m", "l"], "costs": {"mem": [1, 2, 3]}}],
            "base_costs": {"mem": 0.5},
        }
    )
    checker = ValidityChecker(space, parse_constraints(["mem<2"], space.cost_names))
    assert [checker.is_valid(c) for c in "012"] == [True, False, False]
    assert "mem=2.5 breaks mem<2" in checker.problems("1")[0].message


def test_nb201_legal_count(nb201):
    assert ValidityChecker(nb201).count_legal() == 15284


def test_degenerate_rule_matches_brute_force(nb201):
    checker = ValidityChecker(nb201)
    codes = ["".join(p) for p in itertools.product("01234", repeat=6)]
    assert set(codes) == set(nb201.enumerate())
    degenerate = 0
    for code in codes:
        expected_ok = connected(code)
        problems = checker.problems(code)
        assert checker.is_valid(code) == expected_ok, code
        if not expected_ok:
            degenerate += 1
            assert [p.kind for p in problems] == ["structure"], code
    assert degenerate == 15625 - 15284 == 341


def test_checker_legal_filter_and_limit(nb201):
    checker = ValidityChecker(nb201)
    assert checker.legal(["000000", "333132", "33", "000300"]) == ["333132", "000300"]
    assert checker.count_legal(limit=100) is None


def test_validity_tool_batch_and_metadata(nb201):
    tool = make_validity_tool(ValidityChecker(nb201))
    assert tool.name == "check_ncodes"
    assert "nb201" in tool.description
    reports = tool.invoke({"ncodes": ["333132", "000000", "3333333", "33x333"]})
    assert [r["ncode"] for r in reports] == ["333132", "000000", "3333333", "33x333"]
    assert [r["valid"] for r in reports] == [True, False, False, False]
    assert [kinds(r) for r in reports[1:]] == [["structure"], ["length"], ["character"]]


# ============================================================== NCode tools
def test_ncode_tools_round_trip(nb201):
    encode, decode = make_ncode_tools(nb201)
    assert (encode.name, decode.name) == ("encode_ncode", "decode_ncode")
    out = encode.invoke({"architecture": BEST_CIFAR10_ARCH})
    assert out == {"ncode": "333132", "architecture": BEST_CIFAR10_ARCH}
    back = decode.invoke({"ncode": "333132"})
    assert back["ncode"] == "333132"
    assert back["architecture"] == BEST_CIFAR10_ARCH
    assert back["choices"]["edge_3<-0"] == "skip_connect"
    again = encode.invoke({"choices": back["choices"]})
    assert again["ncode"] == "333132"


def test_ncode_tools_user_space(cond_space):
    encode, decode = make_ncode_tools(cond_space)
    out = encode.invoke({"choices": {"depth": "3", "block": "attn", "heads": "8"}})
    assert out == {"ncode": "212", "architecture": "depth=3, block=attn, heads=8"}
    assert encode.invoke({"architecture": "depth=3, block=attn, heads=8"})["ncode"] == "212"
    assert decode.invoke({"ncode": "100"})["choices"] == {"depth": "2", "block": "conv"}


@pytest.mark.parametrize(
    "which,args,fragment",
    [
        ("decode", {"ncode": "99"}, "malformed NCode '99'"),
        ("decode", {"ncode": "339333"}, "position 3"),
        ("encode", {"architecture": "not a cell"}, "not a NAS-Bench-201 string"),
        ("encode", {"architecture": BEST_CIFAR10_ARCH.replace("skip_connect", "conv_7x7")}, "unknown operation"),
        ("encode", {"choices": {"edge_1<-0": "none"}}, "misses decision"),
        ("encode", {"choices": {"edge_1<-0": "conv"}}, "has no option 'conv'"),
    ],
)
def test_ncode_tools_return_errors_as_text(nb201, which, args, fragment):
    encode, decode = make_ncode_tools(nb201)
    tool = encode if which == "encode" else decode
    out = tool.invoke(args)  # must not raise
    assert isinstance(out, str)
    assert fragment in out


def test_ncode_tools_inactive_code_is_an_error(cond_space):
    _, decode = make_ncode_tools(cond_space)
    out = decode.invoke({"ncode": "101"})
    assert isinstance(out, str) and "inactive" in out


# =============================================================== constraints
@pytest.mark.parametrize(
    "text,resource,op,bound",
    [
        ("params_mb<=1.0", "params_mb", "<=", 1.0),
        ("params_mb < 1", "params_mb", "<", 1.0),
        ("  flops_m>=100  ", "flops_m", ">=", 100.0),
        ("lat_ms_pixel3>20.5", "lat_ms_pixel3", ">", 20.5),
        ("x==3", "x", "==", 3.0),
        ("y>=-1.5e2", "y", ">=", -150.0),
        ("z<=.5", "z", "<=", 0.5),
        ("_a1<=+2E1", "_a1", "<=", 20.0),
    ],
)
def test_parse_constraint(text, resource, op, bound):
    c = parse_constraint(text)
    assert c == Constraint(resource, op, bound)


@pytest.mark.parametrize(
    "op,value,holds",
    [("<=", 1.0, True), ("<=", 1.5, False), ("<", 1.0, False), ("<", 0.5, True), (">=", 1.0, True),
     (">=", 0.5, False), (">", 1.0, False), (">", 2.0, True), ("==", 1.0, True), ("==", 1.1, False)],
)
def test_constraint_holds(op, value, holds):
    assert parse_constraint(f"r{op}1").holds(value) is holds


def test_constraint_text_and_violations():
    c = parse_constraint("params_mb <= 1.50")
    assert str(c) == "params_mb<=1.5"
    assert violated([c], {"params_mb": 1.0}) == []
    assert violated([c], {"params_mb": 2.0}) == ["params_mb=2 breaks params_mb<=1.5"]
    assert "unknown for this architecture" in violated([c], {})[0]


@pytest.mark.parametrize(
    "text",
    ["", "params_mb", "params_mb<=", "<=1", "params_mb=1", "params_mb=<1", "params_mb<=abc", "1<=params_mb",
     "params mb<=1", "params_mb<=1 2", "params_mb<=1e999", "params_mb<=nan", "params_mb<=inf", "2x<=1",
     "params_mb!=1", "params_mb<=1;rm"],
)
def test_parse_constraint_rejects_bad_text(text):
    with pytest.raises(UserError) as err:
        parse_constraint(text)
    assert "bad constraint" in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_constraints_checks_resource_names():
    assert parse_constraints(["a<=1", "b>2"], known=["a", "b"]) == [Constraint("a", "<=", 1.0), Constraint("b", ">", 2.0)]
    assert parse_constraints(["anything<=1"]) == [Constraint("anything", "<=", 1.0)]  # no check without `known`
    with pytest.raises(UserError) as err:
        parse_constraints(["a<=1", "params<=1"], known=["flops_m", "a", "lat_ms_pixel3"])
    msg = str(err.value)
    assert "unknown resource 'params'" in msg
    assert "available: a, flops_m, lat_ms_pixel3" in msg
    with pytest.raises(UserError, match="available: none"):
        parse_constraints(["params<=1"], known=[])
    with pytest.raises(UserError, match="bad constraint"):
        parse_constraints(["a<=1", "a<<1"], known=["a"])


def test_parse_constraints_against_evaluator_resources(nb201_evaluator):
    names = nb201_evaluator.resource_names
    assert {"params_mb", "flops_m", "lat_ms_pixel3"} <= set(names)
    parse_constraints(["params_mb<=1", "flops_m<100", "lat_ms_pixel3<=20"], names)
    with pytest.raises(UserError) as err:
        parse_constraints(["lat_ms_iphone<=20"], names)
    assert "lat_ms_pixel3" in str(err.value) and "params_mb" in str(err.value)


def test_count_legal_gives_up_quickly_on_a_large_conditional_space():
    """count_legal(limit) must answer None for a space far larger than ``limit``.

    A conditional space of 2 x 2 x 36**6 combinations (about 8.7e9) is far over
    limit=1000; deciding that may not walk through billions of combinations.
    """
    space = space_from_dict(
        {
            "name": "big",
            "decisions": [
                {"name": "mode", "options": ["a", "b"]},
                {"name": "extra", "options": ["x", "y"], "active_if": {"mode": ["b"]}},
                *({"name": f"d{i}", "options": list(range(36))} for i in range(6)),
            ],
        }
    )
    walked = 0
    original = space.canonical

    def counting_canonical(indices):
        nonlocal walked
        walked += 1
        if walked > 100_000:
            raise AssertionError("count_legal(limit=1000) walked 100,000 combinations and was still going")
        return original(indices)

    space.canonical = counting_canonical
    assert ValidityChecker(space).count_legal(limit=1000) is None
