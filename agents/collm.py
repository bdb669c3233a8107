"""CoLLM-NAS: a stateful LLM Navigator and a stateless LLM Generator.

* The Navigator reads a bounded digest of the history (last round, best so
  far, per-option statistics) and a window of its own earlier strategies
  (kept in ``ctx.memory``, checkpointed) and writes a structured strategy.
* The Generator turns the latest strategy into candidate NCodes; it keeps no
  memory. When the Coordinator rejects codes it gets one corrective
  follow-up (``revise``).

Both ask for structured output under the strongest decoding the endpoint
supports: a grammar that admits only legal, unseen codes (llama.cpp), a
JSON schema (vLLM), tool calling, or tolerant parsing of plain text.

When the endpoint stays unavailable after retries the round runs on the
LLM-free fallback (the Coordinator tops up), a warning says so, and the LLM
is left alone for a few rounds before it is tried again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from collm_nas.llm.chat_models import LLMUnavailable
from collm_nas.agents.digest import (avoid_list, best_lines, best_title, last_round_lines, objective_text,
                                     objectives_phrase, option_stats)
from collm_nas.agents.prompting import render
from collm_nas.core import (Feedback, Generator, Navigator, Preference, RoundContext, SearchStrategy, Strategy,
                            ToolCallsPending)
from collm_nas.tools.grammar import (
    candidates_gbnf,
    candidates_json_schema,
    code_language,
    strategy_gbnf,
    strategy_json_schema,
)

# Earlier strategies the Navigator sees again (its bounded memory).
MEMORY_WINDOW = 4
# Rounds the LLM is left alone after it stayed unavailable through all retries.
LLM_COOLDOWN_ROUNDS = 3
# Longest generator reply kept (in checkpointed memory) for the corrective follow-up.
REPLY_KEEP_CHARS = 1500


class NavigatorAnswer(BaseModel):
    """The Navigator's structured output."""

    summary: str = Field("", description="one sentence: the plan for the next round")
    patterns: list[str] = Field(default_factory=list, description="observations drawn from the measurements")
    directions: dict[str, Preference] = Field(default_factory=dict,
                                             description="per decision name: option names to prefer / avoid")
    constraints: list[str] = Field(default_factory=list, description="rules the next candidates must follow")
    example_codes: list[str] = Field(default_factory=list, description="NCodes that fit the plan")


class CandidateAnswer(BaseModel):
    """The Generator's structured output."""

    codes: list[str] = Field(default_factory=list, description="candidate NCodes")


# ------------------------------------------------------------------ parsing
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def _json_object(text: str) -> dict | None:
    text = re.sub(r"```(?:json)?", "", text or "")
    match = _JSON_OBJECT.search(text)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def extract_codes(text: str) -> list[str]:
    """Candidate codes in free text: a JSON ``codes`` list, else code-like tokens.

    Tokens are words of digits and lower-case letters that contain a digit,
    so plain words are not taken for codes; wrong lengths and characters out
    of range are kept on purpose so the Coordinator can report them.
    """
    obj = _json_object(text)
    if obj is not None and isinstance(obj.get("codes"), list):
        return [str(c).strip() for c in obj["codes"]]
    tokens = re.findall(r"(?<![0-9A-Za-z])[0-9a-z]{2,}(?![0-9A-Za-z])", text or "")
    return [t for t in tokens if any(ch.isdigit() for ch in t)]


def parse_candidates():
    def parse(text: str) -> CandidateAnswer | None:
        codes = extract_codes(text)
        return CandidateAnswer(codes=codes) if codes else None

    return parse


def parse_strategy(text: str) -> NavigatorAnswer | None:
    obj = _json_object(text)
    if obj is not None:
        try:
            return NavigatorAnswer.model_validate(obj)
        except ValueError:
            pass
    text = " ".join((text or "").split())
    return NavigatorAnswer(summary=text[:300]) if text else None


# ---------------------------------------------------------------- LLM calls
def llm_ready(ctx: RoundContext) -> bool:
    return ctx.llm is not None and ctx.memory.get("llm_paused_until", 0) < ctx.round


