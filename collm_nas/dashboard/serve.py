"""``collm-nas dashboard``: serve the dashboard with uvicorn until Ctrl-C.

Loopback by default. Binding any other address is the user's explicit choice (``--host``), and then every
request must carry a token: ``COLLM_NAS_DASHBOARD_TOKEN`` (environment or ``.env``) when set, else a fresh
one, printed in the URL. A token that is set is required on loopback too.
"""

from __future__ import annotations

import errno
import ipaddress
import secrets
import socket
import sys
from typing import Any

from collm_nas.core import UserError, load_settings

DEFAULT_PORT = 8731


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_workspace(runs_dir: str | None, store: str | None, table: str | None) -> Any:
    """The workspace the CLI would use, opened now: a store that cannot be opened is one line."""
    from collm_nas.api import Workspace

    try:
        ws = Workspace(runs_dir, table_path=table, store=store)
        ws.store.list_runs()  # reads the store once: a file that is no database fails here, not on the first page
    except UserError:
        raise
    except Exception as e:  # sqlite3.DatabaseError, PermissionError, ...: the store, not a bug of ours
        from collm_nas.storage import parse_store

        where = parse_store(load_settings().store_url(runs_dir, store)).display  # (never a password)
        raise UserError(f"cannot open the run store {where}: {type(e).__name__}: {' '.join(str(e).split())[:200]}; "
                        "point --runs-dir or --store at a collm-nas store") from None
    return ws


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use; pick another with --port (0: any free port)") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; check --host and --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT, runs_dir: str | None = None,
          store: str | None = None, table: str | None = None, token: str | None = None) -> int:
    """Serve the dashboard until Ctrl-C; prints its URL first. One-line errors (exit 2) for what is wrong."""
    try:
        import uvicorn
    except ImportError:
        raise UserError("the dashboard needs uvicorn: pip install 'collm-nas[dashboard]'") from None
    from collm_nas.dashboard import Board, create_app

    if port < 0 or port > 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    token = token or load_settings().dashboard_token or None
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(18)
    ws = open_workspace(runs_dir, store, table)
    sock = _bind(host, port)
    actual = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{actual}/" + (f"?token={token}" if token else "")

    def say(text: str) -> None:
        print(f"collm-nas dashboard: {text}", file=sys.stderr, flush=True)

    app = create_app(Board(lambda: ws), token=token, say=say, preload=load_settings().dashboard_preload)
    print(f"collm-nas dashboard: {url}", flush=True)
    say(f"runs in {ws.location}; Ctrl-C stops" + ("" if is_loopback(host) else
        "; every request needs the token in this URL (or COLLM_NAS_DASHBOARD_TOKEN)"))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
        pass
    finally:
        sock.close()
    say("stopped")
    return 0
