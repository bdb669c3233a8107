"""Run the ``collm-nas`` command line for tests: in this process (fast: ``collm_nas.cli.main`` with the given
environment and captured output), or as a real subprocess (``in_process=False``, for the end-to-end tests)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


@contextlib.contextmanager
def environment(env: Mapping[str, str] | None, cwd: str | Path | None) -> Iterator[None]:
    saved, here = dict(os.environ), os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(here)


def run_cli(args: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
            *, in_process: bool = True, stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    args = [str(a) for a in args]
    if not in_process:
        return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=dict(env) if env else None,
                              cwd=cwd, capture_output=True, text=True, timeout=timeout, input=stdin)
    from collm_nas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with environment(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        old_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin or "")
        try:
            code = main(args)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
        finally:
            sys.stdin = old_stdin
    return subprocess.CompletedProcess(["collm-nas", *args], code, out.getvalue(), err.getvalue())


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], limit_s: float = 120) -> None:
    """SIGKILL ``proc`` (a real ``collm-nas`` subprocess) as soon as ``ready()`` holds, and reap it.

    Fails the test if the process exits first, or if ``ready`` has not held after ``limit_s`` seconds (a
    guard against a hung test, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    try:
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the search made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
