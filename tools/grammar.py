"""Constrained-decoding artefacts: grammars and JSON schemas that only admit legal codes.

Why this exists
---------------
LLM agents propose architectures as NCodes. Asking politely for legal codes
is not enough for small models: they write codes of the wrong length, use
characters outside an option range, propose degenerate cells, or repeat codes
that were already evaluated. Backends with constrained decoding (llama.cpp's
GBNF grammars, or JSON-schema "structured output") can make such codes
*impossible to sample*. This module derives those artefacts from a search
space and its :class:`~collm_nas.tools.validity.ValidityChecker`:

* :func:`code_language` describes the set of codes a model may write as a
  layered deterministic automaton (one layer per NCode position).

  - ``mode="exact"`` (the space is small enough to enumerate): the automaton
    admits exactly the legal codes that are not excluded (already evaluated).
    It is the minimal such automaton: the states of a layer are the classes
    of prefixes that allow the same set of suffixes.
  - ``mode="format"`` (the space is too large): the automaton only knows the
    format, i.e. the length, the option range of every position and, where
    this stays small, which positions must be ``0`` because their decision is
    inactive. It admits a superset of the legal codes.

* :meth:`CodeLanguage.gbnf_rules` and :meth:`CodeLanguage.regex` turn the
  automaton into GBNF rules and a regular expression; the ``*_gbnf`` and
  ``*_json_schema`` functions wrap them into the JSON objects the agents
  return (candidate lists, a pick from a pool, a Navigator strategy).

Grammars are a first line of defence only. The Coordinator still screens
every code with the checker: format-mode languages, JSON schemas whose
pattern had to fall back to per-position classes, duplicates inside one
answer, and backends that ignore grammars all let illegal or repeated codes
through.

The grammars use only portable GBNF: quoted literals, character classes,
groups, ``?`` and ``|``. Bounded repetition is spelt out as nested optional
groups instead of ``x{m,n}`` so older llama.cpp builds accept them too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from collm_nas.core.space import NCODE_ALPHABET, SearchSpace
from collm_nas.tools.validity import ValidityChecker

__all__ = [
    "CodeLanguage",
    "candidates_gbnf",
    "candidates_json_schema",
    "code_language",
    "gbnf_literal",
    "pick_code_gbnf",
    "pick_gbnf",
    "pick_json_schema",
    "strategy_gbnf",
    "strategy_json_schema",
]

# A layer of the automaton: for each state, its transitions as
# (characters, target state in the next layer). The last layer's targets are
# all 0, the single accepting end state (which has no transitions itself).
Transition = tuple[str, int]
Layer = tuple[tuple[Transition, ...], ...]

DEFAULT_LIMIT = 200_000
REGEX_MAX_CHARS = 20_000
# Format mode: give up tracking inactive positions beyond this many states per layer.
_FORMAT_MAX_STATES = 4096
_RULE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_CACHE_ATTR = "_collm_grammar_legal_cache"

# One character of a free-text string: anything printable except `"` and `\`.
_GBNF_TEXT_CHAR = r'[^"\\\x7F\x00-\x1F]'
_REGEX_TEXT_CHAR = r'[^"\\\x00-\x1f\x7f]'
_SP = "sp"  # optional single space between JSON tokens


# ============================================================ the language
@dataclass(frozen=True)
class CodeLanguage:
    """A set of NCodes as a minimal layered DFA.

    ``mode`` is ``"exact"`` when the DFA admits exactly the allowed codes and
    ``"format"`` when it only encodes the code format (a superset); ``count``
    is the number of admitted codes in exact mode and None in format mode.
    ``layers[i][s]`` lists the transitions of state ``s`` at position ``i``;
    the start state is ``layers[0][0]``. ``fallback`` is an optional coarser
    language (for :func:`code_language`: all legal codes, exclusion ignored)
    whose regex stands in when this one's is too long.
    """

    mode: str
    length: int
    count: int | None
    layers: tuple[Layer, ...]
    fallback: CodeLanguage | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------ builders
    @classmethod
    def of_codes(cls, codes: Iterable[str]) -> CodeLanguage:
        """The exact language of a non-empty set of codes of equal length."""
        unique = sorted(set(codes))
        if not unique:
            raise ValueError("no codes given")
        length = len(unique[0])
        if any(len(c) != length for c in unique):
            raise ValueError("codes of one language must all have the same length")
        if length == 0:
            raise ValueError("codes must not be empty strings")
        layers = _minimal_layers_of_codes(unique, length)
        return cls(mode="exact", length=length, count=len(unique), layers=layers)

    # ------------------------------------------------------------- queries
    @property
    def n_states(self) -> int:
        """Number of DFA states (= number of GBNF rules besides the wrapper rule)."""
        return sum(len(layer) for layer in self.layers)

    @property
    def is_exact(self) -> bool:
        return self.mode == "exact"

    def accepts(self, code: str) -> bool:
        """Whether the DFA admits ``code``."""
        if not isinstance(code, str) or len(code) != self.length:
            return False
        state = 0
        for layer, char in zip(self.layers, code):
            for chars, target in layer[state]:
                if char in chars:
                    state = target
                    break
            else:
                return False
        return True

    def count_paths(self) -> int:
        """Number of codes the DFA admits, counted on the automaton itself."""
        below = [1]
        for layer in reversed(self.layers):
            below = [sum(len(chars) * below[target] for chars, target in state) for state in layer]
        return below[0]

    def position_chars(self) -> tuple[str, ...]:
        """For each position, every character some admitted code has there."""
        out = []
        for layer in self.layers:
            seen = {c for state in layer for chars, _ in state for c in chars}
            out.append("".join(sorted(seen)))
        return tuple(out)

    # -------------------------------------------------------------- GBNF
    def gbnf_rules(self, prefix: str = "code") -> str:
        """GBNF rules defining ``prefix`` as one admitted code as a quoted JSON string.

        One rule per DFA state, named ``{prefix}-s{position}-{state}``, e.g.
        ``code-s3-1 ::= [0-1] code-s4-0 | [2-4] code-s4-2``.
        """
        if not _RULE_NAME.match(prefix):
            raise ValueError(f"GBNF rule prefix '{prefix}' must be lowercase letters, digits and dashes")
        last = self.length - 1
        lines = [f'{prefix} ::= "\\"" {prefix}-s0-0 "\\""']
        for pos, layer in enumerate(self.layers):
            for state, transitions in enumerate(layer):
                alts = []
                for chars, target in transitions:
                    piece = _gbnf_class(chars)
                    if pos < last:
                        piece += f" {prefix}-s{pos + 1}-{target}"
                    alts.append(piece)
                lines.append(f"{prefix}-s{pos}-{state} ::= " + " | ".join(alts))
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------- regex
    def regex(self, max_chars: int = REGEX_MAX_CHARS) -> str:
        """An anchored regular expression (``^...$``) for one code.

        It is expanded from the DFA and admits exactly the same codes, unless
        that expansion would be longer than ``max_chars``. Then it is the
        fallback language's regex if that one fits (for :func:`code_language`:
        every legal code, including excluded ones), else the per-position
        character-class pattern (:meth:`position_chars`); both are supersets.
        :meth:`regex_is_exact` tells whether you get the exact one.
        """
        if self._is_product:
            return self._class_regex
        if self._dfa_regex_size <= max_chars:
            return self._dfa_regex
        if self.fallback is not None and self.fallback._dfa_regex_size <= max_chars:
            return self.fallback._dfa_regex
        return self._class_regex

    def regex_is_exact(self, max_chars: int = REGEX_MAX_CHARS) -> bool:
        """Whether :meth:`regex` admits exactly the DFA's codes (and the DFA is exact)."""
        return self.is_exact and (self._is_product or self._dfa_regex_size <= max_chars)

    @cached_property
    def _is_product(self) -> bool:
        # Every position independent of the others: the class pattern is exact and shortest.
        return all(len(layer) == 1 and len(layer[0]) == 1 for layer in self.layers)

    @cached_property
    def _dfa_regex_size(self) -> int:
        # Length of the expanded pattern, computed bottom-up without building it.
        below = [0]
        for layer in reversed(self.layers):
            sizes = []
            for transitions in layer:
                total = sum(len(_regex_class(chars)) + below[target] for chars, target in transitions)
                if len(transitions) > 1:
                    total += len(transitions) + 1  # parentheses and bars
                sizes.append(total)
            below = sizes
        return below[0] + 2

    @cached_property
    def _dfa_regex(self) -> str:
        below = [""]
        for layer in reversed(self.layers):
            parts = []
            for transitions in layer:
                alts = [_regex_class(chars) + below[target] for chars, target in transitions]
                parts.append(alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")")
            below = parts
        return "^" + below[0] + "$"

    @cached_property
    def _class_regex(self) -> str:
        # Runs of equal classes are written once with a count: [0-4]{6}.
        runs: list[tuple[str, int]] = []
        for chars in self.position_chars():
            cls = _regex_class(chars)
            if runs and runs[-1][0] == cls:
                runs[-1] = (cls, runs[-1][1] + 1)
            else:
                runs.append((cls, 1))
        return "^" + "".join(cls if n == 1 else f"{cls}{{{n}}}" for cls, n in runs) + "$"


