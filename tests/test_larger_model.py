"""Any local GGUF chat model, with Qwen2.5-Coder-1.5B-Instruct (the benchmarks' larger model): its settings come
from the file, it loads without llama.cpp's extra buffer types (which kill the server on CPUs with AMX), and
the LLM strategies talk to it, one model per role if asked."""

from __future__ import annotations

import os

import pytest

from collm_nas import Workspace
from collm_nas.llm.gguf_info import read_gguf_info
from collm_nas.llm.local_server import INSTALL_HINT, LocalModelServer, local_model_available

pytestmark = pytest.mark.local_llm

if not local_model_available():
    if os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1":
        pytest.fail(f"COLLM_NAS_REQUIRE_LOCAL_LLM=1 but {INSTALL_HINT}", pytrace=False)
    pytest.skip("the local model is not installed", allow_module_level=True)

YES_NO = 'root ::= "yes" | "no"'


def _weights_buffers(log: str) -> set[str]:
    """The buffer types llama.cpp put the model's weights in, as its load log names them."""
    return {line.split("load_tensors:")[1].split("model buffer")[0].strip()
            for line in log.splitlines() if "load_tensors:" in line and "model buffer size" in line}


def test_the_file_says_what_the_server_needs(qwen_gguf):
    info = read_gguf_info(qwen_gguf)
    assert info.architecture == "qwen2" and info.context_length == 32768 and info.has_chat_template


def test_qwen_loads_without_extra_buffers_and_answers(tmp_path, qwen_gguf):
    from langchain_openai import ChatOpenAI

    log = tmp_path / "qwen.log"
    with LocalModelServer(model_path=qwen_gguf, log_path=log) as server:
        assert server.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
        assert server.n_ctx == 8192  # the model's 32k, capped: prompts here stay far below it
        chat = ChatOpenAI(base_url=server.base_url, api_key="none", model=server.model, temperature=0, timeout=300,
                          max_retries=0, extra_body={"max_tokens": 4, "grammar": YES_NO})
        reply = chat.invoke("Is 7 a prime number? Answer yes or no.")
        assert reply.content == "yes"
        assert reply.response_metadata["token_usage"]["completion_tokens"] >= 1
    # Weights stay in plain CPU buffers: no repacking, no AMX tiles.
    assert _weights_buffers(log.read_text()) <= {"CPU", "CPU_Mapped"}


def test_extra_buffers_can_be_switched_on(tmp_path, qwen_gguf):
    """The switch is real: with extra buffers on, llama.cpp repacks Q4_K weights (or puts them in AMX tiles).
    Only the load is tried: on a CPU with AMX a completion would kill the server."""
    log = tmp_path / "qwen-extra.log"
    with LocalModelServer(model_path=qwen_gguf, log_path=log, extra_buffers=True, n_ctx=512):
        pass
    assert _weights_buffers(log.read_text()) & {"CPU_REPACK", "AMX"}


def test_collm_on_qwen_answers_every_round(tmp_path, table_path, qwen_gguf):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    servers: list[dict] = []
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", llm="local", llm_model=qwen_gguf,
                       budget=6, batch_size=3, seed=0, run_id="qwen",
                       on_progress=lambda e: servers.extend(e["servers"]) if e.get("event") == "llm" else None)
    assert result.status == "finished" and result.evaluations == 6
    assert [s["model"] for s in servers] == ["qwen2.5-coder-1.5b-instruct-q4_k_m"]
    summary = ws.run("qwen").llm_summary()
    assert summary["llm_rounds"] == summary["rounds"] == 2 and summary["failed_calls"] == 0
    assert summary["completion_tokens"] > 0 and summary["illegal"] == 0
    assert result.degraded is None


def test_one_model_per_role(tmp_path, table_path, qwen_gguf):
    """The Navigator on Qwen, the Generator on the embedded SmolLM2: two servers, each role at its own."""
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    seen: list[dict] = []
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", llm="local", navigator_model=qwen_gguf,
                       budget=3, batch_size=3, seed=0, run_id="roles", on_progress=seen.append)
    assert result.status == "finished"
    (event,) = [e for e in seen if e.get("event") == "llm"]
    assert sorted(s["model"] for s in event["servers"]) == ["SmolLM2-135M-Instruct-Q4_1",
                                                            "qwen2.5-coder-1.5b-instruct-q4_k_m"]
    assert event["roles"]["navigator"]["model"] == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert event["roles"]["generator"]["model"] == "SmolLM2-135M-Instruct-Q4_1"
    summary = ws.run("roles").llm_summary()
    assert summary["failed_calls"] == 0 and summary["llm_rounds"] == 1
