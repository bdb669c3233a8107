"""The examples' evaluator behind a gate, for kill tests: with $GATE_FILE set, the evaluation numbered
$GATE_AT (1-based, in this process) writes that file and then blocks, so a test kills the search at a
known point (the file appears: an event, not a clock)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from examples.digits_mlp import evaluate as _evaluate

_calls = 0


def evaluate(arch: dict, seed: int = 0) -> dict:
    global _calls
    _calls += 1
    gate = os.environ.get("GATE_FILE")
    if gate and _calls == int(os.environ.get("GATE_AT", "1")):
        Path(gate).write_text(str(_calls))
        while True:  # blocked until the test kills this process
            time.sleep(1)
    return _evaluate(arch, seed)
