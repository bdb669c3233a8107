"""The strategy registry: ``--strategy NAME`` or ``--strategy module.path:attribute``; fallbacks are its
LLM-free entries (tag ``fallback``) or a user's LLM-free strategy::

    STRATEGIES.resolve("rea")                      # a SearchStrategy
    STRATEGIES.resolve("mypkg.mine:Mine")          # a user's, adapted (see below)
    STRATEGIES.resolve("codes:cells.txt")          # the NCodes listed in a file, in order
    STRATEGIES.resolve("local", tag=FALLBACK)      # one that may stand in for an LLM

A factory takes no arguments and returns a :class:`~collm_nas.core.SearchStrategy`.
From outside the package the attribute may be a SearchStrategy, a function
returning one, or a class whose instances are both
:class:`~collm_nas.core.Navigator` and :class:`~collm_nas.core.Generator`
(it plays both roles; ``name``, ``default_batch_size`` and ``description``
come from its class attributes).
"""

from __future__ import annotations

import inspect
from typing import Any

from collm_nas.core import Generator, Navigator, Registry, SearchStrategy, UserError


def as_search_strategy(value: Any, name: str) -> SearchStrategy:
    """A user's strategy object (see the module doc) as a :class:`SearchStrategy`."""
    if isinstance(value, SearchStrategy):
        return value
    if inspect.isclass(value):
        value = value()
    elif callable(value) and not isinstance(value, (Navigator, Generator)):
        value = value()
    if isinstance(value, SearchStrategy):
        return value
    if isinstance(value, Navigator) and isinstance(value, Generator):
        cls = type(value)
        return SearchStrategy(cls.strategy_name or name, value, value,
                              default_batch_size=cls.default_batch_size, description=cls.description)
    raise UserError(f"strategy '{name}' is a {type(value).__name__}; give a SearchStrategy, a function returning "
                    "one, or a class that is both a Navigator and a Generator")


def _require_llm_free(strategy: SearchStrategy, name: str, tag: str) -> None:
    if tag == FALLBACK and strategy.needs_llm:
        raise UserError(f"fallback strategy '{name}' needs an LLM; pick one of {', '.join(fallback_names())} "
                        "or your own LLM-free strategy as module.path:attribute")


def _find(name: str) -> SearchStrategy | None:
    """``codes:PATH``: the architectures listed in a file, in order (agents/codes_list.py)."""
    from collm_nas.agents.codes_list import find_codes_strategy

    return find_codes_strategy(name)


STRATEGIES: Registry[SearchStrategy] = Registry("strategy", adapt=as_search_strategy, find=_find,
                                                require=_require_llm_free)
LLM_FREE = "llm-free"  # tag: talks to no LLM
FALLBACK = "fallback"  # tag: may top up short batches and stand in for an LLM strategy
PEER = "peer"  # tag: another library's search (LLM-free), measured beside ours; needs its extra installed


@STRATEGIES.register("random", help="uniform random sampling", tags=(LLM_FREE, FALLBACK))
def _random() -> SearchStrategy:
    from collm_nas.agents.baselines import random_search

    return random_search()


@STRATEGIES.register("rea", help="regularized evolution", tags=(LLM_FREE, FALLBACK))
def _rea() -> SearchStrategy:
    from collm_nas.agents.baselines import regularized_evolution

    return regularized_evolution()


@STRATEGIES.register("local", help="first-improvement local search", tags=(LLM_FREE, FALLBACK))
def _local() -> SearchStrategy:
    from collm_nas.agents.baselines import local_search

    return local_search()


@STRATEGIES.register("collm", help="CoLLM-NAS: LLM Navigator + Generator")
def _collm() -> SearchStrategy:
    from collm_nas.agents.collm import collm_search  # imports the LLM stack only when asked

    return collm_search()


@STRATEGIES.register("lmsearcher", help="LM-Searcher: rank candidate pools with the LLM or a learned ranker",
                     tags=(FALLBACK,))
def _lmsearcher() -> SearchStrategy:
    from collm_nas.agents.lmsearcher import lmsearcher_search

    return lmsearcher_search()


@STRATEGIES.register("hybrid", help="the LLM Generator proposes several per slot, the learned ranker picks")
def _hybrid() -> SearchStrategy:
    from collm_nas.agents.hybrid import hybrid_search

    return hybrid_search()


def _optuna(kind: str) -> Any:
    def factory() -> SearchStrategy:
        from collm_nas.agents.optuna_samplers import optuna_strategy  # imports optuna only when asked

        return optuna_strategy(kind)

    return factory


for _kind, _help in (("tpe", "Optuna's TPE sampler"), ("gp", "Optuna's Gaussian-process sampler"),
                     ("nsga2", "Optuna's NSGA-II sampler"), ("random", "Optuna's random sampler")):
    STRATEGIES.register(f"optuna-{_kind}", _optuna(_kind), help=f"{_help} (pip install 'collm-nas[optuna]')",
                        tags=(PEER,))


def fallback_names() -> list[str]:
    return STRATEGIES.names(FALLBACK)


def llm_free_names() -> list[str]:
    return STRATEGIES.names(LLM_FREE)


def peer_names() -> list[str]:
    return STRATEGIES.names(PEER)


def multi_objective_names() -> list[str]:
    """The registered strategies that search a Pareto front and can be built here (a peer may lack its extra)."""
    names = []
    for name in STRATEGIES:
        try:
            if STRATEGIES.resolve(name).multi_objective:
                names.append(name)
        except UserError:
            pass
    return names
