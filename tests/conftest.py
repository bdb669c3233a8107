"""Shared fixtures: the real NAS-Bench-201 table (never copied into the repo)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from collm_nas.evaluators import NB201TableEvaluator


def pytest_configure(config: pytest.Config) -> None:
    """The Ctrl-C tests send SIGINT to real ``collm-nas`` subprocesses. A suite started in the background of a
    script (``nohup cmd &``) inherits SIGINT as ignored, and so would every process it starts; give the tests'
    processes Python's own Ctrl-C handling back, as a terminal would."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def table_path() -> str:
    """Path of nb201.csv.gz: $COLLM_NAS_NB201_TABLE, else ../shared/data/nb201.csv.gz."""
    env = os.environ.get("COLLM_NAS_NB201_TABLE")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[1].parent / "shared/data/nb201.csv.gz"
    if not path.is_file():
        pytest.skip(
            f"NAS-Bench-201 table not found at '{path}'; set COLLM_NAS_NB201_TABLE to the path of nb201.csv.gz"
        )
    return str(path)


@pytest.fixture(scope="session")
def nb201_evaluator(table_path: str) -> NB201TableEvaluator:
    """The table evaluator for CIFAR-10 (searches cifar10_valid, reports cifar10_test)."""
    return NB201TableEvaluator(table_path, dataset="cifar10")


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (tests/pg_server.py) for the whole session.

    Skipped with the reason when no server can be started here; with
    COLLM_NAS_REQUIRE_POSTGRES=1 (CI) that fails instead.
    """
    from pg_server import Unavailable, start_server

    try:
        server = start_server()
    except Unavailable as e:
        if os.environ.get("COLLM_NAS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"COLLM_NAS_REQUIRE_POSTGRES=1 but no PostgreSQL server could be started: {e}")
        pytest.skip(f"no PostgreSQL server: {e}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server: its postgresql:// URL (with a password)."""
    return postgres_server.new_database()


QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


@pytest.fixture(scope="session")
def qwen_gguf() -> str:
    """Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF), built by ../shared/scripts/fetch-qwen2.5-coder-1.5b: the file
    named by $COLLM_NAS_QWEN_GGUF, else the script's default place. Skipped when absent, failed under
    COLLM_NAS_REQUIRE_LOCAL_LLM=1 (CI builds it)."""
    env = os.environ.get("COLLM_NAS_QWEN_GGUF")
    cache = Path(os.environ.get("COLLM_NAS_MODEL_CACHE") or Path.home() / ".cache/collm-nas/models")
    path = Path(env).expanduser() if env else cache / QWEN_FILE
    if not path.is_file():
        why = (f"Qwen2.5-Coder-1.5B not found at '{path}'; build it with ../shared/scripts/fetch-qwen2.5-coder-1.5b "
               "(or set COLLM_NAS_QWEN_GGUF)")
        if os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return str(path)
