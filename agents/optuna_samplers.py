"""Optuna's samplers as search strategies: ``optuna-tpe``, ``optuna-gp``, ``optuna-nsga2``, ``optuna-random``.

The peers a user would pick, run through the engine like any strategy (the
Coordinator's rules, approval, checkpoints, resume). Each round:

1. **Rebuild.** A fresh in-memory study holds the run's trials in evaluation
   order (:func:`optuna.trial.create_trial`): each decision a
   ``CategoricalDistribution`` of its options, only the decisions active in
   the code as parameters; a successful trial COMPLETE with its objective
   value(s), anything else FAIL. The illegal proposals of earlier rounds
   (``ctx.memory["optuna_pruned"]``, the newest :data:`REMEMBERED_PRUNED`) follow,
   PRUNED. For NSGA-II each trial also gets the generation Optuna gave it
   when it was asked (replayed from the rounds, :func:`generations`).
   Rebuilding costs about 0.1-0.2 ms per trial (benchmarks/optuna_cost.py);
   a sampler's fit is paid at every ask anyway (TPE, GP), as in Optuna. Nothing
   else survives a round, so a run killed and resumed rebuilds the same study.
2. **Ask.** The sampler, seeded by (run seed, round), is asked one trial at a
   time; a trial suggests the decisions in order, skipping those inactive
   under the earlier ones (a conditional space is what Optuna calls a
   dynamic search space).
3. **Tell what cannot be evaluated, and ask again** (at most
   :data:`ASKS_PER_CODE` asks per wanted code; the Coordinator tops up a
   batch that stays short):

   * an illegal proposal is told **PRUNED** (Optuna's idiom for a trial that
     yields no value), with the run's resource constraints set on it
     (``Trial.set_constraint``): TPE ranks it among the infeasible (or
     pruned) trials, below every complete one, and learns to avoid it; it is
     remembered for the next rounds' studies;
   * a repeat (a code already evaluated, or already asked this round) is
     left **RUNNING**, as a trial still in flight, until the round ends. GP's
     batch acquisition (q-log EI / EHVI) takes running trials as pending
     points, so its next ask looks elsewhere; TPE, NSGA-II and random search
     ignore running trials, so for them it is as if the ask had not been
     made, bar the random numbers it drew. (Told FAIL it would be ignored by
     GP too, which then proposes the same code again and again; told with
     its known value, Optuna's FAQ idiom, the point would count twice and
     pull TPE further towards it.) An illegal code asked again this round is
     such a repeat: GP, which reads no pruned trials, moves on from it.

   A legal new proposal stays RUNNING too (GP's next ask in the same round
   takes it as pending, which spreads a batch).

**Constraints** go through Optuna's own constraint interface: every trial of
the study carries the value of each run constraint the checker computes
before evaluation (``params_mb<=1`` is ``params_mb - 1``; > 0 is infeasible),
through ``create_trial(constraints=...)`` and ``Trial.set_constraint``. That
is Optuna 5's replacement of the samplers' ``constraints_func`` (deprecated
in 5.0). GP models each constraint as a function and weighs its acquisition
by the chance of feasibility; TPE learns the infeasible region from the
pruned proposals; NSGA-II's constrained domination sees only feasible
evaluated trials.

**Several objectives** (``ctx.objectives``, 2-3) give the study one direction
each and each trial its values of the objectives' metrics; TPE, NSGA-II, GP
(log EHVI) and random search all take them.

Optuna's defaults are kept (TPE: 10 random startup trials; GP: 10; NSGA-II:
population 50), as a user who picks a sampler by name gets them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

from collm_nas.core import Generator, Navigator, RoundContext, SearchStrategy, Strategy, Trial, UserError

# Asks per wanted code before the round gives up and lets the Coordinator top up.
ASKS_PER_CODE = 10
# Illegal proposals kept (newest) in the Navigator's memory, told to every later round's study as PRUNED.
REMEMBERED_PRUNED = 100
MEMORY_KEY = "optuna_pruned"
# The least Optuna this module is written against (create_trial's constraints, Trial.set_constraint).
MIN_OPTUNA = (5, 1)
INSTALL_HINT = "pip install 'collm-nas[optuna]'"
# Constraint value of a code whose resource the run cannot compute (the checker calls it illegal).
UNKNOWN_RESOURCE = 1.0
# A constraint broken exactly at its bound (< or >) still counts as violated.
AT_BOUND = 1e-9

SAMPLERS = {
    "tpe": ("TPESampler", "Optuna's tree-structured Parzen estimator (TPE)"),
    "gp": ("GPSampler", "Optuna's Gaussian-process Bayesian optimisation (log EI / EHVI)"),
    "nsga2": ("NSGAIISampler", "Optuna's NSGA-II genetic algorithm (population 50)"),
    "random": ("RandomSampler", "Optuna's random sampler"),
}


def require_optuna() -> Any:
    """The ``optuna`` module, or a one-line UserError naming the install command."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"the optuna-* strategies need Optuna, which is not installed; install it with "
                        f"{INSTALL_HINT}") from None
    found = tuple(int(p) for p in optuna.__version__.split(".")[:2] if p.isdigit())
    if found < MIN_OPTUNA:
        raise UserError(f"the optuna-* strategies need Optuna {'.'.join(map(str, MIN_OPTUNA))} or later, found "
                        f"{optuna.__version__}; upgrade with {INSTALL_HINT}")
    return optuna


