"""The spool: a finished result kept on disk until the search has stored it.

A worker writes each result here before it reports it; the controller discards it once the trial store holds
it. A controller killed mid-batch therefore loses no finished evaluation: on resume the spool answers those
codes and only the evaluations cut short run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path

from collm_nas.core import Trial


def _spool_file(directory: str | Path, code: str) -> Path:
    name = code if len(code) <= 120 and code.isalnum() else hashlib.sha256(code.encode()).hexdigest()
    return Path(directory) / f"{name}.json"


def spool_write(directory: str | Path | None, result: Trial) -> None:
    """Keep a finished result on disk until the search has stored it (only where the folder exists)."""
    if directory is None or not os.path.isdir(directory):
        return
    path = _spool_file(directory, result.ncode)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a full disk costs this result its safety net, not the result
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def spool_read(directory: str | Path | None, code: str) -> Trial | None:
    if directory is None:
        return None
    try:
        data = json.loads(_spool_file(directory, code).read_text(encoding="utf-8"))
        result = Trial(**data)
    except (OSError, ValueError, TypeError):
        return None
    return result if result.ncode == code else None


def spool_discard(directory: str | Path | None, code: str) -> None:
    if directory is not None:
        _spool_file(directory, code).unlink(missing_ok=True)
