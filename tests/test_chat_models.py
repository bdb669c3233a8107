"""Chat endpoints: settings, retries, errors and decoding modes, over real HTTP.

Every network test goes through ChatOpenAI to the threaded fake server in
``fake_openai.py``; waits are kept tiny so the file runs in seconds.
"""

from __future__ import annotations

import json
import time

import pytest
from fake_openai import FakeOpenAIServer, Reply, closed_port
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from collm_nas.llm.chat_models import (
    LLMUnavailable,
    RetryPolicy,
    RoleModelConfig,
    call_with_retry,
    endpoint_configured,
    make_chat_model,
    retry_after_s,
    role_config,
)
from collm_nas.llm.structured import StructuredChat, extract_json_object, mode_for_models_listing
from collm_nas.core.errors import UserError

FAST = RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=2.0, max_total_s=10.0, jitter_s=0.0)
SECRET = "sk-test-DO-NOT-LEAK-1234"


class Pick(BaseModel):
    code: str
    score: float


MESSAGES = [SystemMessage("You pick architectures."), HumanMessage("Pick one cell code and score it.")]


def cfg_for(server_or_url, **kw) -> RoleModelConfig:
    base = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    values = {"role": "generator", "base_url": base, "model": "fake-model", "timeout_s": 5, "retry": FAST}
    values.update(kw)
    return RoleModelConfig(**values)


# --------------------------------------------------------------------------- settings


def test_settings_precedence():
    env = {
        "COLLM_NAS_GENERATOR_MODEL": "role-model",
        "COLLM_NAS_LLM_MODEL": "shared-model",
        "COLLM_NAS_LLM_TEMPERATURE": "0.2",
        "COLLM_NAS_NAVIGATOR_TEMPERATURE": "0.9",
        "COLLM_NAS_LLM_BASE_URL": "http://shared:8000/v1/",
        "OPENAI_BASE_URL": "http://openai-var/v1",
        "OPENAI_API_KEY": SECRET,
        "COLLM_NAS_LLM_RETRY_MAX_ATTEMPTS": "7",
        "COLLM_NAS_RANKER_DECODING": "json_schema",
    }
    gen = role_config("generator", overrides={"model": "cli-model", "max_tokens": None}, environ=env, env_file=None)
    assert gen.model == "cli-model"  # override beats the role variable
    assert gen.temperature == 0.2  # shared variable (the navigator's does not apply)
    assert gen.base_url == "http://shared:8000/v1"  # shared beats OPENAI_BASE_URL; slash dropped
    assert gen.api_key is not None and gen.api_key.get_secret_value() == SECRET  # OPENAI_API_KEY last resort
    assert gen.retry.max_attempts == 7 and gen.retry.initial_wait_s == 1.0
    assert gen.max_tokens == 512 and gen.decoding == "auto"  # defaults (None override ignored)

    nav = role_config("navigator", environ=env, env_file=None)
    assert nav.model == "shared-model" and nav.temperature == 0.9
    assert role_config("ranker", environ=env, env_file=None).decoding == "json_schema"

    bare = role_config("ranker", environ={"OPENAI_BASE_URL": "http://o/v1"}, env_file=None)
    assert bare.base_url == "http://o/v1" and bare.api_key is None and bare.model == "gpt-4o-mini"
    nested = role_config("ranker", overrides={"retry": {"max_attempts": 2}}, environ={}, env_file=None)
    assert nested.retry.max_attempts == 2


def test_dotenv_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("COLLM_NAS_LLM_MODEL=from-dotenv\nCOLLM_NAS_LLM_MAX_TOKENS=64\n")
    cfg = role_config("generator", environ={"COLLM_NAS_LLM_MODEL": "from-env"}, env_file=env_file)
    assert cfg.model == "from-env" and cfg.max_tokens == 64
    assert not endpoint_configured(environ={}, env_file=env_file)
    env_file.write_text("COLLM_NAS_RANKER_BASE_URL=http://127.0.0.1:9/v1\n")
    assert endpoint_configured(environ={}, env_file=env_file)
    assert endpoint_configured(environ={"OPENAI_API_KEY": "k"}, env_file=None)
    assert not endpoint_configured(environ={"COLLM_NAS_LLM_MODEL": "m", "COLLM_NAS_LLM_BASE_URL": ""}, env_file=None)


