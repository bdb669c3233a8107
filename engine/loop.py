"""The search engine: one run's working parts, built once, and the steps of a round.

A :class:`SearchLoop` is built once per run from its spec (space, evaluator,
validity checker, strategy, Coordinator, trial history, objective, prior)
and offers the steps of a round, each a function of the small round state
(a plain dict, the same one LangGraph checkpoints) that returns the update::

    plan -> propose -> screen -> [approval pause] -> evaluate -> record -> should stop?
      ^        ^          |                                        |
      |        +-(correct)+                                        |
      +-----------------------------(next round)-------------------+

The LangGraph nodes (``collm_nas.graphs.graph``) are thin adapters over these
steps, and the graph is the one driver: production runs stream it, tests and
scripts call ``collm_nas.graphs.drive.run_graph``. The routing between steps
(``after_plan``, ``after_screen``, ...) is defined here, once, and the graph's
edges use it.

One candidate, start to finish: ``Generator.generate`` (propose) ->
``Coordinator.screen`` (legal? seen? constraints? with reasons) ->
approval payload -> ``evaluate`` (the store is asked first; the evaluator;
``TrialStore.add_trial`` the moment each result arrives) -> ``record``
(round figures, best so far, stop rule). One record type, :class:`Trial`,
from the evaluator to the store to the strategies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collm_nas.agents import FALLBACK, STRATEGIES, Coordinator, Screening, StopRule, multi_objective_names
from collm_nas.backends import EvaluatorSpec, make_backend
from collm_nas.core import (Objective, Objectives, RoundContext, RunConfig, SearchGoal, SearchSpace, SearchStrategy,
                            Strategy, ToolCallsPending, TrialStore, UserError, stale_rounds)
from collm_nas.core.store import FINISHED
from collm_nas.engine.approval import (Pause, apply_edit, estimate_costs, needs_approval, parse_reply, pause_payload,
                                       strategy_shown)
from collm_nas.engine.figures import llm_figures
from collm_nas.engine.prior import LLM_PRIOR, Prior, load_prior
from collm_nas.evaluators import reads_table
from collm_nas.spaces import SPACES, parse_constraints, space_from_dict
from collm_nas.storage import RunHistory
from collm_nas.tools import ValidityChecker

Emit = Callable[[dict[str, Any]], None]
State = dict[str, Any]

# Step names (the graph's nodes carry the CoLLM-NAS role names).
PLAN, PROPOSE, SCREEN, APPROVE, EVALUATE, RECORD, FINISH, TOOLS, END = (
    "plan", "propose", "screen", "approve", "evaluate", "record", "finish", "tools", "end")


def _quiet(event: dict[str, Any]) -> None:
    pass


def resolve_space(config: RunConfig) -> SearchSpace:
    """The run's space: the stored snapshot of a space file, else the registered / imported one."""
    if config.space_definition is not None:
        return space_from_dict(config.space_definition, source=f"stored space '{config.space}'")
    return SPACES.resolve(config.space)


def run_objectives(config: RunConfig) -> Objectives | None:
    """The run's objectives (None: the single metric of ``metric``/``mode``); the first one is the searched
    metric, so ``config.metric`` and ``config.mode`` are set from it."""
    if not config.objectives:
        return None
    objectives = Objectives.parse(config.objectives)
    first = objectives.items[0]
    if config.metric not in (None, first.metric):
        raise UserError(f"--metric {config.metric} and --objective {config.objectives[0]} both name the searched "
                        "metric; give --objective alone (its first one is searched, the others beside it)")
    config.metric, config.mode = first.metric, first.mode  # type: ignore[assignment]
    return objectives


def check_objectives(objectives: Objectives, evaluator: Any) -> None:
    """Every objective is a metric the evaluator returns (when it says which it returns)."""
    known = evaluator.metric_names
    unknown = [m for m in objectives.metrics if known and m not in known]
    if unknown:
        raise UserError(f"unknown objective '{unknown[0]}': the {evaluator.name} evaluator returns "
                        f"{', '.join(known)}")