def _unavailable(ctx: RoundContext, role: str, kind: str, mode: str, e: LLMUnavailable) -> None:
    ctx.memory["llm_paused_until"] = ctx.round + LLM_COOLDOWN_ROUNDS - 1
    ctx.memory.pop("navigator_strategy", None)  # the next LLM round plans afresh
    ctx.calls.append({"role": role, "kind": kind, "ok": False, "error": str(e), "mode": mode})
    ctx.warnings.append(f"{e}; round {ctx.round} runs on the LLM-free strategy, the LLM is tried again "
                        f"in round {ctx.round + LLM_COOLDOWN_ROUNDS}")


def _figures(role: str, kind: str, result: Any) -> dict[str, Any]:
    return {"role": role, "kind": kind, "ok": result.value is not None, "mode": result.mode,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "latency_s": round(result.latency_s, 4), "attempts": result.attempts, "error": result.error}


def tool_turn(ctx: RoundContext, role: str, kind: str, messages: list[BaseMessage], output_model: type[BaseModel],
              *, parse_text, json_schema: dict | None = None) -> Any:
    """The role's answer through a tool conversation, or ``NotImplemented`` where tools do not apply.

    The model may call the role's tools (``ctx.tools``) for up to
    ``ctx.tool_rounds`` rounds before it must answer. When it asks for tools,
    :class:`ToolCallsPending` hands the conversation to the engine, whose tool
    node answers the calls; the engine then asks the role again with
    ``ctx.conversation`` holding the results. Each model turn is one call in
    ``ctx.calls``, with the tools it asked for and the tool errors it was shown.
    ``json_schema`` (the space's bounded answer) is the answer tool's parameters.
    """
    chat = ctx.llm.chat(role)
    tools = ctx.tools(role) if ctx.tools is not None and ctx.tool_rounds > 0 else []
    if not tools or chat.mode != "tools":
        return NotImplemented
    conversation = list(ctx.conversation or messages)
    taken = sum(1 for m in conversation if isinstance(m, AIMessage) and m.tool_calls)
    shown = []  # the tool results of the last round, if any
    for m in reversed(conversation):
        if not isinstance(m, ToolMessage):
            break
        shown.append(m)
    try:
        out = chat.converse(conversation, output_model=output_model, tools=tools,
                            force_answer=taken >= ctx.tool_rounds, parse_text=parse_text,
                            answer_schema=json_schema)
    except LLMUnavailable as e:
        _unavailable(ctx, role, kind, "tools", e)
        return None
    if out is None:  # the server refused tool calling: the direct path from now on
        return NotImplemented
    result, message = out
    asked = [c["name"] for c in message.tool_calls if c["name"] != output_model.__name__]
    asked += [c.get("name") or "?" for c in getattr(message, "invalid_tool_calls", None) or ()]
    figures = _figures(role, kind, result)
    figures.update(tool_calls=asked, tool_errors=sum(1 for m in shown if m.status == "error"),
                   tool_round=taken + 1 if asked else taken)
    if result.value is None and asked:
        figures["ok"], figures["error"] = True, None  # a tool round, not a failed answer
        ctx.calls.append(figures)
        if not message.content:  # llama.cpp's server refuses an assistant message whose content is null
            message = message.model_copy(update={"content": "(calling tools)"})
        raise ToolCallsPending(role, conversation + [message])
    ctx.calls.append(figures)
    return result


def call_llm(ctx: RoundContext, role: str, kind: str, messages: list[BaseMessage], output_model: type[BaseModel],
             *, grammar: str | None, json_schema: dict | None, parse_text) -> Any:
    """One structured answer (through tools where they apply); figures in ``ctx.calls``. None: LLM unavailable."""
    answered = tool_turn(ctx, role, kind, messages, output_model, parse_text=parse_text, json_schema=json_schema)
    if answered is not NotImplemented:
        return answered
    chat = ctx.llm.chat(role)
    try:
        result = chat.invoke(messages, output_model=output_model, grammar=grammar, json_schema=json_schema,
                             parse_text=parse_text)
    except LLMUnavailable as e:
        _unavailable(ctx, role, kind, chat.mode, e)
        return None
    ctx.calls.append(_figures(role, kind, result))
    return result


def _language(ctx: RoundContext):
    """Codes the model may write: legal and not yet evaluated (exact for enumerable spaces)."""
    if ctx.checker is None:
        return None
    try:
        return code_language(ctx.checker, exclude=sorted(ctx.seen_codes()))
    except ValueError:  # nothing legal and unseen is left
        return None


