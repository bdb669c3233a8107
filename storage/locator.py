"""Where runs are stored: a SQLite file (the embedded default) or a PostgreSQL database.

A *store locator* is one string, the same for the trial store and the
LangGraph checkpointer: a SQLite file path, or a ``postgres://`` /
``postgresql://`` URL (libpq's URI syntax, so ``?sslmode=require``,
``?options=-csearch_path%3Dteam`` and the ``PGPASSWORD`` / ``~/.pgpass``
conventions all work). URLs may carry a password: :func:`mask_url` is the
only form of them that is ever printed, and none is written into run records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from collm_nas.core.errors import UserError

POSTGRES_SCHEMES = ("postgres://", "postgresql://")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# user:password@ at the start of the authority part of a URL.
_NETLOC_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*):(?P<password>[^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#]*)", re.IGNORECASE)
MASK = "***"


def is_postgres(locator: str | Path) -> bool:
    return isinstance(locator, str) and locator.lower().startswith(POSTGRES_SCHEMES)


def mask_url(text: str) -> str:
    """``text`` with the password of a URL (``user:PASSWORD@`` or ``?password=``) replaced by ``***``."""
    text = _NETLOC_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def passwords_in(url: str) -> list[str]:
    """The password(s) a URL carries, raw and percent-decoded (to scrub them from messages)."""
    found = [m["password"] for m in _NETLOC_PASSWORD.finditer(url)]
    found += [m["password"] for m in _QUERY_PASSWORD.finditer(url)]
    out: list[str] = []
    for pw in found:
        for form in (pw, unquote(pw)):
            if form and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)


def scrub(message: str, url: str) -> str:
    """A message about ``url`` that can be printed: the URL masked, its password nowhere."""
    message = message.replace(url, mask_url(url))
    for pw in passwords_in(url):
        message = message.replace(pw, MASK)
    return mask_url(message)


@dataclass(frozen=True)
class StoreLocator:
    kind: Literal["sqlite", "postgres"]
    target: str  # the SQLite file path, or the PostgreSQL URL (may hold a password: never print it)

    @property
    def display(self) -> str:
        """How the store is named in messages: the file, or the URL with its password masked."""
        return self.target if self.kind == "sqlite" else mask_url(self.target)


def parse_store(value: str | Path) -> StoreLocator:
    """Read ``--store`` / ``COLLM_NAS_STORE``: a PostgreSQL URL, ``sqlite:///PATH`` (relative;
    ``sqlite:////PATH`` absolute, as in SQLAlchemy) or a SQLite file path."""
    text = str(value).strip()
    if not text:
        raise UserError("the store is empty; give a postgres://USER@HOST:PORT/DB URL or a SQLite file path")
    if is_postgres(text):
        if text.split("://", 1)[1] in ("", "/"):
            raise UserError(f"store URL '{mask_url(text)}' names no server or database; write it as "
                            "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        return StoreLocator("postgres", text)
    scheme = _SCHEME.match(text)
    if scheme and scheme.group(1).lower() == "sqlite":
        # SQLAlchemy's spelling: sqlite:///runs/x.db is relative, sqlite:////srv/x.db absolute.
        path = text[len("sqlite:"):]
        if path.startswith("///"):
            path = path[3:]
        elif path.startswith("//"):
            raise UserError(f"store '{text}' names a host; write it as sqlite:///RELATIVE/PATH.db or "
                            "sqlite:////ABSOLUTE/PATH.db (or give the file path)")
        if not path:
            raise UserError("store 'sqlite:' names no file; write it as sqlite:///PATH/TO/collm-nas.db")
        return StoreLocator("sqlite", str(Path(path).expanduser()))
    if scheme and "://" in text:
        raise UserError(f"unknown store '{mask_url(text)}'; use postgres://USER@HOST:PORT/DB (or postgresql://), "
                        "sqlite:///PATH or a SQLite file path")
    return StoreLocator("sqlite", str(Path(text).expanduser()))


def spool_dir(locator: str, run_id: str) -> Path:
    """Where workers keep finished results until the search has stored them (always on this machine).

    Beside a SQLite file; for a PostgreSQL store, in the user's cache folder, one folder per database.
    """
    import hashlib
    import os

    if is_postgres(locator):
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        database = hashlib.sha256(mask_url(locator).encode()).hexdigest()[:12]
        return cache / "collm-nas" / "spool" / database / run_id
    return Path(locator).parent / "spool" / run_id