@pytest.mark.parametrize(
    ("env", "overrides", "named"),
    [
        ({"COLLM_NAS_GENERATOR_TEMPERATURE": "hot"}, None, "COLLM_NAS_GENERATOR_TEMPERATURE"),
        ({"COLLM_NAS_LLM_MAX_TOKENS": "-3"}, None, "COLLM_NAS_LLM_MAX_TOKENS"),
        ({"COLLM_NAS_LLM_DECODING": "regex"}, None, "COLLM_NAS_LLM_DECODING"),
        ({"COLLM_NAS_LLM_RETRY_MAX_ATTEMPTS": "0"}, None, "COLLM_NAS_LLM_RETRY_MAX_ATTEMPTS"),
        ({"OPENAI_BASE_URL": "localhost:8080"}, None, "OPENAI_BASE_URL"),
        ({}, {"timeout_s": 0}, "'timeout_s' (generator override)"),
    ],
)
def test_invalid_setting_is_a_one_line_user_error(env, overrides, named):
    with pytest.raises(UserError) as info:
        role_config("generator", overrides=overrides, environ=env, env_file=None)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_unknown_role_or_override():
    with pytest.raises(UserError, match="unknown LLM role"):
        role_config("critic", environ={}, env_file=None)
    with pytest.raises(UserError, match="top_k"):
        role_config("ranker", overrides={"top_k": 3}, environ={}, env_file=None)


def test_api_key_never_shown():
    cfg = role_config("generator", environ={"COLLM_NAS_LLM_API_KEY": SECRET}, env_file=None)
    public = cfg.public_dict()
    assert public["api_key_set"] is True and "api_key" not in public
    dumps = (json.dumps(public), cfg.model_dump_json(), json.dumps(cfg.model_dump(mode="json")))
    for shown in (repr(cfg), str(cfg), *dumps):
        assert SECRET not in shown
    assert public["role"] == "generator" and public["retry"]["max_attempts"] == 5
    with pytest.raises(UserError) as info:  # not even in an error message
        env = {"COLLM_NAS_LLM_API_KEY": SECRET, "COLLM_NAS_LLM_TIMEOUT_S": "x"}
        role_config("generator", environ=env, env_file=None)
    assert SECRET not in str(info.value)


def test_make_chat_model_fields():
    local = make_chat_model(cfg_for("http://127.0.0.1:8080/v1", max_tokens=77))
    assert local.max_retries == 0 and local.extra_body == {"max_tokens": 77} and local.max_tokens is None
    assert local.openai_api_key.get_secret_value() == "not-needed"
    remote = make_chat_model(RoleModelConfig(role="ranker", api_key=SECRET, max_tokens=99))
    assert remote.openai_api_base == "https://api.openai.com/v1"
    assert remote.max_tokens == 99 and not remote.extra_body  # sent as max_completion_tokens


