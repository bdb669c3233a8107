"""A user evaluator for end-to-end tests: logs every call, takes a little time.

Used as ``--evaluator e2e_evaluator:score`` with ``tests/`` on PYTHONPATH.
Each call appends the architecture to $E2E_EVAL_LOG, so a test can prove
that a resumed search evaluates nothing twice.
"""

import os
import time
import zlib

CALLS: list[str] = []



def score(arch: dict) -> dict:
    text = ",".join(f"{k}={v}" for k, v in sorted(arch.items()))
    CALLS.append(text)
    stop_at = int(os.environ.get("E2E_INTERRUPT_AT", "0"))
    if stop_at and len(CALLS) == stop_at:
        raise KeyboardInterrupt  # as if Ctrl-C arrived in the middle of a batch
    log = os.environ.get("E2E_EVAL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    time.sleep(float(os.environ.get("E2E_EVAL_SLEEP", "0")))
    value = zlib.crc32(text.encode()) % 10_000 / 100.0
    return {"score": value, "size": float(len(text))}
