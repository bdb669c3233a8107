"""Evaluate a batch concurrently: in this process, in worker processes, or as Ray tasks.

:class:`ParallelEvaluator` wraps the evaluator of a run. It holds an
:class:`EvaluatorSpec` (picklable: the arguments ``make_evaluator`` takes)
from which each worker builds its own copy of the evaluator once, and sends
it the batch's codes one at a time:

``serial``   (default) in this process, one code after the other;
``process``  a pool of worker processes, each a fresh interpreter (nothing is
             forked, so CUDA is safe), pinned to one GPU through
             ``CUDA_VISIBLE_DEVICES`` where ``torch.cuda.device_count() > 0``
             (round robin when there are more workers than GPUs), else CPU
             workers, as many as ``workers`` (default: one per core);
``ray``      ``ray.remote`` tasks (``num_gpus=1`` each on a cluster with GPUs)
             on the cluster named by ``RAY_ADDRESS``, or on a local Ray
             started for the run (the optional ``ray`` extra).

Identical results whichever backend runs them: every evaluation runs under
a seed made from the run seed and the NCode only (:mod:`.seeding`), and
results are handed back in the order of the batch, so the trial store, and
with it every strategy's view of the history, is the same as a serial run's.

Crash safety: a worker writes each finished result to the run's spool
folder (``runs/spool/RUN_ID/``) before it reports it, and a result leaves
the spool only once the search has stored it. A controller killed
mid-batch therefore loses no finished evaluation: on resume the spool
answers those codes and only the evaluations cut short run again. A worker
that dies (a crash in the user's code, the OOM killer) fails its trial with
one line; the batch goes on with a fresh worker. Workers watch their
parent: when the controller dies they kill themselves and their own
children. Ctrl-C stops the pool (SIGTERM, then SIGKILL) and is raised on.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from collm_nas.core.errors import UserError
from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.seeding import evaluation_seed, seeded
from collm_nas.core.space import SearchSpace

BACKENDS = ("serial", "process", "ray")
RAY_INSTALL = "pip install 'collm-nas[ray]'"
_STOP_GRACE_S = 3.0  # how long stopped workers get before SIGKILL
_WATCH_PARENT_S = 0.2  # how often a worker checks that its controller lives


@dataclasses.dataclass
class EvaluatorSpec:
    """How to build an evaluator anywhere: ``make_evaluator(kind, space, **options)``, plus the run seed."""

    kind: str
    space: SearchSpace
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    metrics: tuple[str, ...] = ()  # metrics every trial must carry besides the usual (the objectives)

    def build(self) -> Evaluator:
        from collm_nas.evaluators import make_evaluator

        evaluator = make_evaluator(self.kind, self.space, **self.options)
        if self.metrics:
            evaluator.want_metrics(self.metrics)
        return evaluator


# --------------------------------------------------------------- one evaluation
def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _arch(space: SearchSpace | None, code: str) -> str:
    try:
        return space.format_arch(code) if space is not None else code
    except Exception:  # a malformed code is reported by the evaluator, not here
        return code


def _failed(code: str, space: SearchSpace | None, error: str) -> Trial:
    return Trial(code, _arch(space, code), status="failed", error=_one_line(error))


def evaluate_one(evaluator: Evaluator, code: str, run_seed: int, *, space: SearchSpace | None = None,
                 restore: bool = True) -> Trial:
    """Evaluate one code under its own seed; anything but a UserError fails just this trial."""
    libraries = not evaluator.deterministic
    with seeded(evaluation_seed(run_seed, code), libraries=libraries, restore=restore):
        try:
            results = list(evaluator.evaluate([code]))
        except UserError:
            raise
        except Exception as e:
            return _failed(code, space, f"{type(e).__name__}: {e}")
    if len(results) != 1 or results[0].ncode != code:
        return _failed(code, space, f"the evaluator answered {len(results)} result(s) for code {code}")
    return results[0]


# ------------------------------------------------------------------- the spool
def _spool_file(directory: str | Path, code: str) -> Path:
    name = code if len(code) <= 120 and code.isalnum() else hashlib.sha256(code.encode()).hexdigest()
    return Path(directory) / f"{name}.json"


def spool_write(directory: str | Path | None, result: Trial) -> None:
    """Keep a finished result on disk until the search has stored it (only where the folder exists)."""
    if directory is None or not os.path.isdir(directory):
        return
    path = _spool_file(directory, result.ncode)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a full disk costs this result its safety net, not the result
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def spool_read(directory: str | Path | None, code: str) -> Trial | None:
    if directory is None:
        return None
    try:
        data = json.loads(_spool_file(directory, code).read_text(encoding="utf-8"))
        result = Trial(**data)
    except (OSError, ValueError, TypeError):
        return None
    return result if result.ncode == code else None


def spool_discard(directory: str | Path | None, code: str) -> None:
    if directory is not None:
        _spool_file(directory, code).unlink(missing_ok=True)


# ------------------------------------------------------------- the evaluator
class ParallelEvaluator(Evaluator):
    """Runs any evaluator (given as a spec) serially, on a process pool, or on Ray; see the module doc."""

    def __init__(self, spec: EvaluatorSpec, backend: str = "serial", workers: int | None = None, *,
                 inner: Evaluator | None = None, spool_dir: str | Path | None = None) -> None:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend '{backend}'; use serial, process or ray")
        if workers is not None and workers < 1:
            raise UserError(f"workers must be at least 1, got {workers}")
        self.spec = spec
        self.backend = backend
        self.workers = workers
        self.inner = inner if inner is not None else spec.build()
        self.spool_dir = str(spool_dir) if spool_dir is not None else None
        self.name = self.inner.name
        self.searched_metric = self.inner.searched_metric
        self.reported_metric = self.inner.reported_metric
        self.mode = self.inner.mode
        self.metric_note = self.inner.metric_note
        self.deterministic = self.inner.deterministic
        self._runner: _ProcessPool | _RayRunner | None = None

    # The inner evaluator's declared capabilities, passed through.
    def prepare(self) -> None:
        self.inner.prepare()

    @property
    def reference_columns(self) -> tuple[str, ...]:
        return self.inner.reference_columns

    def reference_values(self, column: str) -> dict[str, float]:
        return self.inner.reference_values(column)

    @property
    def resource_names(self) -> tuple[str, ...]:
        return self.inner.resource_names

    def resources(self, ncode: str) -> dict[str, float]:
        return self.inner.resources(ncode)

    def estimate_cost(self, ncode: str) -> dict[str, float]:
        return self.inner.estimate_cost(ncode)

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        return list(self.iter_evaluate(ncodes))

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[Trial]:
        """One result per code, in the order of ``ncodes``, each as soon as it and those before it are done."""
        codes = list(ncodes)
        if self.backend == "serial":
            for code in codes:
                spooled = spool_read(self.spool_dir, code)
                yield spooled or evaluate_one(self.inner, code, self.spec.seed, space=self.spec.space)
                if spooled is not None:
                    spool_discard(self.spool_dir, code)
            return
        done: dict[int, Trial] = {}
        todo: list[tuple[int, str]] = []
        for i, code in enumerate(codes):
            spooled = spool_read(self.spool_dir, code)
            if spooled is not None:
                done[i] = spooled  # finished before the controller stopped: not evaluated again
            else:
                todo.append((i, code))
        if self.spool_dir is not None:
            os.makedirs(self.spool_dir, exist_ok=True)
        stream = self._get_runner().run(todo) if todo else iter(())
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

    def _get_runner(self) -> _ProcessPool | _RayRunner:
        if self._runner is None or getattr(self._runner, "closed", False):
            if self.backend == "process":
                self._runner = _ProcessPool(self.spec, self.workers, self.spool_dir)
            else:
                self._runner = _RayRunner(self.spec, self.workers, self.spool_dir)
        return self._runner

    def close(self) -> None:
        """Stop the workers (a later evaluation starts new ones)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
        self.inner.close()

    def clear_spool(self) -> None:
        """Drop the run's spool folder (once the run has finished)."""
        if self.spool_dir is not None:
            shutil.rmtree(self.spool_dir, ignore_errors=True)


