"""Constrained-decoding artefacts: code languages, GBNF grammars and JSON schemas."""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys

import pytest

from collm_nas.spaces import NB201Space, parse_constraints, space_from_dict
from collm_nas.core.space import NCODE_ALPHABET
from collm_nas.tools.grammar import STRATEGY_MAX_OPTIONS, STRATEGY_MAX_TEXT
from collm_nas.tools import (
    CodeLanguage,
    ValidityChecker,
    candidates_gbnf,
    candidates_json_schema,
    code_language,
    pick_gbnf,
    pick_json_schema,
    strategy_gbnf,
    strategy_json_schema,
)

# The toy space of test_spaces.py: a wide decision and two nested conditional ones.
TOY = {
    "name": "toy",
    "decisions": [
        {"name": "width", "options": [f"w{i}" for i in range(12)],
         "costs": {"params": [i / 10 for i in range(12)]}},
        {"name": "block", "options": ["conv", "attn", "none"], "costs": {"params": [1.0, 2.0, 0.0]}},
        {"name": "heads", "options": [1, 2, 4, 8], "active_if": {"block": ["attn"]},
         "costs": {"params": [0.1, 0.2, 0.4, 0.8]}},
        {"name": "head_dim", "options": [32, 64], "active_if": {"heads": [8]}, "costs": {"params": [0.5, 1.0]}},
        {"name": "act", "options": ["relu", "gelu"]},
    ],
    "base_costs": {"params": 0.5},
    "constraints": ["params<=4.0"],
}

# 30 decisions of 10 options: far too many codes to enumerate.
HUGE = {"name": "huge", "decisions": [{"name": f"d{i}", "options": list(range(10))} for i in range(30)]}


@pytest.fixture(scope="module")
def nb201() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="module")
def checker(nb201) -> ValidityChecker:
    return ValidityChecker(nb201)


@pytest.fixture(scope="module")
def all_codes(nb201) -> list[str]:
    return list(nb201.enumerate())


@pytest.fixture(scope="module")
def toy():
    space = space_from_dict(TOY)
    return space, ValidityChecker(space, parse_constraints(space.default_constraints, space.cost_names))


def every_string(space) -> list[str]:
    """All strings over each position's option range, canonical or not."""
    return ["".join(p) for p in itertools.product(*(NCODE_ALPHABET[: len(d.options)] for d in space.decisions))]


def assert_language_is(lang: CodeLanguage, universe, expected: set[str], max_chars: int = 20_000) -> None:
    """accepts() and the regex admit exactly ``expected`` among ``universe``."""
    pattern = re.compile(lang.regex(max_chars=max_chars))
    for code in universe:
        want = code in expected
        assert lang.accepts(code) is want, code
        assert bool(pattern.fullmatch(code)) is want, code


# =============================================== a tiny GBNF reader for tests
# The grammars here never recurse, so a grammar can be unfolded into one
# regular expression and used to check which JSON texts it accepts.
_TOKEN = re.compile(
    r'\s*(?:(?P<lit>"(?:[^"\\]|\\.)*")|(?P<cls>\[(?:[^\]\\]|\\.)*\])|(?P<name>[a-z][a-z0-9-]*)|(?P<op>[()|?*+]))'
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            kind = body[i + 1]
            if kind == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES[kind])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def gbnf_rules(text: str) -> dict[str, str]:
    rules = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, body = line.partition(" ::= ")
            assert sep, f"not a rule line: {line!r}"
            assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
            assert name not in rules, f"rule {name} defined twice"
            rules[name] = body
    return rules


def gbnf_to_regex(text: str) -> re.Pattern:
    rules = gbnf_rules(text)
    done: dict[str, str] = {}

    def unfold(name: str) -> str:
        if name not in done:
            body, pos, out = rules[name], 0, []
            while pos < len(body.rstrip()):
                m = _TOKEN.match(body, pos)
                assert m, f"cannot read {body[pos:]!r}"
                pos = m.end()
                if m["lit"]:
                    out.append(re.escape(_unescape(m["lit"][1:-1])))
                elif m["cls"]:
                    out.append(m["cls"])
                elif m["name"]:
                    out.append(f"(?:{unfold(m['name'])})")
                else:
                    out.append("(?:" if m["op"] == "(" else m["op"])
            done[name] = "".join(out)
        return done[name]

    return re.compile(unfold("root"))