def test_retry_after_header_forms():
    class R:
        def __init__(self, headers):
            self.headers = headers

    class E(Exception):
        def __init__(self, headers):
            self.response = R(headers)

    assert retry_after_s(E({"retry-after": "2"})) == 2.0
    assert retry_after_s(E({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_s(E({"retry-after": when})) <= 31
    assert retry_after_s(E({})) is None and retry_after_s(ValueError()) is None


# --------------------------------------------------------------------------- retries and errors


def test_429_retry_after_is_honoured():
    with FakeOpenAIServer() as server:
        server.push(Reply.error(429, headers={"Retry-After": "1"}), Reply.text('{"code": "a", "score": 1.5}'))
        waits = []
        chat = StructuredChat(cfg_for(server, decoding="text"))
        started = time.monotonic()
        result = chat.invoke(MESSAGES, output_model=Pick)
        elapsed = time.monotonic() - started
        assert result.value == Pick(code="a", score=1.5) and result.attempts == 2
        assert elapsed >= 1.0
        gap = server.chat_requests[1].at - server.chat_requests[0].at
        assert gap >= 1.0

        # call_with_retry directly: reports the attempts and the waits
        server.push(Reply.error(429, headers={"Retry-After": "1"}), Reply.text("fine"))
        model = make_chat_model(cfg_for(server))
        msg, attempts = call_with_retry(
            lambda: model.invoke(MESSAGES), FAST, describe="generator endpoint",
            on_retry=lambda n, exc, wait: waits.append((n, type(exc).__name__, wait)),
        )
        assert msg.content == "fine" and attempts == 2
        assert waits[0][0] == 1 and waits[0][1].endswith("RateLimitError") and waits[0][2] >= 1.0


def test_500_exhausts_the_policy():
    with FakeOpenAIServer(default=Reply.error(500)) as server:
        chat = StructuredChat(cfg_for(server, decoding="text"))
        with pytest.raises(LLMUnavailable) as info:
            chat.invoke(MESSAGES, output_model=Pick)
        message = str(info.value)
        assert len(server.chat_requests) == 3 and info.value.attempts == 3
        assert "\n" not in message
        assert message.startswith(f"generator endpoint {server.base_url} failed 3 times")
        assert "HTTP 500 Internal Server Error" in message


def test_total_time_bounds_the_retries():
    policy = RetryPolicy(max_attempts=50, initial_wait_s=0.2, max_wait_s=0.2, max_total_s=0.5, jitter_s=0)
    with FakeOpenAIServer(default=Reply.error(503)) as server:
        with pytest.raises(LLMUnavailable):
            StructuredChat(cfg_for(server, decoding="text", retry=policy)).invoke(MESSAGES, output_model=Pick)
        assert 2 <= len(server.chat_requests) <= 4


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_a_user_error_without_retry(status):
    with FakeOpenAIServer(default=Reply.error(status)) as server:
        chat = StructuredChat(cfg_for(server, decoding="text"))
        with pytest.raises(UserError) as info:
            chat.invoke(MESSAGES, output_model=Pick)
        message = str(info.value)
        assert len(server.chat_requests) == 1
        assert "COLLM_NAS_GENERATOR_API_KEY" in message and "COLLM_NAS_LLM_API_KEY" in message
        assert f"HTTP {status}" in message


def test_unknown_model_and_bad_request():
    body = {"error": {"message": "The model `nope` does not exist", "type": "invalid_request_error"}}
    with FakeOpenAIServer(default=Reply.error(404, body=body)) as server:
        with pytest.raises(UserError) as info:
            StructuredChat(cfg_for(server, decoding="text", model="nope")).invoke(MESSAGES, output_model=Pick)
        assert "COLLM_NAS_GENERATOR_MODEL" in str(info.value) and "`nope` does not exist" in str(info.value)
        assert len(server.chat_requests) == 1

    body = {"error": {"message": "messages: too long for this model", "type": "invalid_request_error"}}
    with FakeOpenAIServer(default=Reply.error(400, body=body)) as server:
        with pytest.raises(UserError, match="HTTP 400: messages: too long"):
            StructuredChat(cfg_for(server, decoding="text")).invoke(MESSAGES, output_model=Pick)
        assert len(server.chat_requests) == 1


def test_timeout_is_retried():
    with FakeOpenAIServer() as server:
        server.push(Reply.text("late", delay=3.0), Reply.text('{"code": "t", "score": 0}'))
        chat = StructuredChat(cfg_for(server, decoding="text", timeout_s=0.5))
        result = chat.invoke(MESSAGES, output_model=Pick)
        assert result.value == Pick(code="t", score=0) and result.attempts == 2
        # The first request was given up after its timeout (the server's answer would have come after 3 s):
        first, second = server.chat_requests
        assert second.at - first.at >= 0.5


def test_connection_refused_is_unavailable():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    chat = StructuredChat(cfg_for(url, decoding="text"))
    with pytest.raises(LLMUnavailable) as info:
        chat.invoke(MESSAGES, output_model=Pick)
    assert info.value.attempts == 3 and "connection" in str(info.value).lower()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- decoding modes


def test_grammar_mode_sends_grammar_and_max_tokens():
    grammar = 'root ::= "{" ws "}"\nws ::= " "?'
    with FakeOpenAIServer(default=Reply.text('{"code": "g", "score": 2}')) as server:
        chat = StructuredChat(cfg_for(server, decoding="grammar", max_tokens=40))
        result = chat.invoke(MESSAGES, output_model=Pick, grammar=grammar)
        body = server.chat_bodies[0]
        assert result.mode == "grammar" and result.value == Pick(code="g", score=2)
        assert body["grammar"] == grammar and body["max_tokens"] == 40
        assert "max_completion_tokens" not in body and "tools" not in body
        assert body["model"] == "fake-model" and body["temperature"] == 0.7
        # Without a grammar, llama.cpp's json_schema field carries the model's schema.
        chat.invoke(MESSAGES, output_model=Pick)
        assert server.chat_bodies[1]["json_schema"]["properties"].keys() == {"code", "score"}


def test_fallback_grammar_then_json_schema_then_tools():
    rejecting = {"grammar", "guided_json", "structured_outputs"}
    with FakeOpenAIServer(reject_fields=rejecting, default=Reply.tool_call("Pick", {"code": "x", "score": 3})) as server:
        chat = StructuredChat(cfg_for(server, decoding="grammar"))
        result = chat.invoke(MESSAGES, output_model=Pick, grammar='root ::= "x"')
        assert result.value == Pick(code="x", score=3) and result.mode == "tools" and chat.mode == "tools"
        bodies = server.chat_bodies
        assert "grammar" in bodies[0]
        assert bodies[1]["guided_json"] == bodies[1]["structured_outputs"]["json"] == Pick.model_json_schema()
        assert bodies[2]["tool_choice"] == {"type": "function", "function": {"name": "Pick"}}
        assert bodies[2]["tools"][0]["function"]["name"] == "Pick" and bodies[2]["max_tokens"] == 512
        assert result.attempts == 3
        # The downgrade sticks: the next call goes straight to tools.
        chat.invoke(MESSAGES, output_model=Pick, grammar='root ::= "x"')
        assert len(server.chat_bodies) == 4 and "tools" in server.chat_bodies[3]


def test_tools_refused_with_500_falls_back_to_text():
    body = {"error": {"code": 500, "message": "tools param requires --jinja flag", "type": "server_error"}}

    def answer(request):
        if "tools" in request:
            return Reply.error(500, body=body)
        return Reply.text('Sure! {"code": "plain", "score": 1}')

    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        chat = StructuredChat(cfg_for(server, decoding="tools"))
        result = chat.invoke(MESSAGES, output_model=Pick)
        assert result.mode == "text" and result.value == Pick(code="plain", score=1)
        assert len(server.chat_requests) == 2  # the refusal was not retried as a 5xx


def test_tools_mode_parses_arguments():
    with FakeOpenAIServer(default=Reply.tool_call("Pick", {"code": "|nor_conv_3x3~0|", "score": 0.5})) as server:
        result = StructuredChat(cfg_for(server, decoding="tools")).invoke(MESSAGES, output_model=Pick)
        assert result.value == Pick(code="|nor_conv_3x3~0|", score=0.5)
        assert json.loads(result.text) == {"code": "|nor_conv_3x3~0|", "score": 0.5}
        assert result.prompt_tokens == 10 and result.completion_tokens > 0
        assert result.latency_s > 0 and result.attempts == 1 and result.error is None


def test_text_mode_prose_fences_and_parse_text():
    prose = 'Here you go:\n```json\n{"code": "c1", "score": 0.25}\n```\nGood luck {not json}.'
    with FakeOpenAIServer() as server:
        server.push(Reply.text(prose), Reply.text("code=c2 score=4"), Reply.text("no idea"))
        chat = StructuredChat(cfg_for(server, decoding="text"))
        first = chat.invoke(MESSAGES, output_model=Pick)
        assert first.value == Pick(code="c1", score=0.25) and first.text == prose and first.mode == "text"
        assert "tools" not in server.chat_bodies[0] and "grammar" not in server.chat_bodies[0]

        def parse(text):
            parts = dict(p.split("=") for p in text.split() if "=" in p)
            return Pick(code=parts["code"], score=float(parts["score"])) if "code" in parts else None

        assert chat.invoke(MESSAGES, output_model=Pick, parse_text=parse).value == Pick(code="c2", score=4)
        failed = chat.invoke(MESSAGES, output_model=Pick, parse_text=parse)
        assert failed.value is None and failed.text == "no idea" and failed.error and "\n" not in failed.error


def test_structured_parse_failure_falls_back_to_parse_text():
    with FakeOpenAIServer(default=Reply.text("code=zz score=9")) as server:
        chat = StructuredChat(cfg_for(server, decoding="json_schema"))
        result = chat.invoke(MESSAGES, output_model=Pick, parse_text=lambda t: Pick(code="zz", score=9))
        assert result.value == Pick(code="zz", score=9) and result.mode == "json_schema"
        bad = chat.invoke(MESSAGES, output_model=Pick)
        assert bad.value is None and "no JSON object" in bad.error


@pytest.mark.parametrize(
    ("owned_by", "ids", "mode"),
    [("llamacpp", ["qwen"], "grammar"), ("me", ["model.gguf"], "grammar"), ("vllm", ["Qwen/Qwen3-8B"], "json_schema"),
     ("openai", ["gpt-4o-mini"], "tools"), ("system", ["local.gguf"], "grammar")],
)
def test_auto_detection(owned_by, ids, mode):
    answer = Reply.text('{"code": "a", "score": 1}')
    with FakeOpenAIServer(owned_by=owned_by, model_ids=ids, default=answer) as server:
        chat = StructuredChat(cfg_for(server, decoding="auto"))
        assert chat.mode == mode
        chat.invoke(MESSAGES, output_model=Pick)
        chat.invoke(MESSAGES, output_model=Pick)
        assert len(server.model_requests) == 1  # probed once


def test_auto_detection_without_models_route_or_with_explicit_mode():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    assert StructuredChat(cfg_for(url, decoding="auto")).mode == "tools"
    with FakeOpenAIServer(owned_by="llamacpp") as server:
        assert StructuredChat(cfg_for(server, decoding="text")).mode == "text"
        assert server.model_requests == []
    assert mode_for_models_listing({"data": [{"id": "x", "owned_by": "acme"}]}, "https://acme.example/v1") == "tools"


def test_injected_model_uses_text_mode():
    fake = GenericFakeChatModel(messages=iter([AIMessage('prefix {"code": "f", "score": 7} suffix')]))
    chat = StructuredChat(RoleModelConfig(role="navigator", decoding="grammar"), chat_model=fake)
    assert chat.mode == "text"
    result = chat.invoke(MESSAGES, output_model=Pick)
    assert result.value == Pick(code="f", score=7) and result.attempts == 1


def test_extract_json_object():
    assert extract_json_object('x {"a": {"b": "}"}} y {"c": 1}') == {"a": {"b": "}"}}
    assert extract_json_object("{broken {\"ok\": 1}") == {"ok": 1}
    assert extract_json_object("nothing here") is None
