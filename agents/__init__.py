"""The roles of a search round and their LLM-free implementations."""

from collm_nas.agents.baselines import local_search, random_search, regularized_evolution, sample_new
from collm_nas.agents.coordinator import Coordinator, Screening, StopRule
from collm_nas.agents.roles import (
    Direction,
    Feedback,
    Objective,
    Generator,
    History,
    Navigator,
    RoundContext,
    SearchStrategy,
    Strategy,
    Trial,
)
from collm_nas.errors import UserError

def _collm() -> SearchStrategy:
    from collm_nas.agents.collm import collm_search  # imports the LLM stack only when asked

    return collm_search()


def _lmsearcher() -> SearchStrategy:
    from collm_nas.agents.lmsearcher import lmsearcher_search

    return lmsearcher_search()


def _hybrid() -> SearchStrategy:
    from collm_nas.agents.hybrid import hybrid_search

    return hybrid_search()


STRATEGIES = {
    "random": random_search,
    "rea": regularized_evolution,
    "local": local_search,
    "collm": _collm,
    "lmsearcher": _lmsearcher,
    "hybrid": _hybrid,
}
LLM_FREE_STRATEGIES = ("random", "rea", "local")
# Strategies that can top up a short batch or replace an LLM strategy without an LLM
# (lmsearcher then ranks with its learned ranker).
FALLBACKS = (*LLM_FREE_STRATEGIES, "lmsearcher")


def make_strategy(name: str) -> SearchStrategy:
    """The strategy registered under ``name``."""
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


__all__ = [
    "STRATEGIES",
    "Coordinator",
    "Direction",
    "Feedback",
    "FALLBACKS",
    "LLM_FREE_STRATEGIES",
    "Objective",
    "Generator",
    "History",
    "Navigator",
    "RoundContext",
    "Screening",
    "SearchStrategy",
    "StopRule",
    "Strategy",
    "Trial",
    "make_strategy",
    "sample_new",
]
