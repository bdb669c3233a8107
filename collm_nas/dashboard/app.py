"""The dashboard as an ASGI app (Starlette): four pages and the JSON API they use.

Pages (HTML shells; the browser fills them from the API, polling it for live updates)::

    /                           runs: every run, sortable, paused runs first in line
    /runs/{id}                  one run: best-so-far curve, trials, rounds, LLM figures, scatter, configuration
    /runs/{id}/approval         the paused batch: approve, edit (drop / add), reject with a comment
    /compare?runs=a,b,c         several runs' best-so-far curves (mean and band per strategy)

JSON API (also for scripts)::

    GET  /api/runs                          runs (status, task, strategy, LLM, evaluations, best, times):
                                            ?offset&limit&sort&order&q (all without limit)
    GET  /api/runs/{id}                     one run: status, best, figures, LLM summary, front, configuration
    GET  /api/runs/{id}/status              the few fields that change while it runs (the pages poll this)
    GET  /api/runs/{id}/trials              a page of trials: ?offset&limit&sort&order&q&status
    GET  /api/runs/{id}/curve               best-so-far steps and thinned values: ?which=searched|reported
    GET  /api/runs/{id}/scatter             two metrics, the non-dominated trials marked: ?x&y&xdir&ydir
    GET  /api/runs/{id}/rounds              rounds, newest first: ?offset&limit&order
    GET  /api/runs/{id}/approval            the open pause (or null) and the last answer given here
    POST /api/runs/{id}/approval            answer it: {"action": ..., "round": N} or {"decisions": [...], ...}
    POST /api/runs/{id}/approval/check      the same answer checked, nothing taken: {"ok", "error"}
    GET  /api/compare?runs=a,b              curves of several runs

:func:`create_app` builds it over a :class:`~collm_nas.dashboard.board.Board`; ``collm-nas dashboard``
serves it with uvicorn and ``collm_nas.studio_app`` mounts it under ``/dashboard`` in ``langgraph dev``.
With a ``token`` every request must carry it (``?token=`` once, which sets a cookie, or an
``Authorization: Bearer`` header). Answers must be JSON posted from the dashboard's own origin.
"""

from __future__ import annotations

import html
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from collm_nas.api import AnswerRefused
from collm_nas.core import UserError
from collm_nas.dashboard.board import Board, NotFound

HERE = Path(__file__).resolve().parent
TOKEN_COOKIE = "collm_nas_dashboard_token"
# (browsers ask for /favicon.ico wherever a page names none, e.g. on a file of the static folder)
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#111827"/><path d="M3 12 L7 7 L10 9 L13 4" stroke="#22c55e" stroke-width="2" fill="none"/></svg>')
_templates: dict[str, Template] = {}


def _template(name: str) -> Template:
    if name not in _templates:
        _templates[name] = Template((HERE / "templates" / name).read_text(encoding="utf-8"))
    return _templates[name]


