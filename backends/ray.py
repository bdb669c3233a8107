"""The ``ray`` backend: ``ray.remote`` tasks (``num_gpus=1`` each on a cluster with GPUs) on the cluster named by
``RAY_ADDRESS``, or on a local Ray started for the run (the optional ``ray`` extra)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collm_nas.backends.base import Backend
from collm_nas.backends.spec import EvaluatorSpec, evaluate_one, failed_trial, one_line
from collm_nas.backends.spool import spool_write
from collm_nas.core import Evaluator, Trial, UserError

RAY_INSTALL = "pip install 'collm-nas[ray]'"


def _module_path() -> list[str]:
    """This process's module search path, with '' (the working directory) made absolute."""
    return [p or os.getcwd() for p in sys.path]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"the ray backend needs Ray, which is not installed: {RAY_INSTALL} "
                        "(or use --backend process)") from None
    return ray


_RAY_EVALUATORS: dict[str, Evaluator] = {}


def _ray_task(spec: EvaluatorSpec, spec_key: str, code: str, spool_dir: str | None,
              sys_path: list[str]) -> Trial:
    """One evaluation in a Ray worker (which keeps the evaluator it built for the next task)."""
    for path in sys_path:  # the controller's modules, where this node has them
        if path not in sys.path:
            sys.path.append(path)
    evaluator = _RAY_EVALUATORS.get(spec_key)
    if evaluator is None:
        evaluator = _RAY_EVALUATORS[spec_key] = spec.build()
    result = evaluate_one(evaluator, code, spec.seed, space=spec.space, restore=False)
    spool_write(spool_dir, result)
    return result


class RayBackend(Backend):
    """Ray tasks on the cluster at RAY_ADDRESS, on a Ray the caller started, or on a local one."""

    name = "ray"
    closed = False
    owns_ray = False

    def __init__(self, spec: EvaluatorSpec, *, workers: int | None = None, spool_dir: str | Path | None = None
                 ) -> None:
        super().__init__(spec, workers=workers, spool_dir=spool_dir)
        self._started = False

    def _start(self) -> None:
        if self._started and not self.closed:
            return
        self._started = True
        spec, workers = self.spec, self.workers
        ray = self.ray = import_ray()
        self.owns_ray = False
        self.closed = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                       "log_to_driver": False}
            if not os.environ.get("RAY_ADDRESS"):  # a local Ray for this run
                options["num_cpus"] = workers or os.cpu_count() or 1
                # Nobody sees its metrics and task events (no dashboard), and after a Ctrl-C
                # their final flush holds ray.shutdown for 10-15 s.
                options["_system_config"] = {"enable_metrics_collection": False,
                                             "task_events_report_interval_ms": 0}
            try:
                ray.init(**options)
            except Exception as e:
                raise UserError(f"could not start or reach Ray ({one_line(str(e), 200)}); check RAY_ADDRESS "
                                "or use --backend process") from None
            self.owns_ray = True
            atexit.register(self.close)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.window = workers or max(1, gpus or int(resources.get("CPU", 1)))
        self.remote = ray.remote(_ray_task).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)
        self.spec_ref = ray.put(spec)
        self.spec_key = uuid.uuid4().hex

    def _run(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
        self._start()
        ray = self.ray
        pending = deque(items)
        running: dict[Any, tuple[int, str]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.window:
                    index, code = pending.popleft()
                    ref = self.remote.remote(self.spec_ref, self.spec_key, code, self.spool_dir, _module_path())
                    running[ref] = (index, code)
                finished, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in finished:
                    index, code = running.pop(ref)
                    yield index, self._result(ref, code)
        except BaseException:  # Ctrl-C, an abandoned batch: stop what runs for it
            if not (pending or running):
                pass
            elif self.owns_ray:
                self.close()  # its workers go with it
            else:
                for ref in running:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:
                        pass
            raise

    def _result(self, ref: Any, code: str) -> Trial:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(f"an evaluation worker stopped: {cause}") from None
            error = f"{type(cause).__name__}: {cause}" if cause is not None else str(e).splitlines()[0]
            return failed_trial(code, self.spec.space, error)
        except ray.exceptions.RayError as e:  # the worker process died (WorkerCrashedError and the like)
            return failed_trial(code, self.spec.space, f"worker process died while evaluating ({type(e).__name__})")

    def close(self) -> None:
        """Shut down the Ray this backend started (a later batch starts it again)."""
        if not self._started:
            return
        self.closed = True
        if self.owns_ray:
            self.owns_ray = False
            try:
                atexit.unregister(self.close)
                self.ray.shutdown()
            except Exception:
                pass