# ------------------------------------------------------------ process backend
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


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


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


class _ProcessPool:
    """Worker processes started on demand and kept between batches until closed."""

    def __init__(self, spec: EvaluatorSpec, workers: int | None, spool_dir: str | None) -> None:
        self.spec = spec
        self.spool_dir = spool_dir
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
        command = [sys.executable, "-c", "from collm_nas.evaluators.parallel import worker_main; worker_main()",
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
    def run(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
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
        how = _describe_exit(worker.proc.poll())
        task, ready = worker.task, worker.ready
        self._drop(worker)
        if not ready:
            raise UserError(f"an evaluation worker exited ({how}) before it could build the evaluator; "
                            "its error is printed above (--backend serial runs the evaluator in this process)")
        if task is not None:
            yield task.index, _failed(task.code, self.spec.space, f"worker process died while evaluating ({how})")

    def close(self, kill: bool = False) -> None:
        _stop_workers(self.workers, kill)


def worker_main() -> None:
    """A process-pool worker: ``python -c '...worker_main()' FD PARENT_PID``."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's: it stops the pool
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()
    conn = Connection(fd)
    try:
        _, sys_path, spec, spool_dir = conn.recv()
        sys.path[:] = list(dict.fromkeys([*sys_path, *sys.path]))  # as the controller sees modules
        try:
            evaluator = spec.build()
        except UserError as e:
            conn.send(("fatal", str(e)))
            return
        conn.send(("ready", os.getpid()))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            _, task_id, code, run_seed = message
            try:
                result = evaluate_one(evaluator, code, run_seed, space=spec.space, restore=False)
            except UserError as e:
                conn.send(("fatal", str(e)))
                return
            spool_write(spool_dir, result)  # durable before it is reported
            conn.send(("result", task_id, result))
    except (EOFError, OSError, KeyboardInterrupt):  # the controller went away
        return


def _watch_parent(parent: int) -> None:
    """Die, with every process of this worker's group, once the controller is gone."""
    while os.getppid() == parent:
        time.sleep(_WATCH_PARENT_S)
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


# ---------------------------------------------------------------- Ray backend
def require_backend(backend: str) -> None:
    """A one-line error now, not when the first batch is due, when the backend cannot run here."""
    if backend == "ray":
        import_ray()


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


class _RayRunner:
    """Ray tasks on the cluster at RAY_ADDRESS, on a Ray the caller started, or on a local one."""

    def __init__(self, spec: EvaluatorSpec, workers: int | None, spool_dir: str | None) -> None:
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
                raise UserError(f"could not start or reach Ray ({_one_line(str(e), 200)}); check RAY_ADDRESS "
                                "or use --backend process") from None
            self.owns_ray = True
            atexit.register(self.close)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.window = workers or max(1, gpus or int(resources.get("CPU", 1)))
        self.remote = ray.remote(_ray_task).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)
        self.spec = spec
        self.spec_ref = ray.put(spec)
        self.spec_key = uuid.uuid4().hex
        self.spool_dir = spool_dir

    def run(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Trial]]:
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
            return _failed(code, self.spec.space, error)
        except ray.exceptions.RayError as e:  # the worker process died (WorkerCrashedError and the like)
            return _failed(code, self.spec.space, f"worker process died while evaluating ({type(e).__name__})")

    def close(self) -> None:
        self.closed = True
        if self.owns_ray:
            self.owns_ray = False
            try:
                atexit.unregister(self.close)
                self.ray.shutdown()
            except Exception:
                pass
