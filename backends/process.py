"""The ``process`` backend: a pool of worker processes, each a fresh interpreter.

Nothing is forked, so CUDA is safe. Each worker is pinned to one GPU through ``CUDA_VISIBLE_DEVICES`` where
``torch.cuda.device_count() > 0`` (round robin when there are more workers than GPUs), else the workers are
CPU workers, as many as ``workers`` (default: one per core), sharing the cores. A worker that dies (a crash
in the user's code, the OOM killer) fails its trial with one line; the batch goes on with a fresh worker.
Workers watch their parent: when the controller dies they kill themselves and their own children. Ctrl-C
stops the pool (SIGTERM, then SIGKILL) and is raised on. The workers run :mod:`collm_nas.backends.worker`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path

from collm_nas.backends.base import Backend
from collm_nas.backends.spec import EvaluatorSpec, failed_trial
from collm_nas.core import Trial, UserError

_STOP_GRACE_S = 3.0  # how long stopped workers get before SIGKILL


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _no_gpu_driver() -> bool:
    """True where no GPU driver is loaded (so torch need not be imported to count GPUs)."""
    if not sys.platform.startswith("linux"):
        return False
    return not any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def gpu_ids() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (empty without CUDA)."""
    if "torch" not in sys.modules and (_no_gpu_driver() or importlib.util.find_spec("torch") is None):
        return []
    import torch

    count = torch.cuda.device_count()
    if count <= 0:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def _module_path() -> list[str]:
    """This process's module search path, with '' (the working directory) made absolute."""
    return [p or os.getcwd() for p in sys.path]


@dataclasses.dataclass
class _Task:
    id: int
    index: int
    code: str


class _Worker:
    def __init__(self, proc: subprocess.Popen, conn: Connection, gpu: str | None) -> None:
        self.proc = proc
        self.conn = conn
        self.gpu = gpu
        self.ready = False
        self.task: _Task | None = None


def _stop_workers(workers: list[_Worker], kill: bool) -> None:
    """Stop workers: idle ones are asked to leave, busy ones (or all, with ``kill``) get SIGTERM, then SIGKILL."""
    for w in workers:
        try:
            if kill or w.task is not None:
                os.killpg(w.proc.pid, signal.SIGTERM)  # the worker leads its own group: its children go too
            else:
                w.conn.send(("stop",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + _STOP_GRACE_S
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)  # whatever is left of the group (its children too)
        except OSError:
            pass
        if w.proc.poll() is None:
            w.proc.wait()
        w.conn.close()
    workers.clear()


class ProcessBackend(Backend):
    """Worker processes started on demand and kept between batches until closed (see the module doc)."""

    name = "process"

    def __init__(self, spec: EvaluatorSpec, *, workers: int | None = None, spool_dir: str | Path | None = None
                 ) -> None:
        super().__init__(spec, workers=workers, spool_dir=spool_dir)
        self.gpus = gpu_ids()
        self.size = workers or (len(self.gpus) if self.gpus else (os.cpu_count() or 1))
        self.workers: list[_Worker] = []
        self._started = 0
        self._task_ids = 0
        self._finalizer = weakref.finalize(self, _stop_workers, self.workers, True)

    # -- workers
    def _start_worker(self) -> _Worker:
        gpu = self.gpus[self._started % len(self.gpus)] if self.gpus else None
        self._started += 1
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        else:  # CPU workers share the cores instead of each using all of them
            threads = str(max(1, (os.cpu_count() or 1) // self.size))
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(var, threads)
        parent_conn, child_conn = Pipe(duplex=True)
        fd = child_conn.fileno()
        try:
            out = sys.stderr.fileno()  # the user's prints go to stderr: stdout stays the CLI's (--json)
        except (AttributeError, OSError, ValueError):
            out = None
        command = [sys.executable, "-c", "from collm_nas.backends.worker import worker_main; worker_main()",
                   str(fd), str(os.getpid())]
        try:
            proc = subprocess.Popen(command, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    process_group=0)
        finally:
            child_conn.close()
        worker = _Worker(proc, parent_conn, gpu)
        self.workers.append(worker)
        parent_conn.send(("init", _module_path(), self.spec, self.spool_dir))
        return worker

    def _drop(self, worker: _Worker) -> None:
        try:
            os.killpg(worker.proc.pid, signal.SIGKILL)  # its children too, if any
        except OSError:
            pass
        worker.proc.wait()
        worker.conn.close()
        self.workers.remove(worker)

    # -- a batch
    def _run(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
        """(index, result) pairs in the order the evaluations finish."""
        pending = deque(items)
        try:
            while pending or self._busy():
                self._dispatch(pending)
                yield from self._collect(pending)
        except BaseException:  # Ctrl-C, an abandoned batch, a worker that cannot start
            if pending or self._busy():
                self.close(kill=True)
            raise

    def _busy(self) -> bool:
        return any(w.task is not None for w in self.workers)

    def _dispatch(self, pending: deque[tuple[int, str]]) -> None:
        idle = [w for w in self.workers if w.task is None]
        while len(idle) < len(pending) and len(self.workers) < self.size:
            idle.append(self._start_worker())
        for worker in idle:
            if not pending:
                break
            index, code = pending.popleft()
            self._task_ids += 1
            task = _Task(self._task_ids, index, code)
            try:
                worker.conn.send(("eval", task.id, code, self.spec.seed))
            except OSError:  # it died while idle: the task goes back, a new worker takes it
                pending.appendleft((index, code))
                if not worker.ready:
                    list(self._died(worker, pending))  # it could not even start: says why
                self._drop(worker)
                continue
            worker.task = task

    def _collect(self, pending: deque[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
        watched = [w for w in self.workers if w.task is not None or not w.ready]
        ready = wait([w.conn for w in watched], timeout=0.5)
        for worker in watched:
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    yield from self._died(worker, pending)
                    continue
                kind = message[0]
                if kind == "ready":
                    worker.ready = True
                elif kind == "result":
                    _, task_id, result = message
                    task = worker.task
                    if task is not None and task.id == task_id:
                        worker.task = None
                        yield task.index, result
                elif kind == "fatal":
                    raise UserError(f"an evaluation worker stopped: {message[1]}")
            elif worker.proc.poll() is not None and not worker.conn.poll():
                yield from self._died(worker, pending)  # dead, though a child of it holds the pipe open

    def _died(self, worker: _Worker, pending: deque[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
        try:
            worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        how = describe_exit(worker.proc.poll())
        task, ready = worker.task, worker.ready
        self._drop(worker)
        if not ready:
            raise UserError(f"an evaluation worker exited ({how}) before it could build the evaluator; "
                            "its error is printed above (--backend serial runs the evaluator in this process)")
        if task is not None:
            yield task.index, failed_trial(task.code, self.spec.space, f"worker process died while evaluating ({how})")

    def close(self, kill: bool = False) -> None:
        """Stop the workers (a later batch starts new ones)."""
        _stop_workers(self.workers, kill)
