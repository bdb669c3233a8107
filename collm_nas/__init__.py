"""collm-nas: LLM agents that search for neural network architectures.

The public face: :class:`Workspace` (a runs directory or a PostgreSQL store), the run spec
:class:`RunConfig`, and the shortcuts :func:`search`, :func:`resume`, :func:`load_run` and :func:`list_runs`.
"""

from collm_nas.api import Run, SearchResult, Workspace, list_runs, load_run, resume, search
from collm_nas.core import RunConfig, UserError

__version__ = "0.1.0"

__all__ = ["Run", "RunConfig", "SearchResult", "UserError", "Workspace", "list_runs", "load_run", "resume", "search"]
