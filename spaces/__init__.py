"""Search spaces: NAS-Bench-201, mbv3, YAML/JSON space files, and resource constraints.

They are registered in :data:`SPACES` (``spaces/registry.py``); ``SPACES.resolve`` takes a name, a file or
``module:attribute``.
"""

from collm_nas.core.space import Decision, Problem, SearchSpace
from collm_nas.spaces.constraints import Constraint, parse_constraint, parse_constraints
from collm_nas.spaces.loader import load_space_file, space_from_dict
from collm_nas.spaces.mbv3 import mbv3_space
from collm_nas.spaces.nb201 import NB201Space
from collm_nas.spaces.registry import SPACES, is_space_file

__all__ = [
    "SPACES",
    "Constraint",
    "Decision",
    "NB201Space",
    "Problem",
    "SearchSpace",
    "is_space_file",
    "load_space_file",
    "mbv3_space",
    "parse_constraint",
    "parse_constraints",
    "space_from_dict",
]