def evaluator_spec(config: RunConfig, space: SearchSpace, table_path: str | None) -> EvaluatorSpec:
    """How the run's evaluator is built (``EVALUATORS.resolve``'s arguments), here and in every worker.

    The evaluator's options are the spec's ``train_options``; an evaluator that reads a table gets the
    workspace's table file (``--table`` / ``COLLM_NAS_NB201_TABLE``) unless the spec names one itself.
    """
    options = dict(config.train_options)
    if reads_table(config.evaluator) and table_path is not None:
        options.setdefault("table", str(Path(table_path).expanduser().resolve()))  # workers may run elsewhere
    return EvaluatorSpec(
        kind=config.evaluator,
        space=space,
        seed=config.seed,
        dataset=config.dataset,
        metric=config.metric,
        mode=config.mode,
        options=options,
        metrics=Objectives.parse(config.objectives).metrics if len(config.objectives) > 1 else (),
    )


def json_copy(value: Any) -> Any:
    """A deep copy of plain data, so a step never mutates the checkpointed state in place."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def initial_state(run_id: str) -> State:
    return {"run_id": run_id, "round": 0, "evaluated": 0, "memory": {}, "best": None, "stop_reason": None}


class SearchLoop:
    """One run's components and the steps of its rounds (see the module doc)."""

    def __init__(self, run_id: str, config: RunConfig, store: TrialStore, *, table_path: str | None = None,
                 spool_dir: str | Path | None = None, llm: Any = None, tools: Any = None,
                 strategy: SearchStrategy | None = None) -> None:
        check_numbers(config)
        self.objectives = run_objectives(config)
        self.run_id = run_id
        self.config = config
        self.store = store
        self.table_path = table_path
        self.space = resolve_space(config)
        spec = evaluator_spec(config, self.space, table_path)
        # The run's evaluator: what a trial costs and returns, with its own capabilities (resources, costs,
        # reference columns); where its evaluations run is the backend's business (built below).
        evaluator = self.evaluator = dataclasses.replace(spec, metrics=()).build()
        if self.objectives is not None:
            check_objectives(self.objectives, evaluator)
            if spec.metrics:
                evaluator.want_metrics(spec.metrics)
        known = set(evaluator.resource_names) | self.space.cost_names
        constraint_texts = [*self.space.default_constraints,
                            *(c for c in config.constraints if c not in self.space.default_constraints)]
        constraints = parse_constraints(constraint_texts, known)
        self.checker = ValidityChecker(self.space, constraints, evaluator.resources,
                                       getattr(evaluator, "problem", None))
        strategy = strategy or STRATEGIES.resolve(config.strategy)  # a strategy object may be handed in (tests)
        fallback = STRATEGIES.resolve(config.fallback, tag=FALLBACK)
        if strategy.needs_llm and config.llm == "none":
            strategy = fallback  # no LLM available: the run is the LLM-free strategy (the faces say so)
        self.strategy = strategy
        if self.multi_objective:
            for what, part in (("strategy", strategy), ("fallback", fallback)):
                if not part.multi_objective:
                    able = ", ".join(multi_objective_names())
                    raise UserError(f"the {what} '{part.name}' searches one objective only and this run has "
                                    f"{len(self.objectives)}; pick one that searches several ({able}) "
                                    "or give one --objective")
        self.legal_count = self.checker.count_legal()
        self._check_space(constraint_texts)
        # Batches run serially, on worker processes or on Ray; the results are the same (collm_nas.backends).
        self.backend = make_backend(config.backend or "serial", spec, workers=config.workers, spool_dir=spool_dir,
                                    evaluator=evaluator)
        self.objective = Objective(self.evaluator.searched_metric, self.evaluator.mode)
        self.coordinator = Coordinator(
            self.checker,
            StopRule(config.budget, config.target, self.objective, config.patience),
            batch_size=config.batch_size or strategy.default_batch_size,
            fallback=fallback if strategy.uses_llm else None,
        )
        self.goal = SearchGoal(
            objective=self.objective,
            budget=config.budget,
            note=self.evaluator.metric_note,
            constraints=tuple(constraint_texts),
            resources=tuple(sorted(known)),
            objectives=self.objectives.items if self.multi_objective else (),
        )
        # One network, several codes: with same_networks=skip a code of an evaluated network counts as seen.
        merge = config.same_networks == "skip" and self.space.has_equivalents
        self.history = RunHistory(store, run_id, self.objective,
                                  network_key=self.space.network_key if merge else None)
        self.prior: Prior | None = (load_prior(config, run_id, evaluator, self.checker.is_valid, store, self.space)
                                    if config.prior else None)
        self._llm = llm  # LLMRoles, or a callable that opens them on first use (a LangGraph server)
        self._tools = tools  # callable(loop, role) -> list of LangChain tools, or None

    # ---------------------------------------------------------------- checks
    def _check_space(self, constraints: list[str]) -> None:
        legal = self.legal_count
        if legal == 0:
            if constraints:
                raise UserError(f"no architecture of space '{self.space.name}' satisfies the constraints "
                                f"{', '.join(constraints)}; loosen or drop --constraint")
            raise UserError(f"space '{self.space.name}' has no legal architecture; check the space's rules")
        if legal is not None and self.config.budget > legal:
            raise UserError(
                f"budget {self.config.budget} is larger than the space: '{self.space.name}' has only {legal:,} legal "
                "architectures under the given constraints; lower --budget")

    # ---------------------------------------------------------- parts for steps
    @property
    def multi_objective(self) -> bool:
        """Whether the run searches a Pareto front (two or three objectives)."""
        return self.objectives is not None and len(self.objectives) > 1

    @property
    def llm(self) -> Any:
        if not self.strategy.uses_llm or self.config.llm == "none":
            return None
        if callable(self._llm):
            self._llm = self._llm()
        return self._llm

    def use_llm(self, llm: Any) -> None:
        """The LLM roles this process talks to (LLMRoles, or a callable that opens them on first use)."""
        self._llm = llm

    @property
    def batch_size(self) -> int:
        return self.coordinator.batch_size

    def context(self, state: State, round_no: int) -> RoundContext:
        llm = self.llm
        tools = None
        if llm is not None and self._tools is not None and self.config.tool_rounds > 0:
            tools = self.role_tools
        return RoundContext(
            space=self.space,
            history=self.history,
            round=round_no,
            seed=self.config.seed,
            quota=self.coordinator.quota(len(self.history)),
            is_legal=self.checker.is_valid,
            objective=self.objective,
            goal=self.goal,
            memory=json_copy(state.get("memory") or {}),
            checker=self.checker,
            llm=llm,
            prior=self.prior,
            tools=tools,
            tool_rounds=self.config.tool_rounds,
            navigate_every=self.config.navigate_every,
            ranker_pool=self.config.ranker_pool,
            llm_prior=LLM_PRIOR in self.config.prior,
            ranker_pool_size=self.config.ranker_pool_size,
            ranker_scoring=self.config.ranker_scoring,
            ranker_orders=self.config.ranker_orders,
            conversation=list(state.get("conversation") or []) or None,
            objectives=self.objectives if self.multi_objective else None,
            hv_reference=tuple(self.config.hv_reference) if self.config.hv_reference else None,
        )

    def role_tools(self, role: str) -> list[Any]:
        """The LangChain tools ``role`` may call in this run (empty: none)."""
        return list(self._tools(self, role)) if self._tools is not None else []

    @staticmethod
    def _warn(ctx: RoundContext, emit: Emit) -> list[dict[str, Any]]:
        """Say the step's notices; returns what the watch of a local LLM server saw meanwhile (restarts...)."""
        for message in ctx.warnings:
            emit({"event": "warning", "round": ctx.round, "message": message})
        events = []
        take = getattr(ctx.llm, "take_server_events", None)  # LLMRoles; a test's stand-in may have none
        for event in take() if take is not None else ():
            emit({"event": "warning", "round": ctx.round, "message": event.message})
            events.append(event.to_dict())
        return events

    # ------------------------------------------------------------------ steps
    def plan(self, state: State, emit: Emit = _quiet) -> State:
        """The Navigator writes the round's strategy."""
        self.history.refresh()
        continuing = state.get("tool_turn") == "navigator"
        started = state.get("round_started") if continuing else time.time()
        round_no = state.get("round", 0) + (0 if continuing else 1)
        ctx = self.context(state, round_no)
        ctx.human_comment = state.get("human_comment")  # a person's reason for rejecting the last batch
        calls = list(state.get("llm_calls") or []) if continuing else []
        events = list(state.get("llm_events") or []) if continuing else []
        try:
            strategy = self.strategy.navigator.navigate(ctx)
        except ToolCallsPending as pending:
            events += self._warn(ctx, emit)
            return {"round": round_no, "round_started": started, "memory": ctx.memory, "conversation":
                    pending.messages, "tool_turn": pending.role, "llm_calls": calls + ctx.calls,
                    "llm_events": events,
                    **({} if continuing else {"proposals": [], "batch": [], "screening": {}, "feedback": None})}
        events += self._warn(ctx, emit)
        return {
            "round": round_no,
            "strategy": strategy.model_dump(),
            "memory": ctx.memory,
            "proposals": [],
            "batch": [],
            "screening": {},
            "feedback": None,
            "llm_calls": calls + ctx.calls,
            "llm_events": events,
            "round_started": started,
            "human_comment": None,
            "conversation": None,
            "tool_turn": None,
        }

    def propose(self, state: State, emit: Emit = _quiet) -> State:
        """The Generator turns the strategy into candidates (or revises them after the Coordinator's feedback)."""
        ctx = self.context(state, state["round"])
        strategy = Strategy.model_validate(state["strategy"])
        feedback = state.get("feedback")
        generator = self.strategy.generator
        try:
            if feedback:
                screened = Screening.from_dict(feedback)
                wanted = ctx.quota - len(screened.accepted)
                proposals = generator.revise(strategy, wanted, ctx, screened.feedback(wanted)) or []
            else:
                proposals = generator.generate(strategy, ctx.quota, ctx)
        except ToolCallsPending as pending:
            events = self._warn(ctx, emit)
            return {"memory": ctx.memory, "conversation": pending.messages, "tool_turn": pending.role,
                    "llm_calls": list(state.get("llm_calls") or []) + ctx.calls,
                    "llm_events": list(state.get("llm_events") or []) + events}
        events = self._warn(ctx, emit)
        return {"proposals": list(proposals), "memory": ctx.memory, "conversation": None, "tool_turn": None,
                "llm_calls": list(state.get("llm_calls") or []) + ctx.calls,
                "llm_events": list(state.get("llm_events") or []) + events}

    def screen(self, state: State, emit: Emit = _quiet) -> State:
        """The Coordinator drops illegal and repeated codes, asks once for corrections, tops up the batch."""
        ctx = self.context(state, state["round"])
        proposals = state.get("proposals") or []
        earlier = state.get("feedback")
        coordinator = self.coordinator
        if earlier:  # second pass: screen the corrected proposals beside what the first pass accepted
            first = Screening.from_dict(earlier)
            screening = first.merge(coordinator.screen(proposals, ctx, ctx.quota, accepted=first.accepted))
        else:
            screening = coordinator.screen(proposals, ctx, ctx.quota, top_up=False)
            short = len(screening.accepted) < ctx.quota
            if short and ctx.llm is not None and proposals and self.strategy.generator.takes_feedback:
                # One corrective follow-up: back to the generator with what was wrong.
                return {"feedback": screening.to_dict(), "screening": screening.figures(), "batch": []}
            missing = ctx.quota - len(screening.accepted)
            if missing > 0:
                screening.topped_up = coordinator.top_up(ctx, missing, set(screening.accepted))
        self.last_screening = screening  # for observers (tests, traces); the state keeps only the figures
        batch = screening.batch
        update: State = {"batch": batch, "screening": screening.figures(), "feedback": None, "memory": ctx.memory}
        if not batch:
            best = self.history.best()
            update["stop_reason"] = coordinator.stop_reason(len(self.history), best.value if best else None, True)
        return update

    def pause(self, state: State, error: str | None = None) -> Pause | None:
        """The approval pause this batch needs, or None (read-only: LangGraph re-runs the node on resume)."""
        batch = list(state.get("batch") or [])
        estimate = estimate_costs(batch, self.evaluator, self.history.trials())
        reason = needs_approval(self.config.approval, self.config.approval_threshold_s, estimate)
        if reason is None:
            return None
        evaluated = len(self.history)
        payload = pause_payload(run_id=self.run_id, round_no=state["round"], batch=batch, space=self.space,
                                checker=self.checker, strategy=state.get("strategy"), estimate=estimate,
                                budget=self.config.budget, evaluated=evaluated, reason=reason, error=error)
        return Pause(payload, batch, evaluated)

    def check_reply(self, pause: Pause, raw: Any) -> Any:
        """A person's reply to ``pause``, checked; a refused one is a one-line UserError (the pause stays)."""
        reply = parse_reply(raw, pause.batch)
        if reply.action == "edit":
            apply_edit(pause.batch, reply, checker=self.checker, evaluated=self.history,
                       budget_left=self.config.budget - pause.evaluated)
        return reply

    def answer(self, state: State, pause: Pause, reply: Any) -> State:
        """The update a checked reply makes: the batch approved, edited, or rejected (nothing evaluated)."""
        figures = dict(state.get("screening") or {})
        figures["human"] = reply.to_dict()
        if reply.action == "reject":
            self.store.add_round(self.run_id, state["round"], {
                **figures, "evaluated": 0, "failed": 0, "total_evaluated": pause.evaluated, "rejected": True,
                "strategy": (state.get("strategy") or {}).get("summary"),
                "navigator": strategy_shown(state.get("strategy"))})
            return {"batch": [], "screening": figures, "human_comment": reply.comment or "(no comment given)"}
        if reply.action == "edit":
            edited = apply_edit(pause.batch, reply, checker=self.checker, evaluated=self.history,
                                budget_left=self.config.budget - pause.evaluated)
            figures["human"]["batch"] = edited
            return {"batch": edited, "screening": figures}
        return {"screening": figures}

    def evaluate(self, state: State, emit: Emit = _quiet) -> State:
        """Evaluate what the store does not hold yet; record each trial the moment it arrives."""
        batch = state.get("batch") or []
        round_no = state["round"]
        done = self.store.recorded(self.run_id, batch)
        todo = [code for code in batch if code not in done]
        for result in self.backend.iter_evaluate(todo):
            trial = result.recorded(round=round_no, value=self.objective.value(result))
            if trial.status == "ok" and self.objectives is not None and (missing := self.objectives.missing(trial)):
                trial = dataclasses.replace(
                    trial, status="failed", value=None,
                    error=f"the evaluator returned no {', '.join(missing)} (an objective of this run; it "
                          f"returned {', '.join(sorted(trial.metrics)) or 'nothing'})")
            self.store.add_trial(self.run_id, trial)
            emit({"event": "evaluation", "run_id": self.run_id, "round": round_no, "ncode": trial.ncode,
                  "status": trial.status, "value": trial.value, "error": trial.error})
        self.history.refresh()
        return {"evaluated": len(self.history)}

    def record(self, state: State, emit: Emit = _quiet) -> State:
        """Write the round's figures and the run summary; decide whether to stop."""
        self.history.refresh()
        round_no = state["round"]
        best = self.history.best()
        best_summary = None
        if best is not None:
            best_summary = {"ncode": best.ncode, "arch": best.arch, "value": best.value,
                            "reported": best.metrics.get(self.evaluator.reported_metric)}
        this_round = self.history.in_round(round_no)
        figures = {
            **(state.get("screening") or {}),
            "evaluated": len(this_round),
            "failed": sum(1 for t in this_round if not t.ok),
            "total_evaluated": len(self.history),
            "best_value": best.value if best else None,
            **({"front_size": len(self.objectives.front(self.history.trials()))} if self.multi_objective else {}),
            "seconds": round(time.time() - state.get("round_started", time.time()), 6),
            "strategy": (state.get("strategy") or {}).get("summary"),
            "navigator": strategy_shown(state.get("strategy")),  # the strategy as the Navigator wrote it
        }
        if self.strategy.uses_llm and self.config.llm != "none":
            figures["llm"] = llm_figures(state.get("llm_calls") or [], state.get("llm_events") or [])
            # A round the strategy meant to run without the LLM (e.g. initial random trials) is no fallback.
            figures["llm_planned"] = ((state.get("strategy") or {}).get("plan") or {}).get("llm") != "not needed"
        self.store.add_round(self.run_id, round_no, figures)
        self.store.update_summary(self.run_id, best.ncode if best else None, best.value if best else None)
        stop = self.should_stop()
        emit({"event": "round", "run_id": self.run_id, "round": round_no, "evaluated": len(self.history),
              "budget": self.config.budget, "best": best_summary,
              "searched_metric": self.evaluator.searched_metric, "reported_metric": self.evaluator.reported_metric,
              "summary": figures["strategy"]})
        return {"best": best_summary, "stop_reason": stop, "evaluated": len(self.history)}

    def should_stop(self) -> str | None:
        """Budget, target, patience (rounds that evaluated something without improving), or None."""
        best = self.history.best()
        if self.multi_objective:  # an improvement is a new trial on the front
            front = self.objectives.front(self.history.trials())
            stale = stale_rounds(self.history.trials(), max(front, key=lambda t: t.round) if front else None)
        else:
            stale = stale_rounds(self.history.trials(), best)
        return self.coordinator.stop_reason(len(self.history), best.value if best else None, stale_rounds=stale)

    def finish(self, state: State, emit: Emit = _quiet) -> State:
        self.store.set_status(self.run_id, FINISHED, state.get("stop_reason"))
        emit({"event": "finished", "run_id": self.run_id, "stop_reason": state.get("stop_reason"),
              "best": state.get("best")})
        return {}

    def close(self) -> None:
        """Stop the backend's workers (process / Ray) and release what the evaluator holds."""
        self.backend.close()
        self.evaluator.close()

    # ---------------------------------------------------------------- routing
    @staticmethod
    def after_plan(state: State) -> str:
        return TOOLS if state.get("tool_turn") == "navigator" else PROPOSE

    @staticmethod
    def after_propose(state: State) -> str:
        return TOOLS if state.get("tool_turn") == "generator" else SCREEN

    @staticmethod
    def after_screen(state: State) -> str:
        if state.get("feedback"):
            return PROPOSE
        return APPROVE if state.get("batch") else FINISH

    @staticmethod
    def after_approve(state: State) -> str:
        return EVALUATE if state.get("batch") else PLAN

    @staticmethod
    def after_record(state: State) -> str:
        return FINISH if state.get("stop_reason") else PLAN

    @staticmethod
    def after_tools(state: State) -> str:
        return PLAN if state.get("tool_turn") == "navigator" else PROPOSE


def check_numbers(config: RunConfig) -> None:
    """The spec's numbers make sense (one-line UserError otherwise)."""
    if config.budget < 1:
        raise UserError(f"budget must be at least 1, got {config.budget}")
    if config.batch_size is not None and config.batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {config.batch_size}")
    if config.patience is not None and config.patience < 1:
        raise UserError(f"patience must be at least 1 round, got {config.patience}")
    if config.workers is not None and config.workers < 1:
        raise UserError(f"workers must be at least 1, got {config.workers}")
    if config.approval == "over_cost" and config.approval_threshold_s is None:
        raise UserError("approval over_cost needs a threshold; give approval_threshold_s "
                        "(--approval-threshold SECONDS)")
