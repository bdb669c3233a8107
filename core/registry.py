"""One registry style for strategies, evaluators, spaces and fallbacks.

A :class:`Registry` maps names to factories (a callable that builds the
thing). :meth:`Registry.resolve` also takes ``module.path:attribute`` from
outside the package: the attribute is imported and used as the factory (a
class or a function; for some registries a ready-made instance or value is
taken as is). CLI choices and help are generated from :meth:`Registry.names`
and :meth:`Registry.describe`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from collm_nas.core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    help: str = ""
    tags: frozenset[str] = frozenset()
    info: Mapping[str, Any] = field(default_factory=dict)  # what callers need to know before building it


def import_attribute(target: str, what: str, *, expects: str = "attribute") -> Any:
    """``module.path:attribute`` imported; a one-line UserError naming the fix otherwise."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{what} '{target}' must be written module.path:{expects} (or be a registered name)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"cannot import {what} module '{module_name}' ({e}); check PYTHONPATH") from None
    except Exception as e:  # the module itself is broken: say so in one line
        raise UserError(f"cannot import {what} module '{module_name}': {type(e).__name__}: {e}; fix the module"
                        ) from None
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            if expects == "attribute":
                raise UserError(f"module '{module_name}' has no attribute '{attr}' (the {what} asked for)")
            raise UserError(f"'{attr}' in module '{module_name}' is not a {expects}")
        value = getattr(value, part)
    return value


class Registry(Generic[T]):
    """Named factories of one kind; ``module:attribute`` reaches outside the package.

    ``adapt(value, name, *args, **kwargs)`` turns what a ``module:attribute`` names into the thing (a class to
    instantiate, a function to wrap...); ``find(name)`` may answer names of another form before the
    registry says it does not know them (a space file path, say). ``require(thing, name, tag)`` checks what
    a tag promises of whatever was resolved under it (a fallback talks to no LLM, say).
    """

    def __init__(self, kind: str, *, external_hint: str = "module.path:attribute",
                 adapt: Callable[..., T] | None = None, find: Callable[[str], T | None] | None = None,
                 require: Callable[[T, str, str], None] | None = None) -> None:
        self.kind = kind
        self.external_hint = external_hint
        self._entries: dict[str, Entry[T]] = {}
        self._adapt = adapt
        self._find = find
        self._require = require

    def register(self, name: str, factory: Callable[..., T] | None = None, *, help: str = "",
                 tags: tuple[str, ...] = (), **info: Any) -> Any:
        """Register ``factory`` under ``name`` (usable as a decorator)."""

        def add(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, fn, help or (fn.__doc__ or "").strip().split("\n")[0],
                                        frozenset(tags), dict(info))
            return fn

        return add(factory) if factory is not None else add

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self, tag: str | None = None) -> list[str]:
        return [n for n, e in self._entries.items() if tag is None or tag in e.tags]

    def entry(self, name: str) -> Entry[T] | None:
        """The registered entry (None for ``module:attribute`` and unknown names)."""
        return self._entries.get(name)

    def info(self, name: str, key: str, default: Any = None) -> Any:
        """One fact of a registered entry (``default`` for outside names)."""
        entry = self._entries.get(name)
        return entry.info.get(key, default) if entry is not None else default

    @staticmethod
    def is_external(name: str) -> bool:
        return ":" in name

    def describe(self, tag: str | None = None) -> str:
        """``name (help), ...`` for CLI help, then how to bring one's own."""
        parts = [f"{n} ({self._entries[n].help})" if self._entries[n].help else n for n in self.names(tag)]
        return "; ".join(parts) + f"; or your own as {self.external_hint}"

    def resolve(self, name: str, *args: Any, tag: str | None = None, **kwargs: Any) -> T:
        """The thing ``name`` stands for, built with ``args`` / ``kwargs``: a registered name (with ``tag``
        when given), ``module.path:attribute`` from outside the package, or a name the registry's ``find``
        knows. Anything else is a one-line UserError listing the choices."""
        entry = self._entries.get(name)
        if entry is not None:
            if tag is not None and tag not in entry.tags:
                if self._require is not None:  # let the tag's own check say why, where it can
                    self._require(entry.factory(*args, **kwargs), name, tag)
                raise UserError(f"{self.kind} '{name}' cannot serve as {tag}; choose one of "
                                f"{', '.join(self.names(tag))} or give {self.external_hint}")
            thing = entry.factory(*args, **kwargs)
        elif self._find is not None and (found := self._find(name)) is not None:
            thing = found
        elif self.is_external(name):
            value = import_attribute(name, self.kind)
            thing = self._adapt(value, name, *args, **kwargs) if self._adapt is not None else (
                value(*args, **kwargs) if callable(value) else value)
        else:
            raise UserError(f"unknown {self.kind} '{name}'; choose one of {', '.join(self.names(tag))} or give "
                            f"{self.external_hint}")
        if tag is not None and self._require is not None:
            self._require(thing, name, tag)
        return thing