def accepts(grammar: str | re.Pattern, text: str) -> bool:
    pattern = gbnf_to_regex(grammar) if isinstance(grammar, str) else grammar
    return pattern.fullmatch(text) is not None


# ============================================ a tiny JSON-schema validator
def valid(schema: dict, value) -> bool:
    """The subset of JSON Schema these schemas use."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return False
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return False
        return all(valid(props[k], v) for k, v in value.items() if k in props)
    if kind == "array":
        return (
            isinstance(value, list)
            and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
            and all(valid(schema["items"], v) for v in value)
        )
    if kind == "string":
        if not isinstance(value, str):
            return False
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            return False
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    return kind in ("string", None)


# ========================================================== exact languages
def test_nb201_language_is_the_legal_codes(nb201, checker, all_codes):
    lang = code_language(checker)
    legal = {c for c in all_codes if checker.is_valid(c)}
    assert lang.mode == "exact" and lang.is_exact
    assert lang.count == len(legal) == 15284
    assert lang.count_paths() == lang.count
    assert lang.length == 6
    assert lang.regex_is_exact()
    assert_language_is(lang, all_codes, legal)
    # Not codes at all.
    for bad in ("", "00000", "0000000", "1111a1", "11111A", 123456, None):
        assert not lang.accepts(bad)


def test_exclusion_removes_evaluated_codes(checker, all_codes):
    excluded = set(random.Random(7).sample(all_codes, 1000))
    lang = code_language(checker, exclude=excluded)
    admitted = {c for c in all_codes if checker.is_valid(c)} - excluded
    assert lang.count == lang.count_paths() == len(admitted)
    assert lang.regex_is_exact()
    assert_language_is(lang, all_codes, admitted)
    # Excluding illegal or foreign strings changes nothing.
    assert code_language(checker, exclude=["000000", "zz", "1234567"]).count == 15284


def test_regex_falls_back_to_a_superset_when_too_long(checker, all_codes):
    legal = {c for c in all_codes if checker.is_valid(c)}
    excluded = random.Random(3).sample(sorted(legal), 3000)
    lang = code_language(checker, exclude=excluded)
    assert lang.count == len(legal) - 3000
    # With a tight budget the regex is the one of all legal codes ...
    assert not lang.regex_is_exact(max_chars=1000)
    assert lang.regex(max_chars=1000) == code_language(checker).regex()
    # ... and with none at all the per-position classes.
    assert lang.regex(max_chars=50) == "^[0-4]{6}$"
    # Either way it never rejects an admitted code.
    for max_chars in (50, 1000, 20_000, 10**6):
        pattern = re.compile(lang.regex(max_chars=max_chars))
        assert all(pattern.fullmatch(c) for c in all_codes if lang.accepts(c))
    assert lang.regex_is_exact(max_chars=10**6)
    admitted = {c for c in all_codes if checker.is_valid(c)} - set(excluded)
    assert_language_is(lang, all_codes, admitted, max_chars=10**6)


def test_resource_constraint_shrinks_the_language(nb201, nb201_evaluator, all_codes):
    constrained = ValidityChecker(nb201, parse_constraints(["params_mb<=0.5"]), nb201_evaluator.resources)
    legal = {c for c in all_codes if constrained.is_valid(c)}
    assert 0 < len(legal) < 15284
    lang = code_language(constrained)
    assert lang.count == lang.count_paths() == len(legal)
    assert_language_is(lang, all_codes, legal)
    assert all(nb201_evaluator.resources(c)["params_mb"] <= 0.5 for c in legal)


def test_nothing_left_raises(nb201, all_codes):
    fresh = ValidityChecker(nb201)
    with pytest.raises(ValueError, match="no legal, unseen code left"):
        code_language(fresh, exclude=all_codes)
    impossible = ValidityChecker(nb201, parse_constraints(["r<0"]), lambda code: {"r": 1.0})
    with pytest.raises(ValueError, match="no legal"):
        code_language(impossible)


def test_legal_codes_are_cached_per_checker(nb201):
    fresh = ValidityChecker(nb201)
    first = code_language(fresh)
    assert code_language(fresh) is first  # nothing excluded: the cached language itself
    assert code_language(fresh, exclude=["111111"]).fallback is first
    # Changing what decides legality invalidates the cache.
    fresh.constraints = parse_constraints(["r<=1"])
    fresh.resources = lambda code: {"r": float(code.count("3"))}
    assert code_language(fresh).count == sum(
        1 for c in nb201.enumerate() if ValidityChecker(nb201).is_valid(c) and c.count("3") <= 1
    )


def test_nb201_rebuild_does_not_enumerate_the_space_again(nb201, all_codes, monkeypatch):
    fresh = ValidityChecker(nb201)
    legal = {c for c in all_codes if fresh.is_valid(c)}
    code_language(fresh)  # the per-checker enumeration happens once
    checks = []
    monkeypatch.setattr(fresh, "is_valid", lambda code: checks.append(code) or True)
    monkeypatch.setattr(nb201, "enumerate", lambda: pytest.fail("the space was enumerated again"))
    excluded = random.Random(1).sample(all_codes, 1000)
    lang = code_language(fresh, exclude=excluded)
    assert checks == [] and lang.count == len(legal - set(excluded))


def test_of_codes_builds_the_minimal_dfa():
    lang = CodeLanguage.of_codes(["012", "013", "112", "113", "220"])
    assert lang.count == lang.count_paths() == 5
    # 0 and 1 lead to the same suffix set {12, 13}: one state per distinct suffix set.
    assert [len(layer) for layer in lang.layers] == [1, 2, 2]
    assert lang.gbnf_rules("pool").splitlines()[1] == 'pool-s0-0 ::= [01] pool-s1-0 | "2" pool-s1-1'
    assert_language_is(lang, ["".join(p) for p in itertools.product("0123", repeat=3)],
                       {"012", "013", "112", "113", "220"})
    with pytest.raises(ValueError):
        CodeLanguage.of_codes([])
    with pytest.raises(ValueError):
        CodeLanguage.of_codes(["01", "012"])


# ================================================= conditional and huge spaces
def test_conditional_space_exact(toy):
    space, check = toy
    universe = every_string(space)
    legal = {c for c in universe if check.is_valid(c)}
    assert 0 < len(legal) < space.cardinality() < len(universe)  # the constraint bites
    lang = code_language(check)
    assert lang.mode == "exact" and lang.count == len(legal)
    assert_language_is(lang, universe, legal)


def test_conditional_space_format_mode_knows_inactive_positions(toy):
    space, check = toy
    lang = code_language(check, exclude=["00000"], limit=10)
    assert lang.mode == "format" and lang.count is None and not lang.regex_is_exact()
    universe = every_string(space)
    canonical = set(space.enumerate())
    # Inactive decisions must be 0; the constraint is not known at this level.
    assert lang.count_paths() == space.cardinality() == len(canonical)
    assert_language_is(lang, universe, canonical)
    assert "00000" in canonical


def test_format_mode_falls_back_to_option_ranges_when_conditions_explode():
    decisions = [{"name": f"d{i}", "options": list(range(10))} for i in range(6)]
    decisions.append({"name": "last", "options": ["a", "b"],
                      "active_if": {f"d{i}": [1, 2, 3, 4, 5] for i in range(6)}})
    space = space_from_dict({"name": "wide", "decisions": decisions})
    lang = code_language(ValidityChecker(space), limit=1000)
    assert lang.mode == "format"
    assert lang.position_chars() == ("0123456789",) * 6 + ("01",)
    assert lang.regex() == "^[0-9]{6}[01]$"
    assert lang.accepts("9999991")  # a superset: 'last' is inactive here


def test_huge_space_gives_format_mode_without_enumerating_it(monkeypatch):
    space = space_from_dict(HUGE)
    monkeypatch.setattr(space, "enumerate", lambda: pytest.fail("enumerating 10^30 codes would never end"))
    lang = code_language(ValidityChecker(space))
    assert lang.mode == "format" and lang.count is None
    assert lang.regex() == "^[0-9]{30}$"
    assert lang.n_states == 30
    assert lang.accepts("0" * 30) and lang.accepts("9" * 30)
    assert not lang.accepts("0" * 29) and not lang.accepts("a" + "0" * 29)
    assert len(candidates_gbnf(lang, 1, 4)) < 5000


# ====================================================================== GBNF
def test_gbnf_rules_one_per_state(checker):
    lang = code_language(checker)
    rules = gbnf_rules(lang.gbnf_rules())
    assert len(rules) == lang.n_states + 1
    assert rules["code"] == '"\\"" code-s0-0 "\\""'
    for name in rules:
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name)
    with pytest.raises(ValueError):
        lang.gbnf_rules("Code_1")


def test_candidates_gbnf_accepts_exactly_lists_of_admitted_codes(checker, all_codes):
    excluded = ["111111", "333333"]
    lang = code_language(checker, exclude=excluded)
    grammar = gbnf_to_regex(candidates_gbnf(lang, 1, 3))
    assert accepts(grammar, '{"codes": ["123412"]}')
    assert accepts(grammar, '{"codes":["123412","000111","400104"]}')
    assert accepts(grammar, '{ "codes": [ "123412", "000111" ] }')
    for text in (
        '{"codes": []}',  # too few
        '{"codes": ["123412", "123412", "123412", "123412"]}',  # too many
        '{"codes": ["111111"]}',  # already evaluated
        '{"codes": ["000000"]}',  # degenerate cell
        '{"codes": ["12341"]}',  # too short
        '{"codes": ["123415"]}',  # out of range
        '{"codes":  ["123412"]}',  # two spaces
        '{"codes":\n["123412"]}',  # newline
        '{"codes": ["123412"],}',
        '{"code": ["123412"]}',
    ):
        assert not accepts(grammar, text), text
    # The code rule alone is the language.
    single = gbnf_to_regex("root ::= code\n" + lang.gbnf_rules())
    assert {c for c in all_codes if accepts(single, json.dumps(c))} == {
        c for c in all_codes if checker.is_valid(c) and c not in excluded
    }


def test_candidates_gbnf_bounds():
    lang = CodeLanguage.of_codes(["01", "10"])
    grammar = gbnf_to_regex(candidates_gbnf(lang, 0, 2))
    assert accepts(grammar, '{"codes": []}') and accepts(grammar, '{"codes": [ ]}')
    assert not accepts(grammar, '{"codes": [  ]}')
    assert accepts(grammar, '{"codes": ["01", "10"]}')
    assert not accepts(grammar, '{"codes": ["01", "10", "01"]}')
    exactly_two = gbnf_to_regex(candidates_gbnf(lang, 2, 2))
    assert accepts(exactly_two, '{"codes": ["01", "01"]}')
    assert not accepts(exactly_two, '{"codes": ["01"]}')
    for low, high in ((-1, 2), (3, 2), (0, 0)):
        with pytest.raises(ValueError):
            candidates_gbnf(lang, low, high)


def test_pick_gbnf_and_schema():
    pool = ["123412", "000111", "400004"]
    grammar = gbnf_to_regex(pick_gbnf(pool))
    for code in pool:
        assert accepts(grammar, json.dumps({"code": code}))
    assert accepts(grammar, '{ "code":"000111" }')
    assert not accepts(grammar, '{"code": "000112"}')
    assert not accepts(grammar, '{"code": ["000111"]}')
    mixed = gbnf_to_regex(pick_gbnf(["01", "012"]))
    assert accepts(mixed, '{"code": "012"}') and not accepts(mixed, '{"code": "02"}')

    schema = pick_json_schema(pool)
    assert schema["properties"]["code"]["enum"] == pool
    assert valid(schema, {"code": "400004"})
    assert not valid(schema, {"code": "400005"})
    assert not valid(schema, {"code": "400004", "why": "x"})
    assert not valid(schema, {})
    with pytest.raises(ValueError):
        pick_gbnf([])
    with pytest.raises(TypeError):
        pick_json_schema("123412")


def _strategy(space, **changes) -> dict:
    obj = {
        "summary": "Convolutions on the long edges win.",
        "patterns": ["3 on edge 3<-0", "avoid pooling"],
        "directions": {d.name: {"prefer": [d.options[-1]], "avoid": []} for d in space.decisions},
        "constraints": [],
        "example_codes": ["333333", "303030"],
    }
    obj.update(changes)
    return obj


def test_strategy_gbnf_accepts_the_navigator_object(nb201, checker):
    lang = code_language(checker, exclude=["333333"])
    grammar = gbnf_to_regex(strategy_gbnf(nb201, lang))
    good = _strategy(nb201, example_codes=["303030"])
    assert accepts(grammar, json.dumps(good))
    assert accepts(grammar, json.dumps(good, separators=(",", ":")))
    assert accepts(grammar, json.dumps(_strategy(nb201, patterns=[], example_codes=[])))
    full = {d.name: {"prefer": list(d.options[:STRATEGY_MAX_OPTIONS]), "avoid": list(d.options[-STRATEGY_MAX_OPTIONS:])}
            for d in nb201.decisions}
    assert accepts(grammar, json.dumps(_strategy(nb201, directions=full, example_codes=[])))
    every = {d.name: {"prefer": list(d.options), "avoid": []} for d in nb201.decisions}
    assert not accepts(grammar, json.dumps(_strategy(nb201, directions=every, example_codes=[])))
    assert accepts(grammar, json.dumps(_strategy(nb201, summary="x" * STRATEGY_MAX_TEXT, example_codes=[])))
    assert not accepts(grammar, json.dumps(_strategy(nb201, summary="x" * (STRATEGY_MAX_TEXT + 1), example_codes=[])))

    directions = dict(good["directions"])
    del directions["edge_3<-2"]
    swapped = dict(reversed(list(good.items())))
    for bad in (
        _strategy(nb201),  # 333333 was excluded
        _strategy(nb201, example_codes=["000000"]),  # degenerate
        _strategy(nb201, example_codes=["303030"] * 5),  # too many
        _strategy(nb201, patterns=["a"] * 5, example_codes=[]),
        _strategy(nb201, summary="", example_codes=[]),
        _strategy(nb201, summary="x" * 161, example_codes=[]),
        _strategy(nb201, summary='say "hi"', example_codes=[]),
        _strategy(nb201, summary="two\nlines", example_codes=[]),
        _strategy(nb201, directions=directions, example_codes=[]),
        _strategy(nb201, directions={**good["directions"], "edge_1<-0": {"prefer": ["conv"], "avoid": []}},
                  example_codes=[]),
        swapped,
    ):
        assert not accepts(grammar, json.dumps(bad)), bad


def test_strategy_names_are_escaped():
    space = space_from_dict({
        "name": "odd",
        "decisions": [
            {"name": 'say "x"', "options": ['a"b', "c\\d", "é"]},
            {"name": "back\\slash", "options": ["one"]},
        ],
    })
    lang = code_language(ValidityChecker(space))
    text = strategy_gbnf(space, lang, max_text=8, max_patterns=1, max_constraints=0, max_examples=1)
    grammar = gbnf_to_regex(text)
    obj = {
        "summary": "ok",
        "patterns": [],
        "directions": {
            'say "x"': {"prefer": ['a"b', "é"], "avoid": ["c\\d"]},
            "back\\slash": {"prefer": [], "avoid": []},
        },
        "constraints": [],
        "example_codes": ["20"],
    }
    assert accepts(grammar, json.dumps(obj, ensure_ascii=False))
    assert not accepts(grammar, json.dumps({**obj, "constraints": ["no"]}, ensure_ascii=False))
    schema = strategy_json_schema(space, lang, max_text=8, max_patterns=1, max_constraints=0, max_examples=1)
    assert valid(schema, obj)


# ============================================================== JSON schemas
def test_candidates_json_schema(checker):
    lang = code_language(checker, exclude=["111111"])
    schema = candidates_json_schema(lang, 1, 3)
    assert schema["required"] == ["codes"] and schema["additionalProperties"] is False
    assert schema["properties"]["codes"]["items"]["pattern"] == lang.regex()
    assert valid(schema, {"codes": ["123412", "000111"]})
    for bad in (
        {"codes": []},
        {"codes": ["123412"] * 4},
        {"codes": ["111111"]},
        {"codes": ["000000"]},
        {"codes": ["1234120"]},
        {"codes": ["123412"], "more": 1},
        {"codes": "123412"},
        {},
    ):
        assert not valid(schema, bad), bad
    json.dumps(schema)  # plain data


def test_strategy_json_schema(nb201, checker):
    lang = code_language(checker)
    schema = strategy_json_schema(nb201, lang)
    assert list(schema["properties"]) == ["summary", "patterns", "directions", "constraints", "example_codes"]
    assert list(schema["properties"]["directions"]["properties"]) == [d.name for d in nb201.decisions]
    assert valid(schema, _strategy(nb201))
    for bad in (
        _strategy(nb201, example_codes=["000000"]),
        _strategy(nb201, summary="x" * 161),
        _strategy(nb201, summary='a "quote"'),
        _strategy(nb201, patterns=["a"] * 5),
        _strategy(nb201, constraints=["a"] * 4),
        _strategy(nb201, directions={}),
        _strategy(nb201, directions={**_strategy(nb201)["directions"], "edge_1<-0": {"prefer": ["conv"], "avoid": []}}),
    ):
        assert not valid(schema, bad)
    json.dumps(schema)


# ================================================================ llama.cpp
_PARSE_SCRIPT = r"""
import json, sys
import llama_cpp
failed = []
for name, text in json.load(open(sys.argv[1])).items():
    llama_cpp.LlamaGrammar.from_string(text, verbose=False)
    sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode(), b"root")
    if not sampler:
        failed.append(name)
    else:
        llama_cpp.llama_sampler_free(sampler)
