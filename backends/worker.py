"""An evaluation worker of the ``process`` backend: ``python -c '...worker_main()' FD PARENT_PID``.

It builds the run's evaluator once from the spec it is sent, then evaluates one code at a time, writing each
result to the spool before it reports it. It imports the evaluator's code and what that needs, never
LangGraph or LangChain.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from collm_nas.backends.spec import evaluate_one
from collm_nas.backends.spool import spool_write
from collm_nas.core import UserError

_WATCH_PARENT_S = 0.2  # how often a worker checks that its controller lives


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
