"""The HTTP app ``langgraph.json`` adds to the LangGraph server (``http.app``): no routes, only a lifespan.

On shutdown it closes the LLM clients the server's runs opened (:func:`close_server_llms`), which stops
the embedded llama.cpp server. ``atexit`` alone is not enough there: on SIGTERM uvicorn shuts down
gracefully and then re-raises the signal, so the process ends without running ``atexit`` handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from collm_nas.studio import close_server_llms


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await asyncio.to_thread(close_server_llms)  # stopping a child process blocks: not on the event loop


app = Starlette(lifespan=lifespan)