print(json.dumps(failed))
"""


def test_grammars_parse_with_llama_cpp(tmp_path, nb201, checker, toy):
    llama_cpp = pytest.importorskip("llama_cpp")
    huge = space_from_dict(HUGE)
    huge_lang = code_language(ValidityChecker(huge))
    lang = code_language(checker, exclude=["111111"])
    toy_space, toy_checker = toy
    toy_lang = code_language(toy_checker)
    grammars = {
        "candidates": candidates_gbnf(lang, 1, 8),
        "candidates-0": candidates_gbnf(lang, 0, 2),
        "candidates-format": candidates_gbnf(huge_lang, 2, 5),
        "candidates-toy": candidates_gbnf(code_language(toy_checker, limit=1), 1, 3),
        "pick": pick_gbnf(["123412", "000111"]),
        "strategy": strategy_gbnf(nb201, lang),
        "strategy-toy": strategy_gbnf(toy_space, toy_lang, max_text=20, max_patterns=0),
        "strategy-huge": strategy_gbnf(huge, huge_lang),
    }
    # The JSON schemas go through llama-cpp-python's own schema converter too.
    for name, schema in {
        "schema-candidates": candidates_json_schema(lang, 1, 8),
        "schema-pick": pick_json_schema(["123412", "000111"]),
        "schema-strategy": strategy_json_schema(nb201, lang, max_text=20),
    }.items():
        grammars[name] = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    path = tmp_path / "grammars.json"
    path.write_text(json.dumps(grammars))
    # A separate process: the C parser prints to stderr and a crash must not take pytest down.
    done = subprocess.run([sys.executable, "-c", _PARSE_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], done.stderr[-2000:]
    # And the parser does reject a broken grammar (the check is not vacuous).
    path.write_text(json.dumps({"broken": "root ::= [0-4"}))
    done = subprocess.run([sys.executable, "-c", _PARSE_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["broken"]