def _clean(value: Any) -> Any:
    """JSON without NaN / Infinity (which browsers' JSON.parse refuses): they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(_clean(content), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _error(status: int, message: str) -> _JSON:
    return _JSON({"error": message}, status_code=status)


def _page(request: Request, name: str, title: str, status: int = 200, **values: str) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    body = _template(name).safe_substitute({k: html.escape(v) for k, v in values.items()}, root=html.escape(root))
    text = _template("base.html").safe_substitute(
        title=html.escape(title), root=html.escape(root), page=name.removesuffix(".html"), body=body,
        run_id=html.escape(values.get("run_id", "")))
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


def _int(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"query parameter '{name}' must be a whole number, got {value!r}") from None


def create_app(board: Board, *, token: str | None = None, close_wait_s: float = 60.0, preload: int = 0,
               say: Callable[[str], None] | None = None) -> Starlette:
    """The dashboard app over ``board``; with ``token`` every request must carry it. At start it reads up to
    ``preload`` trials of the newest runs in the background; at the end it stops the runs it answered."""

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Response:
        """A board call off the event loop, its errors as JSON: 404 unknown run, 409 refused, 400 bad input."""
        try:
            return _JSON(await run_in_threadpool(fn, *args, **kwargs))
        except NotFound as e:
            return _error(404, str(e))
        except AnswerRefused as e:
            return _error(409, str(e))
        except UserError as e:
            return _error(400, str(e))

    # ---------------------------------------------------------------- pages
    async def runs_page(request: Request) -> Response:
        return _page(request, "runs.html", "collm-nas runs")

    async def run_page(request: Request) -> Response:
        return await _page_of_run(request, "run.html", "{} · collm-nas")

    async def approval_page(request: Request) -> Response:
        return await _page_of_run(request, "approval.html", "approve {} · collm-nas")

    async def _page_of_run(request: Request, name: str, title: str) -> Response:
        """A run's page, or a 404 page naming the unknown run."""
        run_id = request.path_params["run_id"]
        try:
            await run_in_threadpool(board.run, run_id)
        except NotFound as e:
            return _page(request, "error.html", "unknown run", 404, message=str(e))
        return _page(request, name, title.format(run_id), run_id=run_id)

    async def compare_page(request: Request) -> Response:
        return _page(request, "compare.html", "compare runs · collm-nas")

    async def favicon(request: Request) -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    # ------------------------------------------------------------------ API
    async def api_runs(request: Request) -> Response:
        q = request.query_params

        def page() -> dict[str, Any]:
            limit = _int(request, "limit", 0)
            return board.run_list(offset=_int(request, "offset", 0), limit=limit or None,
                                  sort=q.get("sort") or "created_at", order=q.get("order") or "asc", q=q.get("q") or "")

        return await call(page)

    async def api_run(request: Request) -> Response:
        return await call(board.summary, request.path_params["run_id"])

    async def api_status(request: Request) -> Response:
        return await call(board.status, request.path_params["run_id"])

    async def api_trials(request: Request) -> Response:
        q = request.query_params

        def page() -> dict[str, Any]:
            return board.trial_page(request.path_params["run_id"], offset=_int(request, "offset", 0),
                                    limit=_int(request, "limit", 50), sort=q.get("sort") or "eval",
                                    order=q.get("order") or "asc", q=q.get("q") or "", status=q.get("status") or "all")

        return await call(page)

    async def api_curve(request: Request) -> Response:
        which = request.query_params.get("which") or "searched"
        return await call(board.curve, request.path_params["run_id"], "reported" if which == "reported" else "searched")

    async def api_scatter(request: Request) -> Response:
        q = request.query_params
        return await call(board.scatter, request.path_params["run_id"], q.get("x"), q.get("y"), q.get("xdir"),
                          q.get("ydir"))

    async def api_rounds(request: Request) -> Response:
        return await call(lambda: board.rounds(request.path_params["run_id"], offset=_int(request, "offset", 0),
                                               limit=_int(request, "limit", 20),
                                               order=request.query_params.get("order") or "desc"))

    async def api_compare(request: Request) -> Response:
        names = [r for part in request.query_params.getlist("runs") for r in part.split(",") if r.strip()]
        if not names:
            return _error(400, "name the runs to compare: /api/compare?runs=RUN_A,RUN_B")
        which = request.query_params.get("which") or "reported"
        return await call(board.compare, [n.strip() for n in names], "searched" if which == "searched" else "reported")

    async def api_approval(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if request.method == "GET":
            return await call(board.approval, run_id)
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        response = await call(board.answer, run_id, body)
        if response.status_code == 200:
            response.status_code = 202  # taken; the run goes on
        return response

    async def api_check(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        return await call(board.check_answer, request.path_params["run_id"], body)

    async def _json_body(request: Request) -> Any:
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(415, "send the answer as JSON (Content-Type: application/json)")
        try:
            return json.loads(await request.body() or b"null")
        except ValueError as e:
            return _error(400, f"the answer is not valid JSON: {e}")

    @asynccontextmanager
    async def lifespan(_: Starlette):
        board.start_preload(preload)
        try:
            yield
        finally:  # runs answered here stop once their step in flight is done, resumable
            await run_in_threadpool(board.close, close_wait_s, say)

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id}/approval", approval_page),
        Route("/compare", compare_page),
        Route("/favicon.ico", favicon),
        Route("/api/runs", api_runs),
        Route("/api/compare", api_compare),
        Route("/api/runs/{run_id}/approval/check", api_check, methods=["POST"]),
        Route("/api/runs/{run_id}/approval", api_approval, methods=["GET", "POST"]),
        Route("/api/runs/{run_id}/status", api_status),
        Route("/api/runs/{run_id}/trials", api_trials),
        Route("/api/runs/{run_id}/curve", api_curve),
        Route("/api/runs/{run_id}/scatter", api_scatter),
        Route("/api/runs/{run_id}/rounds", api_rounds),
        Route("/api/runs/{run_id}", api_run),
        Route("/runs/{run_id}", run_page),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(request.scope.get("root_path", "") + "/api/"):
            return _error(404, f"no such API address: {request.url.path}")
        return _page(request, "error.html", "not found", 404,
                     message=f"no such page: {request.url.path}")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    app.state.board = board
    return Guard(app, token) if token else _SameOrigin(app)


class _SameOrigin:
    """Refuses a POST whose Origin is another site's (a page elsewhere must not answer pauses)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            host = headers.get("host", "")
            if origin and origin.split("://", 1)[-1] != host:
                await _JSON({"error": f"refused a request from another site ({origin})"},
                            status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Guard(_SameOrigin):
    """Every request must carry the token: ``?token=`` (which also sets a cookie for the pages that follow),
    the cookie, or ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    def _ok(self, given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        bearer = headers.get("authorization", "")
        bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            pass
        from_cookie = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
        if not (self._ok(query) or self._ok(bearer) or self._ok(from_cookie)):
            await Response("collm-nas dashboard: this address needs the token printed when the dashboard started "
                           "(open the printed URL, or send 'Authorization: Bearer TOKEN')\n", status_code=401,
                           media_type="text/plain")(scope, receive, send)
            return
        if not self._ok(query):
            await super().__call__(scope, receive, send)
            return

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                value = f"{TOKEN_COOKIE}={quote(self.token)}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = list(message.get("headers", [])) + [(b"set-cookie", value.encode("latin-1"))]
            await send(message)

        await super().__call__(scope, receive, send_with_cookie)
