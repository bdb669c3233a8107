"""The search-space interface: ordered decisions, their options, and NCode.

Every space is a :class:`SearchSpace`: a list of :class:`Decision` objects
that NCode writes one character each. The generic machinery (encode, decode,
checks, neighbours, sampling, enumeration, description) lives here; a
concrete space (``collm_nas.spaces``: NAS-Bench-201, mbv3, YAML/JSON files)
adds its structural rules and its own architecture notation by overriding
:meth:`SearchSpace.structural_problems`, :meth:`SearchSpace.format_arch`,
:meth:`SearchSpace.parse_arch` and :meth:`SearchSpace.rules_text`.

Optional capability, declared rather than discovered: a space whose
``provides_features`` is True returns extra numeric features per code
(:meth:`SearchSpace.features`) that learned rankers add to their inputs.

NCode writes an architecture as one character per decision: the index of the
chosen option, ``0-9`` then ``a-z`` (so at most 36 options per decision).
Decisions may be *inactive* depending on other decisions (``active_if``); an
inactive decision is always written as ``0`` so that every architecture has
exactly one NCode.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from collm_nas.core.errors import UserError

NCODE_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
INACTIVE_CHAR = "0"


def index_to_char(index: int) -> str:
    return NCODE_ALPHABET[index]


def char_to_index(char: str) -> int:
    """Index of an NCode character, or -1 when it is not an NCode character."""
    return NCODE_ALPHABET.find(char.lower()) if len(char) == 1 else -1


@dataclass(frozen=True)
class Decision:
    """One position of the NCode: a named choice among options."""

    name: str
    options: tuple[str, ...]
    description: str = ""
    # Active only when each named decision takes one of the listed options.
    active_if: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Additive resource figures per option, aligned with ``options``.
    costs: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def option_index(self, option: str) -> int:
        try:
            return self.options.index(str(option))
        except ValueError:
            raise UserError(
                f"decision '{self.name}' has no option '{option}'; options are {', '.join(self.options)}"
            ) from None


@dataclass(frozen=True)
class Problem:
    """Why a code is not a legal architecture of its space."""

    kind: str  # length | character | inactive | structure | evaluator | constraint
    message: str


class SearchSpace:
    """Ordered decisions with options; encodes, decodes and checks NCodes.

    Subclasses add structural rules (``structural_problems``) and a native
    architecture format (``format_arch`` / ``parse_arch``).
    """

    # Optional capability: numeric features per code for learned rankers (see :meth:`features`).
    provides_features: ClassVar[bool] = False
    # Optional capability: the space's trainable network, as ``module.path:attribute`` of a
    # ``collm_nas.models.NetworkFamily`` (the train and proxy evaluators build it; None: the space has none,
    # so only an evaluator of the user's own can score it). A name, not an import: spaces sit below models.
    network: str | None = None
    # Optional capability: one network written by several codes, as ``module.path:function`` of
    # ``function(ncode) -> key`` (a space file's ``canonical:``); subclasses may override
    # :meth:`network_key` instead (NB201: isomorphic cells, edges that never reach the output).
    canonical_form: str | None = None
    # Spaces up to this size map every network to all its codes (:meth:`equivalents`).
    EQUIVALENTS_ENUMERATED: ClassVar[int] = 200_000

    def __init__(
        self,
        name: str,
        decisions: Sequence[Decision],
        description: str = "",
        base_costs: Mapping[str, float] | None = None,
        default_constraints: Sequence[str] = (),
        network: str | None = None,
        canonical_form: str | None = None,
    ) -> None:
        if not decisions:
            raise UserError(f"space '{name}' has no decisions; give at least one")
        self.name = name
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        self.description = description
        self.base_costs = dict(base_costs or {})
        self.default_constraints = tuple(default_constraints)
        if network is not None:
            self.network = network
        if canonical_form is not None:
            self.canonical_form = canonical_form
        self._key_function = None
        self._classes: dict[str, tuple[str, ...]] | None = None
        self._by_name = {d.name: i for i, d in enumerate(self.decisions)}
        self._check_definition()

    # ------------------------------------------------------------------ shape
    def _check_definition(self) -> None:
        if len(self._by_name) != len(self.decisions):
            raise UserError(f"space '{self.name}' names a decision twice; decision names must be unique")
        for pos, d in enumerate(self.decisions):
            if not 1 <= len(d.options) <= len(NCODE_ALPHABET):
                raise UserError(
                    f"decision '{d.name}' has {len(d.options)} options; NCode allows 1 to {len(NCODE_ALPHABET)}"
                )
            if len(set(d.options)) != len(d.options):
                raise UserError(f"decision '{d.name}' lists an option twice")
            for other, allowed in d.active_if.items():
                if other not in self._by_name:
                    raise UserError(f"decision '{d.name}' depends on unknown decision '{other}'")
                if self._by_name[other] >= pos:
                    raise UserError(
                        f"decision '{d.name}' depends on '{other}', which must come before it in the list"
                    )
                for option in allowed:
                    self.decisions[self._by_name[other]].option_index(option)
            for resource, values in d.costs.items():
                if len(values) != len(d.options):
                    raise UserError(
                        f"decision '{d.name}' gives {len(values)} '{resource}' costs for {len(d.options)} options"
                    )

    @property
    def length(self) -> int:
        return len(self.decisions)

    @property
    def has_conditions(self) -> bool:
        return any(d.active_if for d in self.decisions)

    def size_bound(self) -> int:
        """Product of the option counts: the exact size without conditions, an upper bound with them."""
        return math.prod(len(d.options) for d in self.decisions)

    def cardinality(self) -> int:
        """Number of distinct NCodes (architectures), before structural rules.

        Exact; for conditional spaces it walks the canonical codes, so callers
        facing large conditional spaces should look at :meth:`size_bound` first.
        """
        if not self.has_conditions:
            return self.size_bound()
        return sum(1 for _ in self.enumerate())

    def decision(self, name: str) -> Decision:
        return self.decisions[self._by_name[name]]

    # ---------------------------------------------------------------- codec
    def is_active(self, position: int, indices: Sequence[int]) -> bool:
        d = self.decisions[position]
        for other, allowed in d.active_if.items():
            j = self._by_name[other]
            if not self.is_active(j, indices):
                return False
            if self.decisions[j].options[indices[j]] not in allowed:
                return False
        return True

    def encode(self, choice: Mapping[str, object]) -> str:
        """NCode of an architecture given as ``{decision: option}``.

        Inactive decisions may be omitted; they are written as ``0``.
        """
        unknown = set(choice) - set(self._by_name)
        if unknown:
            raise UserError(f"unknown decision(s) {sorted(unknown)} for space '{self.name}'")
        indices: list[int] = []
        for pos, d in enumerate(self.decisions):
            indices.append(0)
            if self.is_active(pos, indices):
                if d.name not in choice:
                    raise UserError(f"architecture misses decision '{d.name}'")
                indices[pos] = d.option_index(str(choice[d.name]))
        return "".join(index_to_char(i) for i in indices)

    def decode(self, ncode: str) -> dict[str, str]:
        """``{decision: option}`` for the active decisions of a well-formed code."""
        problems = self.format_problems(ncode)
        if problems:
            raise UserError(f"malformed NCode '{ncode}': {problems[0].message}")
        indices = self.indices(ncode)
        return {
            d.name: d.options[indices[pos]]
            for pos, d in enumerate(self.decisions)
            if self.is_active(pos, indices)
        }

    def indices(self, ncode: str) -> list[int]:
        return [char_to_index(c) for c in ncode]

    def from_indices(self, indices: Sequence[int]) -> str:
        return "".join(index_to_char(i) for i in indices)

    def canonical(self, indices: Sequence[int]) -> str:
        """The NCode of ``indices`` with inactive decisions reset to ``0``."""
        fixed = list(indices)
        for pos in range(len(fixed)):
            if not self.is_active(pos, fixed):
                fixed[pos] = 0
        return self.from_indices(fixed)

    def format_arch(self, ncode: str) -> str:
        """A readable form of an architecture (benchmarks override with theirs)."""
        return ", ".join(f"{k}={v}" for k, v in self.decode(ncode).items())

    def parse_arch(self, text: str) -> str:
        """Inverse of :meth:`format_arch`: ``"a=1, b=x"`` -> NCode."""
        choice: dict[str, str] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise UserError(f"cannot read '{part.strip()}' as decision=option")
            choice[key.strip()] = value.strip()
        return self.encode(choice)

    # --------------------------------------------------------------- checks
    def format_problems(self, ncode: str) -> list[Problem]:
        """Length, alphabet and inactive-decision problems of a code."""
        if not isinstance(ncode, str):
            return [Problem("length", f"an NCode is a string, got {type(ncode).__name__}")]
        if len(ncode) != self.length:
            return [
                Problem(
                    "length",
                    f"has {len(ncode)} characters; space '{self.name}' needs {self.length} (one per decision)",
                )
            ]
        problems: list[Problem] = []
        indices = []
        for pos, (char, d) in enumerate(zip(ncode, self.decisions)):
            idx = char_to_index(char)
            if not 0 <= idx < len(d.options):
                problems.append(
                    Problem(
                        "character",
                        f"position {pos + 1} ('{d.name}') is '{char}'; allowed "
                        f"{self._allowed_chars(d)}",
                    )
                )
                idx = 0
            indices.append(idx)
        if problems:
            return problems
        if ncode != ncode.lower():
            return [Problem("character", "NCode letters are lower case")]
        for pos, d in enumerate(self.decisions):
            if indices[pos] != 0 and not self.is_active(pos, indices):
                problems.append(
                    Problem(
                        "inactive",
                        f"position {pos + 1} ('{d.name}') is inactive here and must be '{INACTIVE_CHAR}', got '{ncode[pos]}'",
                    )
                )
        return problems

    def structural_problems(self, ncode: str) -> list[Problem]:
        """Space-specific rules on a well-formed code (none by default)."""
        return []

    def problems(self, ncode: str) -> list[Problem]:
        """Everything wrong with a code as an architecture of this space (format, then structure)."""
        return self.format_problems(ncode) or list(self.structural_problems(ncode))

    def features(self, ncodes: Sequence[str]) -> list[list[float]]:
        """Extra numeric features per code (only where ``provides_features`` is True)."""
        raise NotImplementedError(f"space '{self.name}' provides no features")

    def option_text(self, position: int, option: str) -> str:
        """``option`` of the decision at ``position`` in words, for a question to a model (default: its name)."""
        return option

    def effective_options(self, ncode: str) -> list[str | None]:
        """Per position, the option the network really has there: the code's own (default), ``None`` where the
        decision is switched off (a conditional space); a space whose codes carry options that compute nothing
        names what they amount to (NAS-Bench-201: a dead edge is a cut one, ``none``)."""
        idx = self.indices(ncode)
        return [d.options[i] if self.is_active(p, idx) else None for p, (d, i) in enumerate(zip(self.decisions, idx))]

    def _allowed_chars(self, d: Decision) -> str:
        last = index_to_char(len(d.options) - 1)
        return "'0'" if last == "0" else f"'0'..'{last}'"

    @property
    def cost_names(self) -> set[str]:
        """Resources the space itself declares (``base_costs`` and per-option ``costs``)."""
        return set(self.base_costs) | {r for d in self.decisions for r in d.costs}

    def costs(self, ncode: str) -> dict[str, float]:
        """Additive resource figures declared in the space (base + per option)."""
        names = self.cost_names
        if not names:
            return {}
        indices = self.indices(ncode)
        totals = {r: float(self.base_costs.get(r, 0.0)) for r in names}
        for pos, d in enumerate(self.decisions):
            if self.is_active(pos, indices):
                for r, values in d.costs.items():
                    totals[r] += values[indices[pos]]
        return totals

    # --------------------------------------------------------- neighbourhood
    def neighbours(self, ncode: str) -> list[str]:
        """All codes that differ from ``ncode`` in one active decision."""
        indices = self.indices(ncode)
        out: list[str] = []
        seen = {ncode}
        for pos, d in enumerate(self.decisions):
            if not self.is_active(pos, indices):
                continue
            for alt in range(len(d.options)):
                if alt == indices[pos]:
                    continue
                changed = list(indices)
                changed[pos] = alt
                code = self.canonical(changed)
                if code not in seen:
                    seen.add(code)
                    out.append(code)
        return out

    def mutate(self, ncode: str, rng: random.Random) -> str:
        """Change one active decision to another option, chosen uniformly."""
        indices = self.indices(ncode)
        positions = [
            p for p, d in enumerate(self.decisions) if len(d.options) > 1 and self.is_active(p, indices)
        ]
        if not positions:
            return ncode
        pos = rng.choice(positions)
        alt = rng.randrange(len(self.decisions[pos].options) - 1)
        indices[pos] = alt if alt < indices[pos] else alt + 1
        return self.canonical(indices)

    def sample(self, rng: random.Random) -> str:
        """A uniformly random NCode (uniform per decision; canonical)."""
        return self.canonical([rng.randrange(len(d.options)) for d in self.decisions])

    def enumerate(self) -> Iterator[str]:
        """Every canonical NCode once, in lexicographic order of indices."""
        if not self.has_conditions:
            for combo in itertools.product(*(range(len(d.options)) for d in self.decisions)):
                yield self.from_indices(combo)
            return
        # Conditions refer only to earlier decisions, so a depth-first walk
        # that writes 0 for inactive decisions meets each canonical code once.
        indices = [0] * self.length

        def walk(pos: int) -> Iterator[str]:
            if pos == self.length:
                yield self.from_indices(indices)
                return
            choices = range(len(self.decisions[pos].options)) if self.is_active(pos, indices) else (0,)
            for i in choices:
                indices[pos] = i
                yield from walk(pos + 1)
            indices[pos] = 0

        yield from walk(0)

    # -------------------------------------------------------- one network, several codes
    @property
    def has_equivalents(self) -> bool:
        """Whether some codes of this space write the same network (:meth:`network_key`)."""
        return self.canonical_form is not None or type(self).network_key is not SearchSpace.network_key

    def network_key(self, ncode: str) -> str:
        """What identifies the network ``ncode`` writes: codes with one key are one architecture.

        By default every code is its own network; a space file's ``canonical: module:function`` (or a
        subclass) says otherwise. A run evaluates one code of each network (``RunConfig.same_networks``).
        """
        if self.canonical_form is None or len(ncode) != len(self.decisions) or not all(
                0 <= char_to_index(c) < len(d.options) for c, d in zip(ncode, self.decisions)):
            return ncode  # no canonical form, or not a code of this space (illegal anyway)
        if self._key_function is None:
            from collm_nas.core.registry import import_attribute
            self._key_function = import_attribute(self.canonical_form, f"canonical form of space '{self.name}'",
                                                  expects="function")
        try:
            return str(self._key_function(ncode))
        except Exception as e:  # a user's function: one line, never a traceback
            raise UserError(f"the canonical form {self.canonical_form} of space '{self.name}' failed on {ncode}: "
                            f"{type(e).__name__}: {e}; fix the function or drop 'canonical:'") from None

    def equivalents(self, ncode: str) -> tuple[str, ...]:
        """Every code of the network ``ncode`` writes (``ncode`` alone where there are none or the space is
        too large to enumerate), in enumeration order."""
        if not self.has_equivalents or self.cardinality() > self.EQUIVALENTS_ENUMERATED:
            return (ncode,)
        if self._classes is None:
            classes: dict[str, list[str]] = {}
            for code in self.enumerate():
                classes.setdefault(self.network_key(code), []).append(code)
            self._classes = {k: tuple(v) for k, v in classes.items()}
        return self._classes.get(self.network_key(ncode), (ncode,))

    # ----------------------------------------------------------- description
    def describe(self, constraints: Sequence[str] = ()) -> str:
        """A plain-language description of the space and its NCode."""
        bound = self.size_bound()
        size = f"{self.cardinality():,}" if bound <= 1_000_000 or not self.has_conditions else f"at most {bound:,}"
        lines = [f"Search space '{self.name}': {self.length} decisions, {size} architectures."]
        if self.description:
            lines.append(self.description.strip())
        lines.append(
            f"An architecture is written as an NCode: a string of exactly {self.length} characters, "
            "one per decision in the order below. Each character is the index of the chosen option "
            "(0-9, then a-z)."
        )
        for pos, d in enumerate(self.decisions):
            opts = ", ".join(f"{index_to_char(i)}={o}" for i, o in enumerate(d.options))
            text = f"  {pos + 1}. {d.name}: {opts}"
            if d.description:
                text += f" -- {d.description}"
            if d.active_if:
                conds = " and ".join(f"{k} in {{{', '.join(v)}}}" for k, v in d.active_if.items())
                text += f" (used only when {conds}; otherwise write 0)"
            lines.append(text)
        rules = self.rules_text()
        if rules:
            lines.append("Rules: " + rules)
        all_constraints = list(self.default_constraints) + [c for c in constraints if c not in self.default_constraints]
        if all_constraints:
            lines.append("Resource constraints: " + "; ".join(all_constraints) + ".")
        return "\n".join(lines)

    def rules_text(self) -> str:
        return ""

    def to_dict(self) -> dict:
        """The definition as plain data (the format the YAML/JSON loader reads)."""
        out: dict = {"name": self.name, "decisions": []}
        if self.description:
            out["description"] = self.description
        for d in self.decisions:
            item: dict = {"name": d.name, "options": list(d.options)}
            if d.description:
                item["description"] = d.description
            if d.active_if:
                item["active_if"] = {k: list(v) for k, v in d.active_if.items()}
            if d.costs:
                item["costs"] = {k: list(v) for k, v in d.costs.items()}
            out["decisions"].append(item)
        if self.base_costs:
            out["base_costs"] = dict(self.base_costs)
        if self.default_constraints:
            out["constraints"] = list(self.default_constraints)
        if self.network:
            out["network"] = self.network
        if self.canonical_form:
            out["canonical"] = self.canonical_form
        return out

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {self.length} decisions)"
