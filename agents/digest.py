"""Compact, bounded views of a run's history for LLM prompts.

Everything here has a size that depends on the space and on fixed limits,
never on the number of trials, so prompts stay flat as a search grows.
"""

from __future__ import annotations

from collections.abc import Sequence

from collm_nas.agents.fronts import front_by_promise
from collm_nas.core import Objective, RoundContext, SearchGoal, SearchSpace, Trial

# Resource figures worth showing beside the searched metric (first found wins).
_RESOURCE_HINTS = ("params_mb", "flops_m")


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


def trial_line(trial: Trial, objective: SearchGoal | None) -> str:
    """``333132  cifar10_valid=91.61 params_mb=1.53`` (failed trials say so).

    The NCode alone names the architecture: the space's description in the system prompt is its legend,
    and the per-option statistics name the options. Spelling each architecture out (NAS-Bench-201's
    ``|nor_conv_3x3~0|+|...|``, about 40 tokens) made the Navigator's prompt two to three times longer,
    which a local model pays for in seconds on every round.
    """
    if not trial.ok:
        return f"{trial.ncode}  failed: {(trial.error or 'no result')[:80]}"
    metric = objective.metric if objective else "value"
    parts = [f"{metric}={fmt(trial.value)}"]
    if objective and objective.objectives:  # several objectives: each of them
        parts = [f"{o.metric}={fmt(trial.metric(o.metric))}" for o in objective.objectives]
    shown = [r for r in _RESOURCE_HINTS if (r in trial.metrics or r in trial.cost) and not any(
        p.startswith(f"{r}=") for p in parts)]
    if objective:
        shown += [r for r in objective.resources if r not in shown and any(r in c for c in objective.constraints)]
    for name in shown:
        v = trial.metrics.get(name, trial.cost.get(name))
        if v is not None:
            parts.append(f"{name}={fmt(v)}")
    return f"{trial.ncode}  " + " ".join(parts)


def ranked(trials: Sequence[Trial], objective: Objective) -> list[Trial]:
    return objective.ranked(trials)


def best_title(ctx: RoundContext) -> str:
    """The heading of :func:`best_lines`."""
    if ctx.multi_objective:
        return "The Pareto front so far (no evaluated architecture beats these on every objective)"
    return "Best architectures so far"


def best_lines(ctx: RoundContext, k: int = 5) -> str:
    """The best trials; with several objectives the front, its most promising ``2k`` (see agents/fronts.py)."""
    if ctx.multi_objective:
        front = front_by_promise(ctx)
        lines = [trial_line(t, ctx.goal) for t in front[: 2 * k]]
        if len(front) > 2 * k:
            lines.append(f"... and {len(front) - 2 * k} more on the front")
        return "\n".join(lines) or "(nothing evaluated yet)"
    top = ranked(ctx.history.trials(), ctx.objective)[:k]
    if not top:
        return "(nothing evaluated yet)"
    return "\n".join(trial_line(t, ctx.goal) for t in top)


def last_round_lines(ctx: RoundContext, limit: int = 12) -> str:
    """The previous round's trials (at most ``limit``, best first)."""
    trials = ctx.history.in_round(ctx.round - 1)
    if not trials:
        return "(no previous round)"
    shown = ranked(trials, ctx.objective) + [t for t in trials if not t.ok]
    lines = [trial_line(t, ctx.goal) for t in shown[:limit]]
    if len(trials) > limit:
        lines.append(f"... and {len(trials) - limit} more")
    return "\n".join(lines)


def option_stats(ctx: RoundContext) -> str:
    """Per decision and option: how often it was evaluated, the mean and the best value."""
    trials = [t for t in ctx.history.trials() if t.ok]
    if not trials:
        return "(no statistics yet)"
    space = ctx.space
    indices = [space.indices(t.ncode) for t in trials]
    lines = []
    for pos, d in enumerate(space.decisions):
        cells = []
        for idx, option in enumerate(d.options):
            values = [t.value for t, ix in zip(trials, indices) if ix[pos] == idx]
            if values:
                best = ctx.objective.direction.best(values)
                cells.append(f"{option} {len(values)}/{fmt(sum(values) / len(values))}/{fmt(best)}")
            else:
                cells.append(f"{option} untried")
        lines.append(f"{d.name}: " + "; ".join(cells))
    return "\n".join(lines)


def avoid_list(ctx: RoundContext, limit: int = 40) -> str:
    """Codes the generator must not repeat: the best and the most recent, bounded."""
    trials = ctx.history.trials()
    if not trials:
        return "(none)"
    picked: list[str] = []
    for t in ranked(trials, ctx.objective)[: limit // 2] + list(reversed(trials)):
        if t.ncode not in picked:
            picked.append(t.ncode)
        if len(picked) >= limit:
            break
    text = ", ".join(picked)
    if len(trials) > len(picked):
        text += f" (and {len(trials) - len(picked)} older ones)"
    return text


def objectives_phrase(goal: SearchGoal) -> str:
    """``cifar10_valid (maximise) against lat_ms_pixel3 (minimise)``."""
    return " against ".join(f"{o.metric} ({'maximise' if o.mode == 'max' else 'minimise'})"
                            for o in goal.objectives)


def objective_text(objective: SearchGoal | None) -> str:
    if objective is None:
        return "maximises the searched metric."
    goal = "maximises" if objective.mode == "max" else "minimises"
    text = f"{goal} {objective.metric}"
    if objective.note:
        text += f" ({objective.note})"
    if objective.objectives:
        text = (f"looks for the best trade-offs between {objectives_phrase(objective)}: the Pareto front, the "
                "architectures no other beats on every objective at once. A good round pushes one region of "
                "the front outwards (for example: a lower cost at the same accuracy)")
    text += f", with a budget of {objective.budget} evaluated architectures."
    if objective.constraints:
        text += " Every architecture must satisfy: " + "; ".join(objective.constraints) + "."
    return text
