"""Round figures: what the LLM calls of a round cost, and a run's LLM figures over all its rounds."""

from __future__ import annotations

from typing import Any


def llm_figures(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's LLM figures: calls, tokens, latency, decoding mode per role, tool calls, failures."""
    out: dict[str, Any] = {
        "calls": len(calls),
        "failed_calls": sum(1 for call in calls if not call.get("ok")),
        "prompt_tokens": sum(call.get("prompt_tokens", 0) for call in calls),
        "completion_tokens": sum(call.get("completion_tokens", 0) for call in calls),
        "latency_s": round(sum(call.get("latency_s", 0.0) for call in calls), 4),
        "modes": {},
        "prompt_tokens_by_role": {},
        "generator_proposed": sum(call.get("proposed", 0) for call in calls if call.get("role") == "generator"),
        "tool_calls": {},
        "tool_errors": 0,
        "tool_rounds": sum(1 for call in calls if call.get("tool_calls")),
    }
    for call in calls:
        out["modes"][call["role"]] = call.get("mode")
        role_tokens = out["prompt_tokens_by_role"]
        role_tokens[call["role"]] = role_tokens.get(call["role"], 0) + call.get("prompt_tokens", 0)
        for name in call.get("tool_calls") or ():
            out["tool_calls"][name] = out["tool_calls"].get(name, 0) + 1
        out["tool_errors"] += int(call.get("tool_errors") or 0)
    errors = [call["error"] for call in calls if call.get("error")]
    if errors:
        out["errors"] = errors[:3]
    return out


def _planned_note(rounds: list[dict[str, Any]]) -> str:
    skipped = sum(1 for r in rounds if r.get("llm_planned") is False)
    return f", {skipped} needed none" if skipped else ""


def summarise_llm_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A run's LLM figures over all rounds (None for LLM-free runs)."""
    llm_rounds = [r for r in rounds if "llm" in r]
    if not llm_rounds:
        return None

    def total(key: str) -> int:
        return sum(int(r.get(key) or 0) for r in llm_rounds)

    proposed = total("proposed")
    calls = sum(r["llm"]["calls"] for r in llm_rounds)
    latency = sum(r["llm"]["latency_s"] for r in llm_rounds)
    modes: dict[str, list[str]] = {}
    tools: dict[str, int] = {}
    for r in llm_rounds:
        for role, mode in r["llm"]["modes"].items():
            if mode and mode not in modes.setdefault(role, []):
                modes[role].append(mode)
        for name, n in (r["llm"].get("tool_calls") or {}).items():
            tools[name] = tools.get(name, 0) + n
    nav_tokens = {r["round"]: r["llm"]["prompt_tokens_by_role"]["navigator"] for r in llm_rounds
                  if r["llm"]["prompt_tokens_by_role"].get("navigator")}
    shown = sorted(nav_tokens)
    if len(shown) > 6:
        shown = shown[:2] + shown[len(shown) // 2: len(shown) // 2 + 1] + shown[-2:]
    return {
        "rounds": len(rounds),
        "llm_rounds": sum(1 for r in llm_rounds if r["llm"]["calls"] > r["llm"]["failed_calls"]),
        # Rounds where a call failed, or that the strategy meant for the LLM but ran without one.
        "fallback_rounds": sum(1 for r in llm_rounds if r["llm"]["failed_calls"]
                               or (r["llm"]["calls"] == 0 and r.get("llm_planned", True))),
        "planned_note": _planned_note(llm_rounds),
        "proposed": proposed,
        "illegal": total("illegal"),
        "duplicates": total("duplicates"),
        "accepted": total("accepted"),
        "topped_up": total("topped_up"),
        "ranked_out": total("ranked_out"),
        "corrections": total("corrections"),
        "illegal_rate": total("illegal") / proposed if proposed else 0.0,
        "duplicate_rate": total("duplicates") / proposed if proposed else 0.0,
        "calls": calls,
        "failed_calls": sum(r["llm"]["failed_calls"] for r in llm_rounds),
        "prompt_tokens": sum(r["llm"]["prompt_tokens"] for r in llm_rounds),
        "completion_tokens": sum(r["llm"]["completion_tokens"] for r in llm_rounds),
        "latency_s": latency,
        "latency_per_call_s": latency / calls if calls else 0.0,
        "modes": modes,
        "tool_calls": tools,
        "tool_errors": sum(int(r["llm"].get("tool_errors") or 0) for r in llm_rounds),
        "tool_rounds": sum(int(r["llm"].get("tool_rounds") or 0) for r in llm_rounds),
        "navigator_prompt_tokens": {r: nav_tokens[r] for r in shown},
    }
