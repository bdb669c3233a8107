"""Round figures: what the LLM calls of a round cost, and a run's LLM figures over all its rounds."""

from __future__ import annotations

from typing import Any


def llm_figures(calls: list[dict[str, Any]], events: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """One round's LLM figures: calls, tokens, latency, decoding mode per role, tool calls, failures, and what the
    watch of a local server saw (``events``: restarts, timeouts, a server given up)."""
    out: dict[str, Any] = {
        "calls": len(calls),
        "failed_calls": sum(1 for call in calls if not call.get("ok")),
        "prompt_tokens": sum(call.get("prompt_tokens", 0) for call in calls),
        "completion_tokens": sum(call.get("completion_tokens", 0) for call in calls),
        "latency_s": round(sum(call.get("latency_s", 0.0) for call in calls), 4),
        "modes": {},
        "prompt_tokens_by_role": {},
        # Per role: calls, prompt and completion tokens, seconds (what one call of each role costs).
        "by_role": {},
        "generator_proposed": sum(call.get("proposed", 0) for call in calls if call.get("role") == "generator"),
        "tool_calls": {},
        "tool_errors": 0,
        "tool_rounds": sum(1 for call in calls if call.get("tool_calls")),
    }
    for call in calls:
        out["modes"][call["role"]] = call.get("mode")
        role_tokens = out["prompt_tokens_by_role"]
        role_tokens[call["role"]] = role_tokens.get(call["role"], 0) + call.get("prompt_tokens", 0)
        _add_role_call(out["by_role"], call["role"], call)
        for name in call.get("tool_calls") or ():
            out["tool_calls"][name] = out["tool_calls"].get(name, 0) + 1
        out["tool_errors"] += int(call.get("tool_errors") or 0)
    errors = [call["error"] for call in calls if call.get("error")]
    if errors:
        out["errors"] = errors[:3]
    if events:
        out["server_restarts"] = sum(1 for e in events if e.get("kind") == "restart")
        out["server_timeouts"] = sum(1 for e in events if e.get("kind") == "timeout")
        out["server_down"] = any(e.get("kind") == "gave_up" for e in events)
        out["server_events"] = [e.get("message", "") for e in events][:5]
    return out


_ROLE_FIGURES = ("calls", "prompt_tokens", "completion_tokens", "latency_s")


def _add_role_call(by_role: dict[str, dict[str, float]], role: str, call: dict[str, Any]) -> None:
    row = by_role.setdefault(role, dict.fromkeys(_ROLE_FIGURES, 0))
    row["calls"] += 1
    row["prompt_tokens"] += int(call.get("prompt_tokens") or 0)
    row["completion_tokens"] += int(call.get("completion_tokens") or 0)
    row["latency_s"] = round(row["latency_s"] + float(call.get("latency_s") or 0.0), 4)


def _role_totals(llm_rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per role over all rounds: calls, tokens, seconds, and the mean call (rounds stored before a round kept
    its per-role figures add nothing here)."""
    totals: dict[str, dict[str, float]] = {}
    for r in llm_rounds:
        for role, row in (r["llm"].get("by_role") or {}).items():
            into = totals.setdefault(role, dict.fromkeys(_ROLE_FIGURES, 0))
            for key in _ROLE_FIGURES:
                into[key] += row.get(key, 0)
    for row in totals.values():
        n = row["calls"] or 1
        row["latency_s"] = round(row["latency_s"], 3)
        row["per_call"] = {"prompt_tokens": round(row["prompt_tokens"] / n, 1),
                           "completion_tokens": round(row["completion_tokens"] / n, 1),
                           "seconds": round(row["latency_s"] / n, 2)}
    return totals


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
    answered = sum(1 for r in llm_rounds if r["llm"]["calls"] > r["llm"]["failed_calls"])
    # Rounds where a call failed, or that the strategy meant for the LLM but ran without one.
    fell_back = sum(1 for r in llm_rounds if r["llm"]["failed_calls"]
                    or (r["llm"]["calls"] == 0 and r.get("llm_planned", True)))
    wanted = sum(1 for r in llm_rounds if r.get("llm_planned", True))
    events = [m for r in llm_rounds for m in r["llm"].get("server_events") or ()]
    return {
        "rounds": len(rounds),
        "llm_rounds": answered,
        "fallback_rounds": fell_back,
        # The rounds meant for the LLM, and whether it answered fewer (the run then says so plainly).
        "wanted_rounds": wanted,
        "degraded": fell_back > 0,
        "never_answered": answered == 0 and wanted > 0,
        "server_restarts": sum(int(r["llm"].get("server_restarts") or 0) for r in llm_rounds),
        "server_timeouts": sum(int(r["llm"].get("server_timeouts") or 0) for r in llm_rounds),
        "server_down": any(r["llm"].get("server_down") for r in llm_rounds),
        "server_events": events[-5:],
        "planned_note": _planned_note(llm_rounds),
        "proposed": proposed,
        "illegal": total("illegal"),
        "duplicates": total("duplicates"),
        "same_network": total("same_network"),
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
        "by_role": _role_totals(llm_rounds),
        "modes": modes,
        "tool_calls": tools,
        "tool_errors": sum(int(r["llm"].get("tool_errors") or 0) for r in llm_rounds),
        "tool_rounds": sum(int(r["llm"].get("tool_rounds") or 0) for r in llm_rounds),
        "navigator_prompt_tokens": {r: nav_tokens[r] for r in shown},
    }


def degraded_line(summary: dict[str, Any] | None, fallback: str | None = None) -> str | None:
    """One line for a run whose LLM answered fewer rounds than it was meant to (None: it answered them all).

    ``collm-nas search`` ends with it, ``show`` and the dashboard print it, and ``--require-llm`` acts on it.
    """
    if not summary or not summary.get("degraded"):
        return None
    wanted, answered = summary["wanted_rounds"], summary["llm_rounds"]
    instead = f"the LLM-free fallback '{fallback}'" if fallback else "the LLM-free fallback"
    head = ("DEGRADED: the LLM never answered" if summary.get("never_answered") else
            f"DEGRADED: the LLM answered {answered} of {wanted} rounds meant for it")
    fell = summary["fallback_rounds"]
    parts = [f"{head}; {fell} {'round' if fell == 1 else 'rounds'} ran on {instead}"]
    if summary.get("failed_calls"):
        parts.append(f"{summary['failed_calls']} of {summary['calls']} calls failed")
    if summary.get("server_restarts"):
        n = summary["server_restarts"]
        parts.append(f"the local model server was restarted {'once' if n == 1 else f'{n} times'}")
    if summary.get("server_down"):
        parts.append("it was given up after its restarts")
    return "; ".join(parts)