def code_language(
    checker: ValidityChecker, exclude: Iterable[str] = (), limit: int = DEFAULT_LIMIT
) -> CodeLanguage:
    """The codes a model may write: legal under ``checker`` and not in ``exclude``.

    When the space has at most ``limit`` codes (``size_bound``), the legal
    codes are enumerated (once per checker; the list is cached on it) and the
    result is exact. Otherwise it is a format-level superset that ignores
    ``exclude``, structural rules and constraints.

    The exact language's ``fallback`` is the language of all legal codes
    (see :meth:`CodeLanguage.regex`). Raises ValueError when an exact
    language would be empty.
    """
    space = checker.space
    if space.size_bound() > limit:
        return _format_language(space)
    legal, all_legal = _legal_codes(checker)
    excluded = set(exclude)
    codes = [c for c in legal if c not in excluded] if excluded else legal
    if len(codes) == len(legal):
        return all_legal
    if not codes:
        raise ValueError("no legal, unseen code left")
    layers = _minimal_layers_of_codes(codes, space.length)
    return CodeLanguage(mode="exact", length=space.length, count=len(codes), layers=layers, fallback=all_legal)


def legal_codes(checker: ValidityChecker, limit: int = DEFAULT_LIMIT) -> tuple[str, ...] | None:
    """Every legal code of the checker's space, sorted and cached; None when the space exceeds ``limit``."""
    if checker.space.size_bound() > limit:
        return None
    return _legal_codes(checker)[0]


