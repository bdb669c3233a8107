"""The local web dashboard: watch searches, compare runs and answer approval pauses from a browser.

``collm-nas dashboard`` serves it (:mod:`collm_nas.dashboard.serve`); ``langgraph dev`` mounts it under
``/dashboard`` (:mod:`collm_nas.studio_app`). :func:`create_app` builds the ASGI app over a :class:`Board`.
"""

from collm_nas.dashboard.app import create_app
from collm_nas.dashboard.board import Board

__all__ = ["Board", "create_app"]