# ----------------------------------------------------------------- the roles
class LLMNavigator(Navigator):
    """Writes each round's strategy from a bounded digest of the history."""

    tools = ("decode_ncode", "check_ncodes", "lookup_trials")
    multi_objective = True  # the digest shows the front and the prompts name the objectives

    def __init__(self, memory_window: int = MEMORY_WINDOW) -> None:
        self.memory_window = memory_window

    def messages(self, ctx: RoundContext) -> list[BaseMessage]:
        objective = ctx.goal
        earlier = ctx.memory.get("strategies") or []
        # Summaries only: the patterns were drawn from older data, and the prompt is paid for every round.
        memory = "\n".join(f"round {s['round']}: {s['summary']}" for s in earlier) or "(none yet)"
        system = render("navigator_system", space=ctx.space.describe(objective.constraints if objective else ()),
                        objective=objective_text(objective))
        user = render(
            "navigator_user",
            round=ctx.round,
            evaluated=len(ctx.history),
            budget=objective.budget if objective else "?",
            last_round=last_round_lines(ctx),
            best_title=best_title(ctx),
            best=best_lines(ctx),
            metric=objective.metric if objective else "value",
            option_stats=option_stats(ctx),
            memory=memory,
            human=(f"\n## A person reviewing the last batch rejected it and said\n{ctx.human_comment}\n"
                   "Take this into account in the next strategy.\n" if ctx.human_comment else ""),
        )
        return [SystemMessage(system), HumanMessage(user)]

    def navigate(self, ctx: RoundContext) -> Strategy:
        if not llm_ready(ctx):
            return Strategy(summary="the LLM is paused after failures; the LLM-free strategy fills this round",
                            plan={"llm": "unavailable"})
        kept = self._kept_strategy(ctx)
        if kept is not None:
            return kept
        lang = _language(ctx)
        result = call_llm(
            ctx, "navigator", "navigate", self.messages(ctx), NavigatorAnswer,
            grammar=strategy_gbnf(ctx.space, lang) if lang is not None else None,
            json_schema=strategy_json_schema(ctx.space, lang) if lang is not None else None,
            parse_text=parse_strategy,
        )
        if result is None:
            return Strategy(summary="the navigator LLM is unavailable; the LLM-free strategy fills this round",
                            plan={"llm": "unavailable"})
        answer: NavigatorAnswer = result.value or NavigatorAnswer(summary="(no usable strategy; explore broadly)")
        strategy = self._clean(answer, ctx)
        earlier = list(ctx.memory.get("strategies") or [])
        earlier.append({"round": ctx.round, "summary": strategy.summary[:300],
                        "patterns": [p[:160] for p in strategy.patterns[:3]]})
        ctx.memory["strategies"] = earlier[-self.memory_window:]
        if ctx.navigate_every > 1:  # kept (bounded, a few hundred bytes) for the rounds that reuse it
            ctx.memory["navigator_strategy"] = {"round": ctx.round, **strategy.model_dump(exclude={"plan"})}
        return strategy

    @staticmethod
    def _kept_strategy(ctx: RoundContext) -> Strategy | None:
        """The latest strategy again, while it is younger than ``ctx.navigate_every`` rounds.

        A new one is written when a person rejected the last batch (their comment must be read) and after
        a round the LLM did not plan (the kept strategy is then older than the results it should answer).
        """
        kept = ctx.memory.get("navigator_strategy")
        if ctx.navigate_every <= 1 or not kept or ctx.human_comment:
            return None
        if ctx.round - kept["round"] >= ctx.navigate_every:
            return None
        fields = {k: v for k, v in kept.items() if k != "round"}
        return Strategy(**fields, plan={"kept_from_round": kept["round"]})

    @staticmethod
    def _clean(answer: NavigatorAnswer, ctx: RoundContext) -> Strategy:
        """Keep what refers to real decisions and options; bound every list."""
        directions = {}
        for d in ctx.space.decisions:
            given = answer.directions.get(d.name)
            if given is None:
                continue
            prefer = [o for o in given.prefer if o in d.options]
            avoid = [o for o in given.avoid if o in d.options and o not in prefer]
            if prefer or avoid:
                directions[d.name] = Preference(prefer=prefer, avoid=avoid)
        return Strategy(
            summary=(answer.summary or "").strip()[:300] or "(no summary)",
            patterns=[p.strip()[:200] for p in answer.patterns if p.strip()][:5],
            directions=directions,
            constraints=[c.strip()[:200] for c in answer.constraints if c.strip()][:5],
            example_codes=[c for c in answer.example_codes if isinstance(c, str)][:5],
        )


