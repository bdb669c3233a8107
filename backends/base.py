"""The backend interface: where a batch's evaluations run, beside the evaluator that says what they cost.

A :class:`Backend` takes a batch of codes and yields one :class:`~collm_nas.core.Trial` per code, in the
batch's order, each as soon as it and those before it are done, whichever worker finished first. Codes the
spool still holds (finished before a controller stopped) are answered from it and not evaluated again;
a result leaves the spool once the caller has it (the engine stored it).

Subclasses implement :meth:`Backend._run`: ``(index, trial)`` pairs in the order evaluations finish.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from collm_nas.backends.spec import EvaluatorSpec
from collm_nas.backends.spool import spool_discard, spool_read
from collm_nas.core import Evaluator, Trial


class Backend:
    """Runs a run's evaluations; see the module doc. ``spec`` builds the evaluator in every worker."""

    name = "backend"

    def __init__(self, spec: EvaluatorSpec, *, workers: int | None = None, spool_dir: str | Path | None = None
                 ) -> None:
        self.spec = spec
        self.workers = workers
        self.spool_dir = str(spool_dir) if spool_dir is not None else None

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[Trial]:
        """One result per code, in the order of ``ncodes`` (see the module doc)."""
        codes = list(ncodes)
        done: dict[int, Trial] = {}
        todo: list[tuple[int, str]] = []
        for i, code in enumerate(codes):
            spooled = spool_read(self.spool_dir, code)
            if spooled is not None:
                done[i] = spooled  # finished before the controller stopped: not evaluated again
            else:
                todo.append((i, code))
        if self.spool_dir is not None and todo:
            os.makedirs(self.spool_dir, exist_ok=True)
        stream = self._run(todo) if todo else iter(())
        try:
            for i, code in enumerate(codes):
                while i not in done:
                    index, result = next(stream)
                    done[index] = result
                yield done.pop(i)
                spool_discard(self.spool_dir, code)  # the caller has it (the search stored it) now
            for _ in stream:  # lets the runner finish its batch (nothing is left in it)
                pass
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        return list(self.iter_evaluate(ncodes))

    def _run(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (a later batch starts new ones)."""

    def clear_spool(self) -> None:
        """Drop the run's spool folder (once the run has finished)."""
        if self.spool_dir is not None:
            shutil.rmtree(self.spool_dir, ignore_errors=True)


class SerialBackend(Backend):
    """In this process, one code after the other, with the run's own evaluator (no copy is built)."""

    name = "serial"

    def __init__(self, spec: EvaluatorSpec, *, evaluator: Evaluator | None = None, workers: int | None = None,
                 spool_dir: str | Path | None = None) -> None:
        super().__init__(spec, workers=workers, spool_dir=spool_dir)
        self.evaluator = evaluator if evaluator is not None else spec.build()

    def _run(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
        from collm_nas.backends.spec import evaluate_one

        for index, code in items:
            yield index, evaluate_one(self.evaluator, code, self.spec.seed, space=self.spec.space)
