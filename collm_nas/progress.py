"""A one-line progress bar for terminals, fed by the graph's custom stream."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressBar:
    """Shows evaluations done, best so far and rate; silent when not on a terminal."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.started = time.perf_counter()
        self.first_done: int | None = None
        self._last_len = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled or event.get("event") != "round":
            return
        done, budget = event["evaluated"], max(event["budget"], 1)
        if self.first_done is None:
            self.first_done = done - 1 if done else 0
        filled = int(self.width * min(done, budget) / budget)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = (done - self.first_done) / elapsed
        best = event.get("best") or {}
        best_text = f"best {best['value']:.4g} {event['searched_metric']}" if best.get("value") is not None else "best -"
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{budget} evals  "
            f"{best_text}  {rate:.1f} evals/s  round {event['round']}"
        )
        pad = " " * max(0, self._last_len - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        if self.enabled and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0