def strategy_text(strategy: Strategy) -> str:
    """The strategy as the Generator reads it (no working data)."""
    fields = {k: v for k, v in strategy.model_dump(exclude={"plan"}).items() if v}  # empty lists say nothing
    return json.dumps(fields, ensure_ascii=False)


class LLMGenerator(Generator):
    """Turns the latest strategy into candidate codes; stateless between rounds."""

    takes_feedback = True
    tools = ("check_ncodes", "decode_ncode")

    def messages(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[BaseMessage]:
        objective = ctx.goal
        system = render("generator_system", space=ctx.space.describe(objective.constraints if objective else ()),
                        length=ctx.space.length)
        goal = (f"## Goal\nThe search looks for the best trade-offs between {objectives_phrase(objective)}.\n\n"
                if objective is not None and objective.objectives else "")
        user = render("generator_user", goal=goal, strategy=strategy_text(strategy), evaluated=len(ctx.history),
                      avoid=self._avoid(ctx), n=n)
        return [SystemMessage(system), HumanMessage(user)]

    @staticmethod
    def _avoid(ctx: RoundContext) -> str:
        """The codes to avoid, unless the decoder already makes them impossible to write.

        Under grammar decoding with an exact code language (every enumerable space), the grammar admits
        only legal, unseen codes, so listing the evaluated ones (up to 40 codes, growing every round)
        only lengthens the prompt.
        """
        if ctx.llm is not None and ctx.llm.chat("generator").mode == "grammar":
            lang = _language(ctx)
            if lang is not None and lang.is_exact:
                return "(the decoder admits only codes that are legal and not yet evaluated)"
        return avoid_list(ctx)

    def _ask(self, ctx: RoundContext, kind: str, messages: list[BaseMessage], n: int) -> list[str]:
        lang = _language(ctx)
        if lang is not None and lang.count is not None:
            n = min(n, lang.count)
        result = call_llm(
            ctx, "generator", kind, messages, CandidateAnswer,
            grammar=candidates_gbnf(lang, n, n) if lang is not None else None,
            json_schema=candidates_json_schema(lang, n, n) if lang is not None else None,
            parse_text=parse_candidates(),
        )
        if result is None:
            return []
        ctx.memory["generator_reply"] = (result.text or "")[:REPLY_KEEP_CHARS]
        codes = list(result.value.codes) if result.value is not None else []
        ctx.calls[-1]["proposed"] = len(codes)
        return [str(c).strip() for c in codes]

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        if strategy.plan.get("llm") == "unavailable" or not llm_ready(ctx) or n < 1:
            return []
        return self._ask(ctx, "generate", self.messages(strategy, n, ctx), n)

    def revise(self, strategy: Strategy, n: int, ctx: RoundContext, feedback: Feedback) -> list[str] | None:
        if not llm_ready(ctx) or n < 1:
            return None
        problems = [f"- {code!r}: {'; '.join(reasons)}" for code, reasons in list(feedback.illegal.items())[:10]]
        problems += [f"- {code!r}: already evaluated or repeated" for code in feedback.duplicates[:10]]
        if not problems:
            problems = [f"- you gave only {len(feedback.accepted)} usable codes"]
        accepted_line = (f"These codes were accepted, do not repeat them: {', '.join(feedback.accepted)}."
                         if feedback.accepted else "None of your codes was accepted.")
        messages = self.messages(strategy, n + len(feedback.accepted), ctx)
        messages.append(AIMessage(feedback.reply or ctx.memory.get("generator_reply") or "(no answer)"))
        messages.append(HumanMessage(render("generator_correction", problems="\n".join(problems),
                                            accepted_line=accepted_line, n=n)))
        return self._ask(ctx, "revise", messages, n)


def collm_search(batch_size: int = 5) -> SearchStrategy:
    return SearchStrategy(
        "collm",
        LLMNavigator(),
        LLMGenerator(),
        batch_size,
        "CoLLM-NAS: a stateful LLM Navigator writes strategies, a stateless LLM Generator writes candidates",
        llm_roles=("navigator", "generator"),
        needs_llm=True,
    )
