"""The watch over a run's local model server, and what a run says when its LLM answered fewer rounds.

The first tests drive :class:`ServerWatch` with a stand-in server (a real process it can kill and start again
is in the ``local_llm`` tests below and in tests/test_server_death.py); the rest check the one-line verdicts.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from pathlib import Path
import httpx
import openai
import pytest

from collm_nas.llm.chat_models import LLMUnavailable
from collm_nas.llm.llama_server import split_arguments
from collm_nas.llm.local_server import describe_exit
from collm_nas.llm.server_watch import ServerWatch
from collm_nas.core.errors import UserError
from collm_nas.engine.figures import degraded_line, llm_figures, summarise_llm_rounds


class StandInServer:
    """What ServerWatch uses of a LocalModelServer: a real child process it may find dead and start again."""

    def __init__(self, *, answers: bool = True, start_fails: bool = False, move_on_restart: bool = False) -> None:
        self.answers_health = answers
        self.start_fails = start_fails
        self.move_on_restart = move_on_restart
        self.port = 4000
        self.log_path = "/tmp/llm.log"
        self.restarts = 0
        self.proc = self._spawn()

    @staticmethod
    def _spawn() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def exit_description(self) -> str | None:
        code = self.proc.poll()
        return None if code is None else describe_exit(code)

    def alive(self, timeout: float) -> bool:
        return self.answers_health

    def restart(self) -> None:
        if self.start_fails:
            raise UserError("local model server exited with code 1 before it was ready; see /tmp/llm.log")
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.restarts += 1
        if self.move_on_restart:
            self.port += 1
        self.proc = self._spawn()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server():
    srv = StandInServer()
    yield srv
    srv.close()


def _timeout() -> openai.APITimeoutError:
    return openai.APITimeoutError(httpx.Request("POST", "http://127.0.0.1:4000/v1/chat/completions"))


def test_a_server_killed_by_a_signal_is_named_and_started_again(server):
    watch = ServerWatch(server, max_restarts=2)
    watch.before_call("navigator endpoint")
    assert watch.take_events() == []  # alive: nothing to say, nothing restarted
    old_pid = server.pid
    server.kill()
    watch.before_call("navigator endpoint")
    (event,) = watch.take_events()
    assert event.kind == "restart"
    assert f"(pid {old_pid}) ended: killed by signal 9 (SIGKILL)" in event.message
    assert "restart 1 of at most 2" in event.message and "log: /tmp/llm.log" in event.message
    assert server.restarts == 1 and server.proc.poll() is None and watch.restarts == 1
    assert watch.take_events() == []  # each event is handed out once


def test_a_failed_attempt_restarts_a_dead_server_before_the_retry(server):
    watch = ServerWatch(server)
    server.kill(signal.SIGTERM)
    watch.after_failure(openai.APIConnectionError(request=httpx.Request("POST", "http://x")))
    (event,) = watch.take_events()
    assert "killed by signal 15 (SIGTERM)" in event.message and server.restarts == 1


def test_restarts_are_bounded_then_calls_fail_at_once(server):
    watch = ServerWatch(server, max_restarts=1)
    server.kill()
    watch.before_call("generator endpoint")
    server.kill()
    with pytest.raises(LLMUnavailable) as raised:
        watch.before_call("generator endpoint")
    assert "is down" in str(raised.value) and "restarts of this run are used up" in str(raised.value)
    kinds = [e.kind for e in watch.take_events()]
    assert kinds == ["restart", "gave_up"]
    with pytest.raises(LLMUnavailable):  # stays down, says nothing more, sends nothing
        watch.before_call("generator endpoint")
    assert watch.take_events() == [] and server.restarts == 1


def test_a_slow_server_that_still_answers_is_not_restarted(server):
    watch = ServerWatch(server)
    watch.after_failure(_timeout())
    (event,) = watch.take_events()
    assert event.kind == "timeout" and "slow, not down" in event.message
    assert server.restarts == 0


def test_a_server_that_stopped_answering_is_restarted(server):
    server.answers_health = False
    watch = ServerWatch(server)
    watch.after_failure(_timeout())
    (event,) = watch.take_events()
    assert event.kind == "restart" and "stopped answering" in event.message and server.restarts == 1


def test_a_failed_restart_gives_the_server_up(server):
    server.start_fails = True
    watch = ServerWatch(server)
    server.kill()
    with pytest.raises(LLMUnavailable):
        watch.before_call("ranker endpoint")
    (event,) = watch.take_events()
    assert event.kind == "gave_up" and "restarting it failed" in event.message


def test_clients_follow_a_server_that_moved(server):
    server.move_on_restart = True
    watch = ServerWatch(server)
    seen: list[str] = []
    watch.on_moved(seen.append)
    server.kill()
    watch.before_call("navigator endpoint")
    assert seen == ["http://127.0.0.1:4001/v1"]


def test_describe_exit_names_signals_and_codes():
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-11) == "killed by signal 11 (SIGSEGV)"
    assert describe_exit(1) == "exited with code 1"


def test_the_server_entry_point_takes_its_own_flag_and_passes_the_rest():
    assert split_arguments(["--model", "m.gguf", "--extra_buffers", "on", "--port", "1"]) == (
        True, ["--model", "m.gguf", "--port", "1"])
    assert split_arguments(["--extra_buffers=off", "--n_ctx", "8"]) == (False, ["--n_ctx", "8"])
    assert split_arguments(["--model", "m.gguf"]) == (False, ["--model", "m.gguf"])
    with pytest.raises(SystemExit):
        split_arguments(["--extra_buffers", "maybe"])


def _round(no: int, calls: list[dict], events: list[dict] = (), planned: bool = True) -> dict:
    return {"round": no, "llm": llm_figures(calls, list(events)), "llm_planned": planned}


OK = {"role": "navigator", "ok": True, "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 1.0}
FAILED = {"role": "navigator", "ok": False, "error": "navigator endpoint failed 5 times (connection failed)"}
RESTART = {"kind": "restart", "message": "the local model server (pid 1) ended: killed by signal 9 (SIGKILL); ..."}


def test_a_run_that_got_every_answer_is_not_degraded():
    summary = summarise_llm_rounds([_round(1, [OK]), _round(2, [OK], [RESTART]), _round(3, [], planned=False)])
    assert summary["llm_rounds"] == 2 and summary["wanted_rounds"] == 2 and not summary["degraded"]
    assert summary["server_restarts"] == 1
    assert degraded_line(summary, "local") is None


def test_fewer_answers_than_rounds_make_one_line():
    summary = summarise_llm_rounds([_round(1, [OK]), _round(2, [FAILED], [RESTART]), _round(3, [])])
    line = degraded_line(summary, "local")
    assert line.startswith("DEGRADED: the LLM answered 1 of 3 rounds meant for it; 2 rounds ran on the LLM-free "
                           "fallback 'local'")
    assert "1 of 2 calls failed" in line and "restarted once" in line and "\n" not in line
    assert not summary["never_answered"]


def test_an_llm_that_never_answered_says_so():
    summary = summarise_llm_rounds([_round(1, [FAILED]), _round(2, [])])
    assert summary["never_answered"]
    assert degraded_line(summary, "rea").startswith("DEGRADED: the LLM never answered; 2 rounds ran on the LLM-free "
                                                    "fallback 'rea'")


def test_the_prompt_cache_setting(monkeypatch) -> None:
    from collm_nas.llm.local_server import PROMPT_CACHE_ENV, LocalModelServer

    command = LocalModelServer()._command(Path("m.gguf"), 1)
    at = command.index("--cache_size")
    assert command[command.index("--cache") + 1] == "True" and int(command[at + 1]) == 256 << 20
    assert "--cache" not in LocalModelServer(prompt_cache_mb=0)._command(Path("m.gguf"), 1)
    monkeypatch.setenv(PROMPT_CACHE_ENV, "64")
    command = LocalModelServer()._command(Path("m.gguf"), 1)
    assert int(command[command.index("--cache_size") + 1]) == 64 << 20
    monkeypatch.setenv(PROMPT_CACHE_ENV, "lots")
    with pytest.raises(UserError, match=f"{PROMPT_CACHE_ENV} must be a whole number of MiB"):
        LocalModelServer()
