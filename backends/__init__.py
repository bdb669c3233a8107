"""Where evaluations run: in this process, on worker processes, or as Ray tasks — beside the evaluator.

The evaluator says what a trial costs and returns (its capabilities are its own); a backend only runs its
evaluations, each under a seed made from the run seed and the NCode (:mod:`collm_nas.evaluators.seeding`),
and hands results back in the order of the batch, so the trial store, and with it every strategy's view of
the history, is the same whichever backend ran them.

``serial``   (default) in this process, with the run's own evaluator;
``process``  a pool of worker processes (:mod:`.process`, :mod:`.worker`);
``ray``      Ray tasks (:mod:`.ray`, the optional ``ray`` extra).

Crash safety: workers write each finished result to the run's spool folder (:mod:`.spool`) before they
report it, so a controller killed mid-batch loses no finished evaluation.
"""

from __future__ import annotations

from pathlib import Path

from collm_nas.backends.base import Backend, SerialBackend
from collm_nas.backends.spec import EvaluatorSpec, evaluate_one
from collm_nas.core import Evaluator, UserError

BACKENDS = ("serial", "process", "ray")


def make_backend(name: str, spec: EvaluatorSpec, *, workers: int | None = None,
                 spool_dir: str | Path | None = None, evaluator: Evaluator | None = None) -> Backend:
    """The backend ``name`` for a run; ``evaluator`` is the run's own (the serial backend uses it as it is)."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}'; use serial, process or ray")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if name == "serial":
        return SerialBackend(spec, evaluator=evaluator, workers=workers, spool_dir=spool_dir)
    if name == "process":
        from collm_nas.backends.process import ProcessBackend

        return ProcessBackend(spec, workers=workers, spool_dir=spool_dir)
    from collm_nas.backends.ray import RayBackend

    return RayBackend(spec, workers=workers, spool_dir=spool_dir)


def require_backend(name: str) -> None:
    """A one-line error now, not when the first batch is due, when the backend cannot run here."""
    if name == "ray":
        from collm_nas.backends.ray import import_ray

        import_ray()


__all__ = ["BACKENDS", "Backend", "EvaluatorSpec", "SerialBackend", "evaluate_one", "make_backend",
           "require_backend"]
