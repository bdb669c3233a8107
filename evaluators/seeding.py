"""Per-evaluation seeds that depend on the run seed and the NCode only.

Every backend (in-process, worker processes, Ray tasks) evaluates a code
under the same seed, whichever worker runs it and in whatever order, so a
search gives the same results on all of them.

Inside an evaluation, :func:`current_seed` returns that seed (a user
function may also ask for it with a ``seed`` parameter). The global
generators of ``random`` and, when the evaluator's code has imported them,
``numpy`` and ``torch`` are seeded with it before the evaluation starts.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# The seed of the evaluation in progress, per thread and task: two runs in one process (two threads of the
# dashboard, say) each see their own.
_current: ContextVar[int | None] = ContextVar("collm_nas_evaluation_seed", default=None)


def evaluation_seed(run_seed: int, ncode: str) -> int:
    """The seed of evaluating ``ncode`` in a run seeded with ``run_seed`` (0 <= seed < 2**32)."""
    digest = hashlib.sha256(f"collm-nas/evaluation/{int(run_seed)}/{ncode}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # 32 bits: valid for random, numpy and torch alike


def current_seed() -> int | None:
    """The seed of the evaluation in progress (None outside an evaluation)."""
    return _current.get()


def _seed_libraries(seed: int, keep_state: bool) -> list[tuple[Any, Any]]:
    """Seed the global generators; returns (restore function, state) pairs when ``keep_state``."""
    saved: list[tuple[Any, Any]] = []
    if keep_state:
        saved.append((random.setstate, random.getstate()))
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None and hasattr(np, "random"):
        if keep_state:
            saved.append((np.random.set_state, np.random.get_state()))
        np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        if keep_state:
            saved.append((torch.set_rng_state, torch.get_rng_state()))
            cuda = getattr(torch, "cuda", None)
            if cuda is not None and cuda.is_initialized():
                saved.append((cuda.set_rng_state_all, cuda.get_rng_state_all()))
        torch.manual_seed(seed)  # also seeds every CUDA device
    return saved


@contextmanager
def seeded(seed: int, *, libraries: bool = True, restore: bool = True) -> Iterator[int]:
    """Run an evaluation under ``seed``: :func:`current_seed` answers it and the global
    generators are seeded with it (``libraries``); their states come back afterwards (``restore``)."""
    token = _current.set(seed)
    saved = _seed_libraries(seed, keep_state=restore) if libraries else []
    try:
        yield seed
    finally:
        _current.reset(token)
        for set_state, state in reversed(saved):
            set_state(state)