def _legal_codes(checker: ValidityChecker) -> tuple[tuple[str, ...], CodeLanguage]:
    """Sorted legal codes of the checker's space and their language, cached on the checker.

    The cache is keyed by what decides legality (space, constraints and
    resource function), so a checker whose fields are replaced recomputes.
    """
    key = (checker.space, tuple(checker.constraints), checker.resources)
    cached = checker.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0][0] is key[0] and cached[0][1:] == key[1:]:
        return cached[1], cached[2]
    codes = tuple(sorted(checker.legal(checker.space.enumerate())))
    if not codes:
        raise ValueError("no legal, unseen code left (the space has no legal code at all)")
    length = checker.space.length
    lang = CodeLanguage(mode="exact", length=length, count=len(codes), layers=_minimal_layers_of_codes(codes, length))
    checker.__dict__[_CACHE_ATTR] = (key, codes, lang)
    return codes, lang


# ======================================================= DFA construction
def _minimal_layers_of_codes(codes: Sequence[str], length: int) -> tuple[Layer, ...]:
    """Minimal layered DFA of distinct, equal-length codes, built bottom-up.

    At each position the prefixes are grouped by their one-character
    extensions and the state those lead to; prefixes with the same outgoing
    edges have the same suffix set and share a state.
    """
    ordered = codes if _is_sorted(codes) else sorted(codes)
    state_of: dict[str, int] = dict.fromkeys(ordered, 0)  # full codes -> the end state
    signatures: list[list[tuple[tuple[str, int], ...]]] = [[] for _ in range(length)]
    for pos in range(length - 1, -1, -1):
        edges: dict[str, list[tuple[str, int]]] = {}
        for text, state in state_of.items():
            edges.setdefault(text[:pos], []).append((text[pos], state))
        ids: dict[tuple[tuple[str, int], ...], int] = {}
        layer_sigs = signatures[pos]
        next_state: dict[str, int] = {}
        for prefix, out in edges.items():
            sig = tuple(out)
            sid = ids.get(sig)
            if sid is None:
                sid = ids[sig] = len(layer_sigs)
                layer_sigs.append(sig)
            next_state[prefix] = sid
        state_of = next_state
    return _finalise(signatures, root=0)


