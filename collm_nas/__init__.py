"""collm-nas: LLM agents that search for neural network architectures.

The public face: :class:`Workspace` (a runs directory or a PostgreSQL store), the run spec
:class:`RunConfig`, and the shortcuts :func:`search`, :func:`resume`, :func:`load_run` and :func:`list_runs`.

The names are imported on first use, so ``import collm_nas.core`` (or an evaluation worker) loads neither
LangGraph nor LangChain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_FROM = {
    "Run": "collm_nas.api", "SearchResult": "collm_nas.api", "Workspace": "collm_nas.api",
    "list_runs": "collm_nas.api", "load_run": "collm_nas.api", "resume": "collm_nas.api", "search": "collm_nas.api",
    "RunConfig": "collm_nas.core", "UserError": "collm_nas.core",
}

__all__ = ["Run", "RunConfig", "SearchResult", "UserError", "Workspace", "list_runs", "load_run", "resume", "search"]

if TYPE_CHECKING:
    from collm_nas.api import Run, SearchResult, Workspace, list_runs, load_run, resume, search
    from collm_nas.core import RunConfig, UserError


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'collm_nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
