"""The embedded local model, against the real llama.cpp server and SmolLM2 (no mocks).

Skipped when the ``local`` extra is not installed, unless
COLLM_NAS_REQUIRE_LOCAL_LLM=1 (CI), in which case every test here fails.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collm_nas.llm import local_server as local_model
from collm_nas.llm.local_server import (
    LOCAL_MODEL_NAME,
    LocalModelServer,
    local_model_available,
    local_model_path,
)
from collm_nas.core.errors import UserError

pytestmark = pytest.mark.local_llm

_REQUIRED = os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1"
_MISSING = None if local_model_available() else local_model.INSTALL_HINT
if _MISSING and not _REQUIRED:
    pytest.skip(_MISSING, allow_module_level=True)

YES_NO = 'root ::= "yes" | "no"'


@pytest.fixture(scope="module", autouse=True)
def _require_local_model() -> None:
    """With COLLM_NAS_REQUIRE_LOCAL_LLM=1 (CI) a missing model fails every test here."""
    if _MISSING:
        pytest.fail(f"COLLM_NAS_REQUIRE_LOCAL_LLM=1 but {_MISSING}", pytrace=False)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(n_ctx=2048) as srv:
        yield srv


def _chat(srv: LocalModelServer, **extra_body):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=srv.base_url,
        api_key="none",
        model=srv.model,
        temperature=0,
        timeout=120,
        max_retries=0,
        extra_body=extra_body,
    )


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_free(port: int) -> bool:
    """Nothing listens on ``port`` and a new server could bind it.

    SO_REUSEADDR as servers (uvicorn) set it: the closed health-check
    connections may leave TIME_WAIT entries on the port for a minute.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_model_file_is_shipped_in_the_package() -> None:
    path = local_model_path()
    assert path is not None and path.suffix == ".gguf" and path.stat().st_size > 10_000_000


def test_models_endpoint_lists_the_alias(server: LocalModelServer) -> None:
    assert server.running
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.model == LOCAL_MODEL_NAME
    listing = _get_json(f"{server.base_url}/models")
    assert [entry["id"] for entry in listing["data"]] == [LOCAL_MODEL_NAME]
    # llama-cpp-python's server marks its models this way; clients use it to detect it.
    assert listing["data"][0]["owned_by"] == "me"


def test_grammar_forces_yes_or_no(server: LocalModelServer) -> None:
    llm = _chat(server, max_tokens=16, grammar=YES_NO)
    for question in ("Is the sky blue? Answer yes or no.", "Is fire cold? Answer yes or no."):
        reply = llm.invoke(question)
        assert reply.content in ("yes", "no")


def test_max_tokens_in_extra_body_limits_the_reply(server: LocalModelServer) -> None:
    reply = _chat(server, max_tokens=5).invoke("Write a long story about a dragon who learns to fly.")
    usage = reply.response_metadata["token_usage"]
    assert usage["completion_tokens"] <= 5
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.content


def test_stop_ends_the_process_group_and_frees_the_port() -> None:
    srv = LocalModelServer(n_ctx=512)
    srv.start()
    pid, port = srv.pid, srv.port
    assert not _gone(pid) and not _port_free(port)
    srv.stop()
    assert not srv.running
    assert _gone(pid)
    assert _port_free(port)
    srv.stop()  # idempotent
    assert srv.pid == pid


def test_exception_inside_the_context_stops_the_server() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with LocalModelServer(n_ctx=512) as srv:
            pid = srv.pid
            assert not _gone(pid)
            raise RuntimeError("boom")
    assert _gone(pid)
    assert not srv.running


def test_a_file_that_is_not_gguf_is_refused_before_a_server_starts(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a GGUF file\n" * 64)
    srv = LocalModelServer(log_path=tmp_path / "server.log", model_path=bogus)
    with pytest.raises(UserError, match="is not a GGUF model file") as caught:
        srv.start()
    assert "\n" not in str(caught.value) and not srv.running


def test_unloadable_model_gives_user_error_naming_the_log(tmp_path: Path) -> None:
    """A whole GGUF header but no weights behind it: the server itself fails, and the error names its log."""
    model = local_model_path()
    bogus = tmp_path / "truncated.gguf"
    with open(model, "rb") as whole:
        bogus.write_bytes(whole.read(8 * 1024 * 1024))
    log = tmp_path / "server.log"
    srv = LocalModelServer(log_path=log, startup_timeout=60, model_path=bogus)
    with pytest.raises(UserError) as caught:
        srv.start()
    message = str(caught.value)
    assert str(log) in message and "\n" not in message
    assert log.is_file() and log.stat().st_size > 0
    assert _gone(srv.pid)


def test_missing_model_file_gives_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        with LocalModelServer(model_path=tmp_path / "absent.gguf"):
            pass


def test_taken_port_is_retried_once_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        real_pick = local_model._pick_port
        monkeypatch.setattr(local_model, "_pick_port", lambda host: next(picks, None) or real_pick(host))
        with LocalModelServer(n_ctx=512) as srv:
            assert srv.port != taken
            assert _get_json(f"{srv.base_url}/models")["data"][0]["id"] == srv.model
            pid = srv.pid
    assert _gone(pid)


def test_explicit_taken_port_gives_user_error(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(UserError, match="already in use") as caught:
            with LocalModelServer(port=taken, n_ctx=512, log_path=log):
                pass
    assert str(taken) in str(caught.value) and str(log) in str(caught.value)


def test_prompt_cache_resumes_a_role_after_another_roles_request(tmp_path: Path) -> None:
    """Navigator and Generator alternate; the cache restores the Navigator's state for its next round."""
    log = tmp_path / "server.log"
    navigator = "You are the navigator of a search. " + "Study the measurements. " * 60
    generator = "You are the generator of a search. " + "Write the codes. " * 60
    with LocalModelServer(n_ctx=2048, log_path=log) as srv:
        chat = _chat(srv, max_tokens=4)
        for system, user in ((navigator, "Round 1."), (generator, "Round 1."), (navigator, "Round 2.")):
            chat.invoke([("system", system), ("user", user)])
    text = log.read_text(errors="replace")
    assert "cache miss" in text  # the first two requests had nothing to resume from
    assert "cache hit" in text, text[-2000:]


def test_prompt_cache_can_be_switched_off(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with LocalModelServer(n_ctx=1024, log_path=log, prompt_cache_mb=0) as srv:
        _chat(srv, max_tokens=2).invoke("Say yes.")
    text = log.read_text(errors="replace")
    assert "cache miss" not in text and "cache hit" not in text