def _format_language(space: SearchSpace) -> CodeLanguage:
    """Format-level language: option ranges, plus inactive positions fixed to 0 where affordable."""
    signatures = _format_signatures(space)
    if signatures is None:
        # Too many condition states: every position takes its full option range.
        layers = tuple((((NCODE_ALPHABET[: len(d.options)], 0),),) for d in space.decisions)
        return CodeLanguage(mode="format", length=space.length, count=None, layers=layers)
    return CodeLanguage(mode="format", length=space.length, count=None, layers=_finalise(signatures, root=0))


def _format_signatures(space: SearchSpace) -> list[list[tuple[tuple[str, int], ...]]] | None:
    """Layers of the canonical-code automaton of a space (no structural rules), minimised.

    A state at position ``i`` remembers, for each earlier decision that a
    later one depends on, its option index or -1 when it was inactive. That
    is all the conditions need. Returns None when a layer grows past
    ``_FORMAT_MAX_STATES`` states.
    """
    decisions = space.decisions
    length = len(decisions)
    position = {d.name: i for i, d in enumerate(decisions)}
    conditions = [
        [(position[name], frozenset(decisions[position[name]].option_index(o) for o in allowed))
         for name, allowed in d.active_if.items()]
        for d in decisions
    ]
    # tracked[i]: positions before i that some decision at i or later looks at.
    tracked: list[tuple[int, ...]] = []
    for i in range(length + 1):
        tracked.append(tuple(sorted({j for k in range(i, length) for j, _ in conditions[k] if j < i})))

    # Forward pass: reachable condition states, transitions as {char: next index}.
    forward: list[list[dict[str, int]]] = []
    layer_states: dict[tuple[int, ...], int] = {(): 0}
    for i, d in enumerate(decisions):
        here = tracked[i]
        nxt_keys = tracked[i + 1]
        nxt_states: dict[tuple[int, ...], int] = {}
        transitions: list[dict[str, int]] = []
        for values in layer_states:
            known = dict(zip(here, values))
            active = all(known[j] != -1 and known[j] in allowed for j, allowed in conditions[i])
            choices = range(len(d.options)) if active else (0,)
            out: dict[str, int] = {}
            for option in choices:
                known[i] = option if active else -1
                key = tuple(known[j] for j in nxt_keys)
                out[NCODE_ALPHABET[option]] = nxt_states.setdefault(key, len(nxt_states))
            transitions.append(out)
        if len(nxt_states) > _FORMAT_MAX_STATES:
            return None
        forward.append(transitions)
        layer_states = nxt_states

    # Backward pass: merge states with identical outgoing edges.
    signatures: list[list[tuple[tuple[str, int], ...]]] = [[] for _ in range(length)]
    merged_next = [0] * len(layer_states)
    for i in range(length - 1, -1, -1):
        ids: dict[tuple[tuple[str, int], ...], int] = {}
        merged_here = []
        for out in forward[i]:
            sig = tuple(sorted((c, merged_next[t]) for c, t in out.items()))
            sid = ids.get(sig)
            if sid is None:
                sid = ids[sig] = len(signatures[i])
                signatures[i].append(sig)
            merged_here.append(sid)
        merged_next = merged_here
    return signatures