@contextlib.contextmanager
def quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna without its per-trial log lines and warnings (a run says what it does its own way)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


# ------------------------------------------------------------------ the study
def make_sampler(optuna: Any, kind: str, seed: int) -> Any:
    samplers = optuna.samplers
    if kind == "tpe":
        return samplers.TPESampler(seed=seed)
    if kind == "gp":
        return samplers.GPSampler(seed=seed)
    if kind == "nsga2":
        return samplers.NSGAIISampler(seed=seed)
    if kind == "random":
        return samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown Optuna sampler '{kind}'; known: {', '.join(SAMPLERS)}")


def distributions(optuna: Any, ctx: RoundContext, params: dict[str, str]) -> dict[str, Any]:
    return {name: optuna.distributions.CategoricalDistribution(ctx.space.decision(name).options) for name in params}


def constraint_values(ctx: RoundContext, code: str) -> dict[str, float]:
    """Each run constraint's value for ``code`` in Optuna's sense (<= 0 feasible); {} without constraints."""
    checker = ctx.checker
    if checker is None or not checker.constraints:
        return {}
    figures = dict(ctx.space.costs(code))
    if checker.resources is not None:
        figures.update(checker.resources(code))
    out: dict[str, float] = {}
    for c in checker.constraints:
        value = figures.get(c.resource)
        if value is None or value != value:
            out[str(c)] = UNKNOWN_RESOURCE
            continue
        value, bound = float(value), float(c.bound)
        gap = {"<=": value - bound, "<": value - bound, ">=": bound - value, ">": bound - value,
               "==": abs(value - bound)}[c.op]
        out[str(c)] = max(gap, AT_BOUND) if not c.holds(value) else min(gap, 0.0)
    return out


def objective_values(ctx: RoundContext, trial: Trial) -> list[float] | None:
    """The trial's values of the study's objectives (None: failed, or an objective missing)."""
    if not trial.ok:
        return None
    if ctx.multi_objective:
        values = [trial.metric(o.metric) for o in ctx.objectives.items]  # type: ignore[union-attr]
    else:
        values = [trial.value]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) for v in values):
        return None
    return [float(v) for v in values]  # type: ignore[arg-type]


def directions(ctx: RoundContext) -> list[str]:
    items = ctx.objectives.items if ctx.multi_objective else (ctx.objective,)  # type: ignore[union-attr]
    return ["maximize" if o.mode == "max" else "minimize" for o in items]


def generations(trials: list[Trial], population: int) -> list[int]:
    """The generation a genetic sampler (NSGA-II) gave each trial when it was asked, replayed from the rounds.

    Optuna gives a new trial the newest generation of the complete trials,
    or the next one once that generation holds ``population`` complete
    trials. A round asks all its proposals before any of them is evaluated
    (repeats stay RUNNING and illegal codes are told PRUNED, neither counts), so a
    whole round shares one generation; trials the Coordinator added count as
    the round's own.
    """
    out: list[int] = []
    newest, complete = 0, 0  # the newest generation of complete trials, and how many it holds
    current_round, current = None, 0
    pending = 0  # complete trials of the current round, counted once the round is over
    for t in trials:
        if t.round != current_round:
            if current_round is not None:
                newest, complete = (current, pending) if current > newest else (newest, complete + pending)
            current_round, pending = t.round, 0
            current = newest + 1 if complete >= population else newest
        out.append(current)
        pending += 1 if t.ok else 0
    return out


