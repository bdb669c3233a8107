"""The core layer: the record types, the interfaces and the run spec; it imports nothing else of collm-nas.

Everything else builds on these: one :class:`Trial` record from evaluator to
store to strategies, :class:`Objective` / :class:`Direction` owning "is a
better than b", the :class:`SearchSpace`, :class:`Evaluator`,
:class:`Navigator` / :class:`Generator` and :class:`TrialStore` interfaces
with their optional capabilities declared, the :class:`RunConfig` run spec,
one :class:`Registry` style, the errors and the settings.
"""

from collm_nas.core.config import RunConfig, field_meta, fields_for
from collm_nas.core.errors import UserError
from collm_nas.core.evaluator import Evaluator
from collm_nas.core.objective import (Direction, FrontSummary, Objective, Objectives, SearchGoal, parse_objective,
                                      stale_rounds)
from collm_nas.core.registry import Registry, import_attribute
from collm_nas.core.settings import Settings, load_settings
from collm_nas.core.space import Decision, Problem, SearchSpace
from collm_nas.core.store import (ACTIVE, AWAITING, FAILED, FINISHED, INTERRUPTED, PruneReport, RunInfo,
                                  TrialStore)
from collm_nas.core.strategy import (Feedback, Generator, Navigator, Preference, RoundContext, SearchStrategy,
                                     Strategy, ToolCallsPending)
from collm_nas.core.trial import History, Trial

__all__ = [
    "ACTIVE", "AWAITING", "FAILED", "FINISHED", "INTERRUPTED",
    "Decision", "Direction", "Evaluator", "FrontSummary", "Feedback", "Generator", "History", "Navigator", "Objective",
    "Objectives", "Preference", "Problem", "PruneReport", "Registry", "RoundContext", "RunConfig", "RunInfo",
    "SearchGoal",
    "SearchSpace", "SearchStrategy", "Settings", "Strategy", "ToolCallsPending", "Trial", "TrialStore", "UserError",
    "field_meta", "fields_for", "import_attribute", "load_settings", "parse_objective", "stale_rounds",
]
