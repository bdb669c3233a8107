"""Keeping a run's local model server answering.

A run that starts the embedded model also owns its server, so it can do better than "connection refused, 5
times": a :class:`ServerWatch` sits between the chat clients and the :class:`LocalModelServer`.

* Before every request it checks that the server's process still lives. When it has exited (a crash, the OOM
  killer, a ``kill -9``), the watch says so in one line naming the exit (signal or code) and the log file,
  starts the server again on the same port, and the request goes to the new one.
* When a request times out, it asks the server for a sign of life (``/collm-nas/health``, answered even while
  a completion runs). A server that does not answer that either has stopped answering (hung, stopped): it is
  ended and started again. A server that answers is only slow; the timeout is counted and named, nothing is
  restarted.
* Restarts are bounded (``max_restarts`` per run, :data:`DEFAULT_MAX_RESTARTS`). Once they are used up, the
  watch says so once, and every later request fails at once with
  :class:`~collm_nas.llm.chat_models.LLMUnavailable` instead of waiting out retries: the run goes on with
  its LLM-free fallback, and its figures say so.

What happened is kept as :class:`ServerEvent` records until the engine takes them
(:meth:`ServerWatch.take_events`), prints them, and counts them in the round's LLM figures.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from collm_nas.llm.chat_models import LLMUnavailable, is_timeout
from collm_nas.core.errors import UserError

DEFAULT_MAX_RESTARTS = 3
# How long a timed-out server gets to answer GET /v1/models before it counts as hung.
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerEvent:
    """Something the watch saw: ``kind`` is ``restart`` (the server was started again), ``gave_up`` (it was not,
    restarts were used up or the start failed) or ``timeout`` (a call timed out; the server still answered)."""

    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


class ServerWatch:
    """Watches one :class:`~collm_nas.llm.local_server.LocalModelServer` for the chat clients that use it."""

    def __init__(self, server: Any, *, max_restarts: int = DEFAULT_MAX_RESTARTS, name: str = "local model server"
                 ) -> None:
        self.server = server
        self.max_restarts = int(max_restarts)
        self.name = name
        self.restarts = 0
        self.down: str | None = None  # why the server is down for good (restarts used up, a failed start)
        self._events: list[ServerEvent] = []
        self._lock = threading.RLock()
        self._listeners: list[Any] = []  # callables told the new base URL when a restart moved the server

    # ------------------------------------------------------------ the clients' hooks
    def on_moved(self, listener: Any) -> None:
        """Call ``listener(base_url)`` when a restart had to move the server to another port."""
        self._listeners.append(listener)

    def before_call(self, describe: str) -> None:
        """Make sure the server lives before a request goes out; raise LLMUnavailable when it is down for good."""
        with self._lock:
            if self.down is None:
                how = self.server.exit_description()
                if how is not None:
                    self._restart(f"the {self.name} (pid {self.server.pid}) ended: {how}")
            if self.down is not None:
                raise LLMUnavailable(describe, 0, self.down)

    def after_failure(self, error: BaseException) -> None:
        """A request failed (a retry may follow): restart a server that died or stopped answering."""
        with self._lock:
            if self.down is not None:
                return
            how = self.server.exit_description()
            if how is not None:
                self._restart(f"the {self.name} (pid {self.server.pid}) ended: {how}")
            elif is_timeout(error):
                if self.server.alive(HEALTH_TIMEOUT_S):
                    self._events.append(ServerEvent(
                        "timeout", f"a call to the {self.name} timed out; the server still answers (it is slow, "
                                   f"not down): nothing restarted"))
                else:
                    self._restart(f"the {self.name} (pid {self.server.pid}) stopped answering (a call timed out "
                                  f"and its health check gave no answer within {HEALTH_TIMEOUT_S:g} s)")

    # ------------------------------------------------------------ the engine's side
    def take_events(self) -> list[ServerEvent]:
        """What happened since the last call (each event is handed out once)."""
        with self._lock:
            events, self._events = self._events, []
            return events

    # ------------------------------------------------------------ internals
    def _restart(self, why: str) -> None:
        log = self.server.log_path
        if self.restarts >= self.max_restarts:
            self.down = f"{why}; not restarted: all {self.max_restarts} restarts of this run are used up"
            self._events.append(ServerEvent("gave_up", f"{self.down}; the run goes on without the LLM (log: {log})"))
            return
        self.restarts += 1
        before = self.server.base_url
        try:
            self.server.restart()
        except UserError as e:
            self.down = f"{why}; restarting it failed: {e}"
            self._events.append(ServerEvent("gave_up", f"{self.down}; the run goes on without the LLM"))
            return
        self._events.append(ServerEvent(
            "restart", f"{why}; restarted it (restart {self.restarts} of at most {self.max_restarts}, "
                       f"pid {self.server.pid}); log: {log}"))
        if self.server.base_url != before:
            for listener in self._listeners:
                listener(self.server.base_url)


__all__ = ["DEFAULT_MAX_RESTARTS", "ServerEvent", "ServerWatch"]
