"""The embedded llama.cpp server ends with the process that started it, even when that process is killed with
SIGKILL and never runs its own cleanup (the server has a session of its own, so nothing else would stop it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collm_nas.llm.llama_server import PARENT_ENV, end_with_parent

# A stand-in for the server: the same watch, then nothing but waiting.
SERVER = """
import sys, time
from pathlib import Path
from collm_nas.llm.llama_server import end_with_parent
watching = end_with_parent(poll_s=0.05)
Path(sys.argv[1]).write_text("watching" if watching else "not watching")
time.sleep(600)
"""

# A stand-in for a search: it starts the server as LocalModelServer does (own session, its pid in the env).
SEARCH = """
import os, subprocess, sys, time
from pathlib import Path
env = dict(os.environ, {name}=str(os.getpid()))
server = subprocess.Popen([sys.executable, "-c", {server!r}, sys.argv[1]], start_new_session=True, env=env)
Path(sys.argv[2]).write_text(str(server.pid))
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_for(condition, what: str, limit_s: float = 60.0) -> None:
    """Wait for an event (the limit only stops a broken test from hanging)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {limit_s:.0f} s")
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_the_server_ends_when_the_search_that_started_it_is_killed(tmp_path: Path) -> None:
    flag, pid_file = tmp_path / "watching", tmp_path / "server.pid"
    search = subprocess.Popen([sys.executable, "-c", SEARCH.format(name=PARENT_ENV, server=SERVER),
                               str(flag), str(pid_file)])
    try:
        _wait_for(lambda: flag.exists() and pid_file.exists() and pid_file.read_text(), "the server's start")
        server = int(pid_file.read_text())
        assert flag.read_text() == "watching"
        assert not _gone(server)
        os.kill(search.pid, signal.SIGKILL)  # no cleanup of the search's own runs
        search.wait()
        _wait_for(lambda: _gone(server), "the server's exit")
    finally:
        search.kill()
        if pid_file.exists() and pid_file.read_text() and not _gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_server_run_by_hand_stays_up_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the variable, or naming a process that is not the server's parent, there is no watch."""
    monkeypatch.delenv(PARENT_ENV, raising=False)
    assert end_with_parent() is None
    monkeypatch.setenv(PARENT_ENV, str(os.getpid()))  # this test process is not its own parent
    assert end_with_parent() is None
