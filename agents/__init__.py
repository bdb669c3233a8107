"""The roles of a search round (Navigator, Generator, Coordinator), LLM-free and LLM implementations, and the
strategy registry."""

from collm_nas.agents.baselines import local_search, random_search, regularized_evolution, sample_new
from collm_nas.agents.coordinator import Coordinator, Screening, StopRule
from collm_nas.agents.registry import (FALLBACK, LLM_FREE, PEER, STRATEGIES, as_search_strategy, fallback_names,
                                       llm_free_names, multi_objective_names,
                                       peer_names)
from collm_nas.core import (Feedback, Generator, Navigator, Preference, RoundContext, SearchStrategy, Strategy,
                            Trial)

__all__ = [
    "FALLBACK",
    "LLM_FREE",
    "PEER",
    "STRATEGIES",
    "Coordinator",
    "Feedback",
    "Generator",
    "Navigator",
    "Preference",
    "RoundContext",
    "Screening",
    "SearchStrategy",
    "StopRule",
    "Strategy",
    "Trial",
    "as_search_strategy",
    "fallback_names",
    "llm_free_names",
    "local_search",
    "multi_objective_names",
    "peer_names",
    "random_search",
    "regularized_evolution",
    "sample_new",
]
