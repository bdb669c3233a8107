"""The space registry: ``--space NAME``, a ``.yaml`` / ``.json`` space file, or ``module.path:attribute``.

A factory takes no arguments and returns a :class:`~collm_nas.core.SearchSpace`.
From outside the package the attribute may be a space, a SearchSpace
subclass or a function returning one.
"""

from __future__ import annotations

from collm_nas.core import Registry, SearchSpace, UserError, import_attribute

SPACES: Registry[SearchSpace] = Registry("space", external_hint="a .yaml/.json space file or module.path:attribute")
SPACE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


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


def get_space(spec: str) -> SearchSpace:
    """A registered space by name, a user space from a .yaml/.yml/.json path, or ``module:attribute``."""
    if is_space_file(spec):
        from collm_nas.spaces.loader import load_space_file

        return load_space_file(spec)
    if spec in SPACES:
        return SPACES.create(spec)
    if not SPACES.is_external(spec):
        raise UserError(f"unknown space '{spec}'; use one of {', '.join(SPACES.names())}, a path to a "
                        ".yaml/.json space file or module.path:attribute")
    space = import_attribute(spec, "space")
    if not isinstance(space, SearchSpace) and callable(space):
        space = space()  # a SearchSpace subclass or a function that returns a space
    if not isinstance(space, SearchSpace):
        raise UserError(f"space '{spec}' is a {type(space).__name__}, not a SearchSpace")
    return space
