"""Search spaces as data, NCode, and resource constraints."""

from collm_nas.spaces.constraints import Constraint, parse_constraint, parse_constraints
from collm_nas.spaces.loader import load_space_file, space_from_dict
from collm_nas.spaces.mbv3 import mbv3_space
from collm_nas.spaces.nb201 import NB201Space
from collm_nas.spaces.space import Decision, Problem, SearchSpace

BUILTIN_SPACES = {"nb201": NB201Space, "mbv3": mbv3_space}


def get_space(spec: str) -> SearchSpace:
    """A built-in space by name, or a user space from a .yaml/.yml/.json path."""
    if spec in BUILTIN_SPACES:
        return BUILTIN_SPACES[spec]()
    if spec.lower().endswith((".yaml", ".yml", ".json")):
        return load_space_file(spec)
    from collm_nas.errors import UserError

    raise UserError(
        f"unknown space '{spec}'; use one of {', '.join(BUILTIN_SPACES)} or a path to a .yaml/.json space file"
    )


__all__ = [
    "BUILTIN_SPACES",
    "Constraint",
    "Decision",
    "NB201Space",
    "Problem",
    "SearchSpace",
    "get_space",
    "load_space_file",
    "mbv3_space",
    "parse_constraint",
    "parse_constraints",
    "space_from_dict",
]