def rebuild(optuna: Any, ctx: RoundContext, sampler: Any) -> Any:
    """A fresh study with the run's trials (and remembered illegal proposals) as the sampler sees them."""
    study = optuna.create_study(sampler=sampler, directions=directions(ctx))
    history = list(ctx.history.trials())
    generation_key = None
    if isinstance(sampler, optuna.samplers.BaseGASampler):
        generation_key = sampler._get_generation_key()
        gens = generations(history, sampler.population_size)
    frozen = []
    for i, t in enumerate(history):
        params = ctx.space.decode(t.ncode)
        values = objective_values(ctx, t)
        system_attrs = {generation_key: gens[i]} if generation_key else None
        if values is None:
            frozen.append(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=params,
                                                    distributions=distributions(optuna, ctx, params),
                                                    system_attrs=system_attrs))
        else:
            frozen.append(optuna.trial.create_trial(values=values, params=params,
                                                    distributions=distributions(optuna, ctx, params),
                                                    system_attrs=system_attrs,
                                                    constraints=constraint_values(ctx, t.ncode) or None))
    for code in ctx.memory.get(MEMORY_KEY) or []:
        params = ctx.space.decode(code)
        frozen.append(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params=params,
                                                distributions=distributions(optuna, ctx, params),
                                                constraints=constraint_values(ctx, code) or None))
    study.add_trials(frozen)
    return study


def suggest(trial: Any, ctx: RoundContext) -> str:
    """The NCode of an asked trial: each decision active under the earlier ones suggested in order."""
    space = ctx.space
    indices = [0] * space.length
    for pos, d in enumerate(space.decisions):
        if space.is_active(pos, indices):
            indices[pos] = d.options.index(trial.suggest_categorical(d.name, d.options))
    return space.from_indices(indices)


def ask(optuna: Any, study: Any, ctx: RoundContext, n: int) -> dict[str, Any]:
    """Up to ``n`` new legal codes from the study's sampler (see the module doc for what is told when)."""
    state = optuna.trial.TrialState
    proposals: list[str] = []
    pruned: list[str] = []
    repeats = asks = 0
    while len(proposals) < n and asks < ASKS_PER_CODE * n:
        trial = study.ask()
        asks += 1
        code = suggest(trial, ctx)
        if code in proposals or code in pruned or code in ctx.history:
            repeats += 1  # left RUNNING: a pending point (see the module doc)
        elif not ctx.is_legal(code):
            for name, value in constraint_values(ctx, code).items():
                trial.set_constraint(name, value)
            study.tell(trial, state=state.PRUNED)
            pruned.append(code)
        else:
            proposals.append(code)
    return {"proposals": proposals, "pruned": pruned, "repeats": repeats, "asks": asks}


def remember(memory: dict[str, Any], pruned: list[str]) -> None:
    """Add this round's illegal proposals to the remembered ones (each once, the newest kept)."""
    kept = [c for c in memory.get(MEMORY_KEY) or [] if c not in pruned]
    memory[MEMORY_KEY] = (kept + list(dict.fromkeys(pruned)))[-REMEMBERED_PRUNED:]


# ------------------------------------------------------------------- the roles
class OptunaNavigator(Navigator):
    """Rebuilds the study from the run's trials and asks the sampler for the round's batch."""

    multi_objective = True  # every sampler here takes several directions

    def __init__(self, kind: str) -> None:
        if kind not in SAMPLERS:
            raise ValueError(f"unknown Optuna sampler '{kind}'; known: {', '.join(SAMPLERS)}")
        self.kind = kind

    def navigate(self, ctx: RoundContext) -> Strategy:
        optuna = require_optuna()
        seed = ctx.rng("navigator").randrange(2**31)
        with quiet_optuna(optuna):
            sampler = make_sampler(optuna, self.kind, seed)
            study = rebuild(optuna, ctx, sampler)
            in_study = len(study.trials)
            got = ask(optuna, study, ctx, max(ctx.quota, 0))
        remember(ctx.memory, got["pruned"])
        told = []
        if got["repeats"]:
            told.append(f"{got['repeats']} repeat{'s' if got['repeats'] != 1 else ''} left pending")
        if got["pruned"]:
            told.append(f"{len(got['pruned'])} illegal told PRUNED")
        return Strategy(
            summary=(f"Optuna {SAMPLERS[self.kind][0]} on a study of {in_study} trials: "
                     f"{len(got['proposals'])} proposal{'s' if len(got['proposals']) != 1 else ''} from "
                     f"{got['asks']} ask{'s' if got['asks'] != 1 else ''}" + (f" ({', '.join(told)})" if told else "")),
            example_codes=got["proposals"][:3],
            plan={"sampler": self.kind, "proposals": got["proposals"], "asks": got["asks"],
                  "repeats": got["repeats"], "pruned": len(got["pruned"]), "study_trials": in_study},
        )


class OptunaGenerator(Generator):
    """The sampler's proposals, as the Navigator asked them."""

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        return list(strategy.plan.get("proposals") or [])[:n]


def optuna_strategy(kind: str) -> SearchStrategy:
    """An Optuna sampler as a strategy (a one-line UserError when Optuna is not installed)."""
    require_optuna()
    cls, text = SAMPLERS[kind]
    return SearchStrategy(f"optuna-{kind}", OptunaNavigator(kind), OptunaGenerator(), 1,
                          f"{text} ({cls}), its study rebuilt from the run's trials each round")