def _finalise(signatures: list[list[tuple[tuple[str, int], ...]]], root: int) -> tuple[Layer, ...]:
    """Renumber states top-down in order of first reach and merge edges by target into classes."""
    layers: list[Layer] = []
    current = [root]  # old ids of this layer, in new-id order
    for pos, layer_sigs in enumerate(signatures):
        last = pos == len(signatures) - 1
        renumber: dict[int, int] = {}
        order: list[int] = []
        layer: list[tuple[Transition, ...]] = []
        for old in current:
            by_target: dict[int, list[str]] = {}
            for char, target in layer_sigs[old]:
                if not last and target not in renumber:
                    renumber[target] = len(order)
                    order.append(target)
                new_target = 0 if last else renumber[target]
                by_target.setdefault(new_target, []).append(char)
            groups = sorted(("".join(sorted(chars)), t) for t, chars in by_target.items())
            layer.append(tuple(groups))
        layers.append(tuple(layer))
        current = order
    return tuple(layers)


def _is_sorted(codes: Sequence[str]) -> bool:
    return all(codes[i] < codes[i + 1] for i in range(len(codes) - 1))


# ================================================== character-class text
def _ranges(chars: str) -> str:
    """``"01234ab"`` -> ``"0-4ab"`` (runs of three or more consecutive characters become ranges)."""
    points = sorted(set(chars))
    out: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and ord(points[j + 1]) == ord(points[j]) + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{points[i]}-{points[j]}")
        else:
            out.extend(points[i : j + 1])
        i = j + 1
    return "".join(out)


def _gbnf_class(chars: str) -> str:
    return f'"{chars}"' if len(chars) == 1 else f"[{_ranges(chars)}]"


def _regex_class(chars: str) -> str:
    return chars if len(chars) == 1 else f"[{_ranges(chars)}]"


