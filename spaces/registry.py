"""The space registry: ``--space NAME``, a ``.yaml`` / ``.json`` space file, or ``module.path:attribute``::

    SPACES.resolve("nb201")                 # a registered space
    SPACES.resolve("examples/mine.yaml")    # a space file
    SPACES.resolve("mypkg.spaces:mine")     # a space, a SearchSpace subclass or a function returning one

A factory takes no arguments and returns a :class:`~collm_nas.core.SearchSpace`.
"""

from __future__ import annotations

from typing import Any

from collm_nas.core import Registry, SearchSpace, UserError

SPACE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _adapt(value: Any, name: str) -> SearchSpace:
    space = value() if not isinstance(value, SearchSpace) and callable(value) else value
    if not isinstance(space, SearchSpace):
        raise UserError(f"space '{name}' is a {type(space).__name__}, not a SearchSpace")
    return space


def _space_file(spec: str) -> SearchSpace | None:
    if not is_space_file(spec):
        return None
    from collm_nas.spaces.loader import load_space_file

    return load_space_file(spec)


SPACES: Registry[SearchSpace] = Registry("space", external_hint="a .yaml/.json space file or module.path:attribute",
                                         adapt=_adapt, find=_space_file)


@SPACES.register("nb201", help="NAS-Bench-201 cell, 15,625 architectures")
def _nb201() -> SearchSpace:
    from collm_nas.spaces.nb201 import NB201Space

    return NB201Space()


@SPACES.register("mbv3", help="MobileNetV3-like network: 5 stages, depth, kernel and expansion per layer")
def _mbv3() -> SearchSpace:
    from collm_nas.spaces.mbv3 import mbv3_space

    return mbv3_space()


def is_space_file(spec: str) -> bool:
    return spec not in SPACES and spec.lower().endswith(SPACE_FILE_SUFFIXES)
