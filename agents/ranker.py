"""The LLM ranker: an LLM picks the most promising code out of a candidate pool.

The pool comes from :mod:`collm_nas.tools.pools` (pruned-subspace samples,
mutations of the best trials, or screened proposals). The ranker shows the
model a bounded, normalised view of the history (:func:`history_lines`) and
the pool, and asks for ``{"code": "<one pool code>"}``. Where the endpoint
offers constrained decoding the answer is held to the pool by a grammar
(llama.cpp) or a JSON schema enum (vLLM); otherwise the reply is read
tolerantly. An answer outside the pool, or no usable answer at all, makes
the ranker draw a fresh pool (``redraw``) and ask again, a bounded number of
times.

With ``scoring="logprob"`` the model writes no pick: the pool is shown as
lettered options, and one token of answer gives the model's probability of
every letter. The pool is asked in several orders (cyclic shifts; by default one
per candidate, so that every candidate stands once in every place) and each
candidate's probabilities are averaged over them: the model's preference, with its position bias averaged
out, at one output token a call (llama.cpp reuses the prompt's unchanged
prefix between the orders). An endpoint without log-probabilities makes the
ranker pick the usual way, and says so in the outcome's ``note``.

:class:`~collm_nas.llm.chat_models.LLMUnavailable` is not caught: the
caller decides what to do without the LLM (usually: take a random pool code).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from collm_nas.llm.chat_models import LLMUnavailable
from collm_nas.llm.model_files import RANKER_STYLES
from collm_nas.agents.prompting import render
from collm_nas.llm.structured import StructuredChat, extract_json_object
from collm_nas.core.space import SearchSpace
from collm_nas.tools.grammar import pick_code_gbnf, pick_gbnf, pick_json_schema

__all__ = [
    "LLMRanker",
    "PickAnswer",
    "RANKER_SCORINGS",
    "RANKER_STYLES",
    "RankOutcome",
    "history_lines",
    "make_rank_tool",
    "parse_pick",
]

NO_HISTORY = "(nothing measured yet)"
# How the ranker asks. "full": the space described, rewards as 0..1 decimals, the answer {"code": ...}.
# "compact": what a fine-tuned ranker was trained on (collm_nas.finetune.train): a one-line space header,
# fewer history lines with two-digit scores, and the bare code as the answer.
COMPACT_TOP_K = 6
COMPACT_RECENT = 4
# How the ranker chooses: "pick" (the model writes a pool code) or "logprob" (the probabilities of lettered options).
RANKER_SCORINGS = ("pick", "logprob")
# Option letters of a logprob pool (RunConfig.ranker_pool_size is at most 50).
CHOICE_LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
PICK_ANSWER = 'Answer with one JSON object and nothing else: {"code": "<one code copied from the pool>"}.'
CHOICE_ANSWER = "Answer with the letter of the candidate you choose and nothing else."


class PickAnswer(BaseModel):
    """The ranker's structured output."""

    code: str = Field(description="the chosen NCode, copied from the candidate pool")


@dataclass
class RankOutcome:
    """What one :meth:`LLMRanker.pick` did.

    ``code`` is the chosen pool code, or None when every attempt failed.
    ``pool`` is the pool of the last question asked. ``attempts`` counts the
    questions (LLM calls), ``outside_pool`` the answers naming a code that was
    not in the pool, ``unparsed`` the answers with no code at all. ``calls``
    holds one figures dict per call, in the shape the CoLLM agents record.
    """

    code: str | None
    pool: list[str]
    attempts: int = 0
    outside_pool: int = 0
    unparsed: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, float] | None = None  # logprob scoring: each pool code's mean probability over the orders
    note: str | None = None  # what went otherwise than asked (logprob scoring that fell back to a pick)

    @property
    def ok(self) -> bool:
        return self.code is not None


# ================================================================ history
def _fmt_reward(x: float) -> str:
    return f"{x:.3f}"