# ============================================================ GBNF helpers
def gbnf_literal(text: str) -> str:
    """``text`` as a quoted GBNF literal (escapes backslash, quote and control characters)."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_key(name: str) -> str:
    """GBNF literal for the JSON text ``"name":``."""
    return gbnf_literal(json.dumps(name, ensure_ascii=False) + ":")


def _repeat(item: str, low: int, high: int, sep: str) -> str:
    """GBNF for ``low..high`` copies of ``item`` separated by ``sep`` (high >= 1).

    Spelt out with nested optional groups: ``a (s a (s a)?)?`` for 1..3.
    """
    step = _join(sep, item)
    optional = ""
    for _ in range(high - max(low, 1)):
        optional = f"( {_join(step, optional)} )?"
    body = _join(item, *([step] * (max(low, 1) - 1)), optional)
    return body if low >= 1 else f"( {body} )?"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _gbnf_array(item: str, low: int, high: int) -> str:
    """A JSON array of ``low..high`` items, optional single spaces inside the brackets."""
    if high == 0:
        return f'"[" {_SP} "]"'
    items = _repeat(item, max(low, 1), high, f'"," {_SP}')
    if low == 0:
        return f'"[" {_SP} ( {items} {_SP} )? "]"'
    return f'"[" {_SP} {items} {_SP} "]"'


def _gbnf_object(members: Sequence[tuple[str, str]]) -> str:
    """A JSON object with exactly these members, in order: [(key, value rule)]."""
    parts = [f"{_json_key(key)} {_SP} {value}" for key, value in members]
    return f'"{{" {_SP} ' + f' "," {_SP} '.join(parts) + f' {_SP} "}}"'


def _gbnf_text(max_text: int) -> str:
    """A JSON string of 1..max_text characters, none of them a quote or a backslash."""
    return f'"\\"" {_repeat("tc", 1, max_text, "")} "\\""'


def _common_rules() -> list[str]:
    return [f'{_SP} ::= " "?']


def _check_counts(n_min: int, n_max: int) -> None:
    if n_min < 0 or n_max < 1 or n_min > n_max:
        raise ValueError(f"need 0 <= n_min <= n_max and n_max >= 1, got n_min={n_min}, n_max={n_max}")


# ============================================================== candidates
def candidates_gbnf(lang: CodeLanguage, n_min: int, n_max: int) -> str:
    """Grammar for ``{"codes": ["...", ...]}`` with ``n_min..n_max`` admitted codes.

    The grammar cannot stop a model from repeating a code inside one answer;
    the Coordinator removes duplicates.
    """
    _check_counts(n_min, n_max)
    root = _gbnf_object([("codes", _gbnf_array("code", n_min, n_max))])
    return "\n".join([f"root ::= {root}", *_common_rules()]) + "\n" + lang.gbnf_rules("code")


def candidates_json_schema(lang: CodeLanguage, n_min: int, n_max: int) -> dict:
    """JSON schema of the same object; codes are constrained by ``lang.regex()``.

    If ``lang.regex_is_exact()`` is False the pattern is only per-position
    character classes, so the schema admits a superset of the language.
    """
    _check_counts(n_min, n_max)
    return {
        "type": "object",
        "properties": {
            "codes": {
                "type": "array",
                "items": _code_schema(lang),
                "minItems": n_min,
                "maxItems": n_max,
            }
        },
        "required": ["codes"],
        "additionalProperties": False,
    }


def _code_schema(lang: CodeLanguage) -> dict:
    return {
        "type": "string",
        "pattern": lang.regex(),
        "minLength": lang.length,
        "maxLength": lang.length,
    }


# ==================================================================== pick
def pick_gbnf(codes: Sequence[str]) -> str:
    """Grammar for ``{"code": "<one of codes>"}`` (a ranker choosing from a pool)."""
    pool = _pool(codes)
    root = _gbnf_object([("code", "code")])
    if len({len(c) for c in pool}) == 1:
        rules = CodeLanguage.of_codes(pool).gbnf_rules("code")
    else:
        rules = "code ::= " + " | ".join(gbnf_literal(json.dumps(c)) for c in pool) + "\n"
    return "\n".join([f"root ::= {root}", *_common_rules()]) + "\n" + rules


def pick_code_gbnf(codes: Sequence[str]) -> str:
    """Grammar for one code of ``codes`` written bare, no JSON around it (the compact ranker's answer)."""
    pool = _pool(codes)
    if len({len(c) for c in pool}) == 1:
        states = CodeLanguage.of_codes(pool).gbnf_rules("code").splitlines()[1:]  # without the quoted form
        return "\n".join(["root ::= code-s0-0", *states]) + "\n"
    return "root ::= " + " | ".join(gbnf_literal(c) for c in pool) + "\n"


def pick_json_schema(codes: Sequence[str]) -> dict:
    """JSON schema for ``{"code": "<one of codes>"}``."""
    pool = _pool(codes)
    return {
        "type": "object",
        "properties": {"code": {"type": "string", "enum": pool}},
        "required": ["code"],
        "additionalProperties": False,
    }


def _pool(codes: Sequence[str]) -> list[str]:
    if isinstance(codes, str):
        raise TypeError("give a sequence of codes, not one string")
    pool = list(dict.fromkeys(codes))
    if not pool:
        raise ValueError("the pool of codes to pick from is empty")
    if any(not isinstance(c, str) or not c for c in pool):
        raise ValueError("every code to pick from must be a non-empty string")
    return pool


# ================================================================ strategy
# Bounds of the Navigator's answer. Every token a local model writes costs about 0.2 s on 2 cores
# (Qwen2.5-Coder-1.5B, one decoding thread: 4.1-4.9 tokens/s), so the strategy is kept to what the
# Generator uses: a plan of at most 100 characters, two observations, the directions per decision, at most
# one extra rule and three example codes.
STRATEGY_MAX_TEXT = 100
STRATEGY_MAX_PATTERNS = 2
STRATEGY_MAX_CONSTRAINTS = 1
STRATEGY_MAX_EXAMPLES = 3
# Options a direction names per decision, to prefer and to avoid each ("the top two"): a model told it may
# list every option does, and six decisions of five NAS-Bench-201 operations then cost ~300 tokens.
STRATEGY_MAX_OPTIONS = 2


def strategy_gbnf(
    space: SearchSpace,
    lang: CodeLanguage,
    *,
    max_text: int = STRATEGY_MAX_TEXT,
    max_patterns: int = STRATEGY_MAX_PATTERNS,
    max_constraints: int = STRATEGY_MAX_CONSTRAINTS,
    max_examples: int = STRATEGY_MAX_EXAMPLES,
) -> str:
    """Grammar of the Navigator's strategy object.

    Keys in order: ``summary`` (string), ``patterns`` (strings),
    ``directions`` (one member per decision, in space order, each
    ``{"prefer": [options], "avoid": [options]}``), ``constraints``
    (strings) and ``example_codes`` (codes of ``lang``). Strings hold
    1..max_text printable characters without quotes, backslashes or line
    breaks, so every field is bounded and a small model cannot ramble on.
    """
    _check_strategy_bounds(max_text, max_patterns, max_constraints, max_examples)
    option_rules: dict[tuple[str, ...], int] = {}
    for d in space.decisions:
        option_rules.setdefault(d.options, len(option_rules))
    directions = _gbnf_object([(d.name, f"dir-{option_rules[d.options]}") for d in space.decisions])
    root = _gbnf_object(
        [
            ("summary", "text"),
            ("patterns", _gbnf_array("text", 0, max_patterns)),
            ("directions", "directions"),
            ("constraints", _gbnf_array("text", 0, max_constraints)),
            ("example_codes", _gbnf_array("code", 0, max_examples)),
        ]
    )
    lines = [f"root ::= {root}", f"directions ::= {directions}"]
    for options, k in option_rules.items():
        choice = " | ".join(gbnf_literal(json.dumps(o, ensure_ascii=False)) for o in options)
        array = _gbnf_array(f"opt-{k}", 0, min(len(options), STRATEGY_MAX_OPTIONS))
        lines.append(f'dir-{k} ::= {_gbnf_object([("prefer", array), ("avoid", array)])}')
        lines.append(f"opt-{k} ::= {choice}")
    lines.append(f"text ::= {_gbnf_text(max_text)}")
    lines.append(f"tc ::= {_GBNF_TEXT_CHAR}")
    lines += _common_rules()
    return "\n".join(lines) + "\n" + lang.gbnf_rules("code")


def strategy_json_schema(
    space: SearchSpace,
    lang: CodeLanguage,
    *,
    max_text: int = STRATEGY_MAX_TEXT,
    max_patterns: int = STRATEGY_MAX_PATTERNS,
    max_constraints: int = STRATEGY_MAX_CONSTRAINTS,
    max_examples: int = STRATEGY_MAX_EXAMPLES,
) -> dict:
    """JSON schema of the same strategy object (see :func:`strategy_gbnf`)."""
    _check_strategy_bounds(max_text, max_patterns, max_constraints, max_examples)
    # The bound sits in the pattern as well: llama.cpp's schema converter ignores maxLength beside a pattern.
    text = {"type": "string", "minLength": 1, "maxLength": max_text,
            "pattern": f"^{_REGEX_TEXT_CHAR}{{1,{max_text}}}$"}

    def strings(n: int) -> dict:
        return {"type": "array", "items": dict(text), "minItems": 0, "maxItems": n}

    directions = {}
    for d in space.decisions:
        options = {"type": "array", "items": {"type": "string", "enum": list(d.options)},
                   "minItems": 0, "maxItems": min(len(d.options), STRATEGY_MAX_OPTIONS)}
        directions[d.name] = {
            "type": "object",
            "properties": {"prefer": dict(options), "avoid": dict(options)},
            "required": ["prefer", "avoid"],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": {
            "summary": dict(text),
            "patterns": strings(max_patterns),
            "directions": {
                "type": "object",
                "properties": directions,
                "required": [d.name for d in space.decisions],
                "additionalProperties": False,
            },
            "constraints": strings(max_constraints),
            "example_codes": {"type": "array", "items": _code_schema(lang), "minItems": 0, "maxItems": max_examples},
        },
        "required": ["summary", "patterns", "directions", "constraints", "example_codes"],
        "additionalProperties": False,
    }


def _check_strategy_bounds(max_text: int, *counts: int) -> None:
    if max_text < 1:
        raise ValueError("max_text must be at least 1")
    if any(n < 0 for n in counts):
        raise ValueError("the maximum counts must not be negative")
