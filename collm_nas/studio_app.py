"""The HTTP app ``langgraph.json`` adds to the LangGraph server (``http.app``): the dashboard, and a lifespan.

* ``/dashboard/`` serves the web dashboard (:mod:`collm_nas.dashboard`) over the trial store the server's
  runs use by default (``$COLLM_NAS_STORE``, else ``collm-nas.db`` in ``$COLLM_NAS_RUNS_DIR`` or ``./runs``):
  a search started from Studio shows up there, and a pause inside the server is answered from it (through
  the server's own API, as ``collm-nas approve`` does). ``$COLLM_NAS_DASHBOARD_TOKEN``, when set, is required.
* On shutdown the lifespan stops what runs the dashboard answered in this process and closes what the
  server holds for its runs (:func:`~collm_nas.studio.close_server`: their engines and workers, the LLM
  clients, which stops the embedded llama.cpp server, and the trial stores). ``atexit`` alone is not enough there: on SIGTERM uvicorn shuts down gracefully and then
  re-raises the signal, so the process ends without running ``atexit`` handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount

from collm_nas.core import load_settings
from collm_nas.dashboard import Board, create_app
from collm_nas.studio import close_server

DASHBOARD_PATH = "/dashboard"


def _workspace():
    from collm_nas.api import Workspace

    return Workspace()  # the settings' store: the one the server's runs use without a context


board = Board(_workspace)  # opened on the first request, not at import


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    try:  # (a mounted app's own lifespan does not run: its end is here; nothing is read ahead at start)
        yield
    finally:  # stopping threads and a child process blocks: not on the event loop
        await asyncio.to_thread(board.close, 30.0)
        await asyncio.to_thread(close_server)


app = Starlette(lifespan=lifespan, routes=[
    Mount(DASHBOARD_PATH, app=create_app(board, token=load_settings().dashboard_token)),
])