def history_lines(trials: Sequence[Any], mode: str = "max", top_k: int = 20, recent: int = 10,
                  two_digits: bool = False) -> str:
    """The history as ``NCODE|reward`` lines, best first, bounded and normalised.

    Only successful trials (``.ok``) are shown: the ``top_k`` best plus the
    ``recent`` most recently evaluated others (``trials`` is in evaluation
    order), so the text never grows past ``top_k + recent`` lines. Rewards are
    min-max normalised over the shown trials to ``[0, 1]``, 1 being the best
    (for ``mode="min"`` the smallest value); when all shown values are equal
    every reward is 1. With ``two_digits`` the reward is written as an integer
    from ``00`` (worst shown) to ``99`` (best shown), which is shorter in tokens.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if top_k < 0 or recent < 0:
        raise ValueError("top_k and recent must not be negative")
    ok: list[tuple[int, Any]] = []
    codes: set[str] = set()
    for order, t in enumerate(trials):
        if getattr(t, "ok", False) and t.value is not None and t.ncode not in codes:
            codes.add(t.ncode)
            ok.append((order, t))
    if not ok:
        return NO_HISTORY
    sign = 1.0 if mode == "max" else -1.0
    # Best first; ties keep the earlier trial first.
    best_first = sorted(ok, key=lambda item: (-sign * float(item[1].value), item[0]))
    shown = best_first[:top_k]
    chosen = {order for order, _ in shown}
    if recent:
        others = [item for item in ok if item[0] not in chosen][-recent:]
        shown += others
        shown.sort(key=lambda item: (-sign * float(item[1].value), item[0]))
    if not shown:
        return NO_HISTORY
    scores = [sign * float(t.value) for _, t in shown]
    hi, lo = max(scores), min(scores)
    span = hi - lo
    lines = []
    for (_, t), s in zip(shown, scores):
        reward = (s - lo) / span if span > 0 else 1.0
        text = f"{round(reward * 99):02d}" if two_digits else _fmt_reward(reward)
        lines.append(f"{t.ncode}|{text}")
    return "\n".join(lines)


# ================================================================ parsing
def _code_pattern(pool: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(c) for c in sorted(set(pool), key=len, reverse=True))
    return re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])")


def parse_pick(pool: Sequence[str]) -> Callable[[str], PickAnswer | None]:
    """A tolerant reader of a free-text answer.

    A JSON object with a ``code`` field is taken at its word (even when the
    code is not in the pool, so that such answers are counted as outside the
    pool); otherwise the first pool code that appears in the text as a whole
    word is the pick.
    """
    pattern = _code_pattern(pool) if pool else None

    def parse(text: str) -> PickAnswer | None:
        obj = extract_json_object(text or "")
        if obj is not None and isinstance(obj.get("code"), (str, int)) and str(obj["code"]).strip():
            return PickAnswer(code=str(obj["code"]).strip())
        if pattern is None:
            return None
        match = pattern.search(text or "")
        return PickAnswer(code=match.group(0)) if match else None

    return parse


def choice_orders(pool: Sequence[str], orders: int) -> list[list[str]]:
    """``orders`` cyclic shifts of ``pool``, spread evenly (as many as the pool has places at most): every
    candidate stands in a different place in each."""
    size = len(pool)
    shifts = sorted({(r * size) // max(1, min(orders, size)) for r in range(max(1, min(orders, size)))})
    return [list(pool[s:]) + list(pool[:s]) for s in shifts]


def _in_pool(code: str | None, pool: Sequence[str]) -> str | None:
    """The pool code meant by ``code`` (spaces and case forgiven), or None."""
    if not code:
        return None
    code = code.strip().strip('"').strip()
    if code in pool:
        return code
    lowered = code.lower()
    return lowered if lowered in pool else None


# ================================================================ the ranker
class LLMRanker:
    """Asks a chat model for the most promising code of a pool, redrawing pools on misses."""

    @classmethod
    def for_roles(cls, roles: Any, default: "LLMRanker | None" = None, *, scoring: str = "pick",
                  orders: int | None = None) -> "LLMRanker":
        """The ranker that asks a run's ranker model (``LLMRoles``) the way it expects: a tuned model as it
        was trained (its prompt style and history lengths), any other in the full style; choosing by
        ``scoring`` over ``orders`` orders."""
        style = getattr(roles, "ranker_style", None)
        if style is None:
            base = default or cls()
            if (scoring, orders) == (base.scoring, base.orders):
                return base
            return cls(style=base.style, top_k=base.top_k, recent=base.recent, role=base.role, kind=base.kind,
                       scoring=scoring, orders=orders)
        top_k, recent = getattr(roles, "ranker_history", (None, None))
        return cls(style=style, top_k=top_k, recent=recent, scoring=scoring, orders=orders)

    def __init__(self, *, top_k: int | None = None, recent: int | None = None, role: str = "ranker",
                 kind: str = "rank", style: str = "full", scoring: str = "pick", orders: int | None = None) -> None:
        if style not in RANKER_STYLES:
            raise ValueError(f"ranker style must be one of {', '.join(RANKER_STYLES)}, got {style!r}")
        if scoring not in RANKER_SCORINGS:
            raise ValueError(f"ranker scoring must be one of {', '.join(RANKER_SCORINGS)}, got {scoring!r}")
        if orders is not None and orders < 1:
            raise ValueError("orders must be at least 1")
        compact = style == "compact"
        self.style = style
        self.top_k = top_k if top_k is not None else (COMPACT_TOP_K if compact else 20)
        self.recent = recent if recent is not None else (COMPACT_RECENT if compact else 10)
        self.role = role
        self.kind = kind
        self.scoring = scoring
        self.orders = orders

    def messages(
        self,
        space: SearchSpace,
        trials: Sequence[Any],
        pool: Sequence[str],
        *,
        mode: str = "max",
        metric: str = "value",
        constraints: Sequence[str] = (),
        lettered: bool = False,
    ) -> list[BaseMessage]:
        """The ranker's question: the history, then the pool, one code a line to pick from; ``lettered``, the
        question of logprob scoring: the pool as options (``A. CODE``), one letter to answer. Everything before
        the pool is the same in every order of one pool."""
        lines = [f"{label}. {code}" for label, code in zip(CHOICE_LABELS, pool)] if lettered else list(pool)
        shown = "\n".join(lines)
        if self.style == "compact":
            user = render("ranker_compact_user", space=space.name, length=space.length,
                          history=history_lines(trials, mode, self.top_k, self.recent, two_digits=True), pool=shown)
            system = render("ranker_compact_choice_system" if lettered else "ranker_compact_system")
            return [SystemMessage(system), HumanMessage(user)]
        system = render("ranker_system", space=space.describe(constraints), metric=metric,
                        answer=CHOICE_ANSWER if lettered else PICK_ANSWER)
        user = render("ranker_choice_user" if lettered else "ranker_user",
                      history=history_lines(trials, mode, self.top_k, self.recent), pool=shown, metric=metric)
        return [SystemMessage(system), HumanMessage(user)]

    def pick(
        self,
        chat: StructuredChat,
        space: SearchSpace,
        trials: Sequence[Any],
        pool: Sequence[str],
        *,
        mode: str = "max",
        redraw: Callable[[], list[str]] | None = None,
        max_redraws: int = 2,
        metric: str = "value",
        constraints: Sequence[str] = (),
        calls: list[dict[str, Any]] | None = None,
    ) -> RankOutcome:
        """Ask for the best code of ``pool``; see :class:`RankOutcome`.

        When an answer is not a pool code (or there is none), ``redraw()``
        gives the next pool (without ``redraw`` the same pool is asked again),
        at most ``max_redraws`` times, so at most ``max_redraws + 1`` calls.
        An empty pool (given or redrawn) ends the attempt with ``code=None``.
        Call figures are appended to ``outcome.calls`` and, when given, to
        ``calls`` as they happen (so they survive an exception).
        :class:`LLMUnavailable` propagates after its failed call is recorded.
        """
        if max_redraws < 0:
            raise ValueError("max_redraws must not be negative")
        current = list(dict.fromkeys(pool))
        outcome = RankOutcome(code=None, pool=current)

        def record(entry: dict[str, Any]) -> None:
            outcome.calls.append(entry)
            if calls is not None:
                calls.append(entry)

        if self.scoring == "logprob" and current:
            refused = getattr(chat, "logprobs_refused", None)
            if refused is None:
                self._score(chat, space, trials, current, outcome, record, mode=mode, metric=metric,
                            constraints=constraints)
                if outcome.code is not None:
                    return outcome
                if outcome.note is None:
                    outcome.note = "logprob scoring read no option's probability; the model picked instead"
            else:
                outcome.note = f"{refused}; the model picks instead"

        for attempt in range(max_redraws + 1):
            if attempt > 0:
                if redraw is not None:
                    current = list(dict.fromkeys(redraw() or []))
                outcome.pool = current
            if not current:
                break
            messages = self.messages(space, trials, current, mode=mode, metric=metric, constraints=constraints)
            outcome.attempts += 1
            try:
                result = chat.invoke(
                    messages,
                    output_model=PickAnswer,
                    grammar=pick_code_gbnf(current) if self.style == "compact" else pick_gbnf(current),
                    json_schema=pick_json_schema(current),
                    parse_text=parse_pick(current),
                )
            except LLMUnavailable as exc:
                record({"role": self.role, "kind": self.kind, "ok": False, "mode": chat.mode,
                        "error": str(exc), "pool": len(current)})
                raise
            answer = result.value.code if result.value is not None else None
            chosen = _in_pool(answer, current)
            error = result.error
            if chosen is None:
                if answer:
                    outcome.outside_pool += 1
                    error = f"answered {answer[:40]!r}, which is not in the pool"
                else:
                    outcome.unparsed += 1
                    error = error or "no code in the answer"
            record({
                "role": self.role, "kind": self.kind, "ok": chosen is not None, "mode": result.mode,
                "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "latency_s": round(result.latency_s, 4), "attempts": result.attempts,
                "error": None if chosen is not None else error, "pool": len(current),
            })
            if chosen is not None:
                outcome.code = chosen
                break
        return outcome

    def _score(self, chat: StructuredChat, space: SearchSpace, trials: Sequence[Any], pool: list[str],
               outcome: RankOutcome, record: Callable[[dict[str, Any]], None], **question: Any) -> None:
        """Logprob scoring of ``pool``: ``outcome.code`` is the candidate of the highest mean probability over
        the orders that could be read (ties: the earlier in ``pool``), None when none could. An endpoint that
        returns no log-probabilities is remembered on ``chat`` (``logprobs_refused``) and not asked again."""
        pool = pool[: len(CHOICE_LABELS)]
        orders = choice_orders(pool, self.orders or len(pool))  # by default a Latin square: every place once
        totals = dict.fromkeys(pool, 0.0)
        read = 0
        for n, order in enumerate(orders):
            labels = list(CHOICE_LABELS[: len(order)])
            messages = self.messages(space, trials, order, lettered=True, **question)
            outcome.attempts += 1
            try:
                result = chat.choice_logprobs(messages, labels)
            except LLMUnavailable as exc:
                record({"role": self.role, "kind": self.kind, "ok": False, "mode": "logprob", "error": str(exc),
                        "pool": len(pool), "order": n})
                raise
            record({"role": self.role, "kind": self.kind, "ok": result.ok, "mode": "logprob",
                    "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                    "latency_s": round(result.latency_s, 4), "attempts": result.attempts, "error": result.error,
                    "pool": len(pool), "order": n})
            if result.logprobs is None:
                outcome.unparsed += 1
                if result.error and ("refused" in result.error or "no log-probabilities" in result.error):
                    chat.logprobs_refused = result.error  # type: ignore[attr-defined]
                    outcome.note = f"{result.error}; the model picks instead"
                    return
                continue
            read += 1
            for label, code in zip(labels, order):
                totals[code] += math.exp(result.logprobs[label])
        if read:
            outcome.scores = {code: total / read for code, total in totals.items()}
            outcome.code = max(pool, key=lambda code: (outcome.scores[code], -pool.index(code)))


# ================================================================ LangChain tool
class RankArgs(BaseModel):
    pool: list[str] = Field(default_factory=list,
                            description="candidate NCodes to choose from; empty: draw a fresh pool")


def make_rank_tool(
    chat: StructuredChat,
    space: SearchSpace,
    trials: Callable[[], Sequence[Any]],
    draw_pool: Callable[[], list[str]],
    *,
    mode: str = "max",
    metric: str = "value",
    ranker: LLMRanker | None = None,
    max_redraws: int = 2,
):
    """The ranker as a LangChain tool: given a pool (or none: ``draw_pool()``), the chosen code.

    ``trials`` is called on every use so the tool always sees the current
    history. The tool returns a JSON string ``{"code": ..., "pool_size": ...,
    "attempts": ..., "outside_pool": ...}`` (``code`` null when all attempts
    failed).
    """
    from langchain_core.tools import StructuredTool

    ranker = ranker or LLMRanker()

    def rank_pool(pool: list[str] | None = None) -> str:
        start = [c for c in (pool or []) if isinstance(c, str)] or draw_pool()
        outcome = ranker.pick(chat, space, trials(), start, mode=mode, redraw=draw_pool,
                              max_redraws=max_redraws, metric=metric)
        return json.dumps({"code": outcome.code, "pool_size": len(outcome.pool),
                           "attempts": outcome.attempts, "outside_pool": outcome.outside_pool})

    return StructuredTool.from_function(
        func=rank_pool,
        name="rank_pool",
        description=(
            f"Ask the ranker model which candidate NCode of the '{space.name}' search space is most promising. "
            "Give a pool of candidate codes, or an empty list to draw a fresh pool; returns the chosen code."
        ),
        args_schema=RankArgs,
    )
