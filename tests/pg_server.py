"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, start, hand out databases, stop.

The server binaries are looked up in $COLLM_NAS_PG_BIN, on PATH, then in
Debian's /usr/lib/postgresql/*/bin (the ``postgresql`` package) and
/usr/local/pgsql/bin. PostgreSQL refuses to run as root: as root the server
runs as an existing unprivileged account (``postgres``, which Debian's
package creates, else ``nobody``) through ``runuser``.

It listens on 127.0.0.1 on a free port and on a Unix socket in its folder;
TCP connections need the password (scram-sha-256), so the tests also see
real authentication. Nothing is written outside the temporary folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "collm"


class Unavailable(Exception):
    """No server can be started here; the message says why."""


def find_bin_dir() -> Path:
    candidates: list[Path] = []
    if os.environ.get("COLLM_NAS_PG_BIN"):
        candidates.append(Path(os.environ["COLLM_NAS_PG_BIN"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in versions]
    candidates.append(Path("/usr/local/pgsql/bin"))
    for d in candidates:
        if all((d / tool).is_file() and os.access(d / tool, os.X_OK) for tool in TOOLS):
            return d
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH, in "
                      "/usr/lib/postgresql/*/bin or in $COLLM_NAS_PG_BIN; install Debian's 'postgresql' package")


def _server_user() -> str | None:
    """The account the server runs as: None (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise Unavailable("running as root and 'runuser' is missing, so the server cannot drop to an "
                          "unprivileged account (PostgreSQL refuses to run as root)")
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise Unavailable("running as root and there is no 'postgres' or 'nobody' account to run the server as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    password: str
    user: str | None
    _databases: int = field(default=0)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            uid = pwd.getpwnam(self.user).pw_uid
            for p in (self.root, pwfile):
                os.chown(p, uid, -1)
        out = self._run(["initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "-E", "UTF8",
                         "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
        if out.returncode != 0:
            raise Unavailable(f"initdb failed: {(out.stderr or out.stdout).strip()[-500:]}")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   "-c shared_buffers=32MB")
        out = self._run(["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                         "-w", "-t", "60", "start"])
        if out.returncode != 0:
            log_file = self.root / "server.log"
            log = log_file.read_text(errors="replace")[-800:] if log_file.exists() else ""
            raise Unavailable(f"the server did not start: {(out.stderr or out.stdout).strip()[-300:]} {log}")

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL (with the password)."""
        import psycopg

        self._databases += 1
        name = f"t{self._databases}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop"], timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PostgresServer:
    """Start a server or raise :class:`Unavailable` naming the reason."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed; pip install -e '.[postgres]'") from None
    bin_dir = find_bin_dir()
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="collm-nas-pg-"))  # under /tmp: readable by the server's account
    server = PostgresServer(bin_dir, root, _free_port(), secrets.token_urlsafe(12), user)
    try:
        started = time.perf_counter()
        server.start()
        server.started_s = time.perf_counter() - started  # type: ignore[attr-defined]
    except BaseException:
        server.stop()
        raise
    return server
