"""Structured answers from chat endpoints, whatever decoding the server offers.

Four ways to get an object that fits a pydantic model, strongest first:

* ``grammar``: llama.cpp / llama-cpp-python constrain sampling to a GBNF
  grammar sent as the ``grammar`` request field;
* ``json_schema``: vLLM constrains sampling to a JSON schema
  (``guided_json`` in older releases, ``structured_outputs.json`` in newer);
* ``tools``: a forced call of one function whose parameters are the model;
* ``text``: a plain completion; JSON is dug out of the prose.

``decoding="auto"`` asks the server's ``/models`` once and picks by server
kind. When a server refuses the chosen mode's field, the next mode in that
order is tried and kept for the rest of this object's life.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel, ValidationError

from collm_nas.llm.chat_models import (
    DecodingUnsupported,
    RoleModelConfig,
    call_with_retry,
    make_chat_model,
)
from collm_nas.core.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

MODES = ("grammar", "json_schema", "tools", "text")
# Words by which a refusal of each mode's request fields is recognised.
MODE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "grammar": ("grammar", "json_schema"),
    "json_schema": ("guided", "structured_output", "json_schema"),
    "tools": ("tool", "function"),
    "text": (),
}
# ``owned_by`` values of llama.cpp's server ("llamacpp") and llama-cpp-python's ("me").
LLAMA_CPP_OWNERS = {"llamacpp", "llama.cpp", "llama-cpp", "me"}
PROBE_TIMEOUT_S = 5.0


@dataclass
class CallResult(Generic[T]):
    """One structured call: the parsed object (or None) and how it went."""

    value: T | None
    text: str  # raw completion text, or the tool-call arguments as JSON
    mode: str  # the mode actually used: grammar | json_schema | tools | text
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # the whole call: retries and mode fallbacks included
    attempts: int  # HTTP attempts, over all modes tried
    error: str | None = None  # why value is None

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class ChoiceResult:
    """One call that reads the model's probability of each label as its next token (see
    :meth:`StructuredChat.choice_logprobs`)."""

    logprobs: dict[str, float] | None  # label -> log-probability, renormalised over the labels; None: unread
    text: str  # the token the model wrote
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int
    error: str | None = None  # why logprobs is None

    @property
    def ok(self) -> bool:
        return self.logprobs is not None


# Top alternatives asked for with a choice: OpenAI's ceiling, and plenty for up to 10 one-token labels.
CHOICE_TOP_LOGPROBS = 20


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def label_logprobs(top: list[dict[str, Any]], labels: list[str]) -> dict[str, float] | None:
    """The labels' log-probabilities among a token's top alternatives (``[{"token", "logprob"}, ...]``),
    renormalised over the labels. A label's spellings (``"A"``, ``" A"``) add up; a label absent from the
    alternatives gets half the smallest probability listed (it was less likely than all of them). None when
    no label is listed at all."""
    found: dict[str, list[float]] = {}
    listed: list[float] = []
    for alt in top:
        token, logprob = str(alt.get("token", "")), alt.get("logprob")
        if logprob is None or not math.isfinite(float(logprob)):
            continue
        listed.append(float(logprob))
        if token.strip() in labels:
            found.setdefault(token.strip(), []).append(float(logprob))
    if not found:
        return None
    floor = min(listed) - math.log(2)
    scores = {label: _logsumexp(found[label]) if label in found else floor for label in labels}
    total = _logsumexp(list(scores.values()))
    return {label: value - total for label, value in scores.items()}


def _first_token_alternatives(message: BaseMessage) -> tuple[list[dict[str, Any]], str]:
    """The first generated token's top alternatives and text, from an OpenAI-style ``logprobs`` block."""
    block = (getattr(message, "response_metadata", None) or {}).get("logprobs") or {}
    content = block.get("content") if isinstance(block, dict) else None
    if not content:
        return [], ""
    first = content[0] or {}
    return list(first.get("top_logprobs") or []), str(first.get("token", ""))


# --------------------------------------------------------------------------- server kind


def _is_loopback(url: str | None) -> bool:
    host = (urlparse(url or "").hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def mode_for_models_listing(listing: Any, base_url: str | None) -> str:
    """The decoding mode suited to a server, judged from its ``GET /models`` answer."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    entries = [e for e in entries or [] if isinstance(e, dict)]
    owners = {str(e.get("owned_by", "")).strip().lower() for e in entries}
    if "vllm" in owners:
        return "json_schema"
    if owners & LLAMA_CPP_OWNERS or any("llama" in o for o in owners):
        return "grammar"
    if _is_loopback(base_url):
        # A local server with a gguf file (or llama.cpp's "meta" block) is llama.cpp-like.
        for entry in entries:
            ident = str(entry.get("id", "")).lower()
            if ident.endswith(".gguf") or "gguf" in ident or "n_ctx_train" in (entry.get("meta") or {}):
                return "grammar"
        if isinstance(listing, dict) and isinstance(listing.get("models"), list):
            return "grammar"  # llama.cpp's server adds an Ollama-style "models" list
    return "tools"


def probe_server_mode(cfg: RoleModelConfig) -> str:
    """Ask ``{base_url}/models`` once which kind of server this is; "tools" if unsure."""
    if cfg.base_url is None or cfg.is_openai:
        return "tools"
    import httpx

    headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else {}
    try:
        response = httpx.get(
            f"{cfg.base_url}/models", headers=headers, timeout=min(PROBE_TIMEOUT_S, cfg.timeout_s)
        )
        response.raise_for_status()
        listing = response.json()
    except Exception as exc:  # the probe is advisory; the fallback chain does the rest
        log.info("%s endpoint %s: /models probe failed (%s); assuming tool calling",
                 cfg.role, cfg.base_url, type(exc).__name__)
        return "tools"
    return mode_for_models_listing(listing, cfg.base_url)


def serves_choice_route(cfg: RoleModelConfig) -> bool:
    """Whether ``cfg``'s server is collm-nas's llama.cpp entry point (:mod:`collm_nas.llm.llama_server`), whose
    ``/v1/collm-nas/choice`` reads options' log-probabilities without ``--logits_all``: its health route answers."""
    if cfg.base_url is None or cfg.is_openai:
        return False
    import httpx

    root = cfg.base_url.rstrip("/").removesuffix("/v1")
    try:
        response = httpx.get(f"{root}/collm-nas/health", timeout=min(PROBE_TIMEOUT_S, cfg.timeout_s))
        return response.status_code == 200 and "busy" in response.json()
    except Exception:  # advisory: the OpenAI way is tried instead
        return False


# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in ``text`` (code fences and prose around it ignored)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                return obj
            start = chunk.find("{", start + 1)
    return None


def _validation_summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "value"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_output(
    text: str,
    output_model: type[T],
    *,
    args: dict | None = None,
    parse_text: Callable[[str], BaseModel | None] | None = None,
    prefer_parse_text: bool = False,
) -> tuple[BaseModel | None, str | None]:
    """Turn a completion into ``output_model``: (value, None) or (None, why not).

    Tries, in order: the tool-call ``args``; the whole text as JSON; ``parse_text``;
    the first JSON object found in the text. With ``prefer_parse_text``
    (plain-text mode) ``parse_text`` goes first.
    """
    problems: list[str] = []

    def validate(data: Any, what: str) -> BaseModel | None:
        try:
            return output_model.model_validate(data)
        except ValidationError as exc:
            problems.append(f"{what} does not fit {output_model.__name__}: {_validation_summary(exc)}")
            return None

    def via_parse_text() -> BaseModel | None:
        if parse_text is None:
            return None
        try:
            value = parse_text(text)
        except Exception as exc:  # a caller's parser must not break the call
            problems.append(f"parse_text raised {type(exc).__name__}: {exc}")
            return None
        if value is None:
            problems.append("parse_text found nothing")
        return value

    if args is not None:
        value = validate(args, "tool-call arguments")
        if value is not None:
            return value, None
    if prefer_parse_text and (value := via_parse_text()) is not None:
        return value, None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            problems.append(f"not valid JSON ({exc.msg} at char {exc.pos})")
        else:
            value = validate(data, "JSON answer")
            if value is not None:
                return value, None
    if not prefer_parse_text and (value := via_parse_text()) is not None:
        return value, None
    found = extract_json_object(text)
    if found is not None:
        value = validate(found, "JSON object in the answer")
        if value is not None:
            return value, None
    elif not stripped:
        problems.append("empty answer")
    else:
        problems.append("no JSON object in the answer")
    # One line, the first two reasons are enough.
    return None, " ".join("; ".join(dict.fromkeys(problems[:2])).split())[:300]


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _token_counts(message: BaseMessage) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None)
    if usage:
        return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    meta = getattr(message, "response_metadata", None) or {}
    token_usage = meta.get("token_usage") or meta.get("usage") or {}
    if isinstance(token_usage, dict):
        return int(token_usage.get("prompt_tokens") or 0), int(token_usage.get("completion_tokens") or 0)
    return 0, 0


def _supports_tools(model: BaseChatModel) -> bool:
    return type(model).bind_tools is not BaseChatModel.bind_tools


# --------------------------------------------------------------------------- the client


class StructuredChat:
    """Structured calls to one role's chat endpoint, with retries and mode fallback.

    ``guard`` (a :class:`~collm_nas.llm.server_watch.ServerWatch`, for a server this run owns) is asked
    before every request (``before_call``) and told of every failed attempt (``after_failure``), so a server
    that died or hung is started again before the retry; when it moves to another port the client follows.
    """

    def __init__(self, cfg: RoleModelConfig, chat_model: BaseChatModel | None = None, *, guard: Any = None
                 ) -> None:
        self.cfg = cfg
        self.guard = guard
        if guard is not None:
            guard.on_moved(self._moved)
        self._injected = chat_model is not None
        self.chat_model: BaseChatModel = chat_model if chat_model is not None else make_chat_model(cfg)
        self._mode: str | None = None
        self._choice_route: str | None = None  # how choice_logprobs asks: "collm" (our server's route) or "openai"
        if self._injected:
            self.describe = f"{cfg.role} model {type(chat_model).__name__}"
        else:
            self.describe = f"{cfg.role} endpoint {cfg.endpoint}"

    def _moved(self, base_url: str) -> None:
        """The server now listens at ``base_url`` (a restart found its port taken)."""
        self.cfg = self.cfg.model_copy(update={"base_url": base_url})
        self._choice_route = None
        if not self._injected:
            self.chat_model = make_chat_model(self.cfg)
            self.describe = f"{self.cfg.role} endpoint {self.cfg.endpoint}"

    def _send(self, fn: Callable[[], Any], keywords: tuple[str, ...]) -> tuple[Any, int]:
        """``fn`` (one HTTP request) under the retry policy, with the guard asked before each attempt."""
        guard = self.guard

        def attempt() -> Any:
            if guard is not None:
                guard.before_call(self.describe)
            return fn()

        return call_with_retry(
            attempt,
            self.cfg.retry,
            describe=self.describe,
            role=self.cfg.role,
            decoding_keywords=keywords,
            on_retry=(lambda _n, error, _wait: guard.after_failure(error)) if guard is not None else None,
        )

    # -- mode resolution

    @property
    def mode(self) -> str:
        """The decoding mode in use (after auto-detection and any fallback)."""
        if self._mode is None:
            self._mode = self._initial_mode()
        return self._mode

    def _initial_mode(self) -> str:
        if self._injected:
            if self.cfg.decoding == "text" or not _supports_tools(self.chat_model):
                return "text"
            return "tools"
        if self.cfg.decoding != "auto":
            return self.cfg.decoding
        return probe_server_mode(self.cfg)

    def _next_mode(self, mode: str) -> str | None:
        later = MODES[MODES.index(mode) + 1 :]
        for candidate in later:
            if candidate == "tools" and not _supports_tools(self.chat_model):
                continue
            if self._injected and candidate in ("grammar", "json_schema"):
                continue
            return candidate
        return None

    # -- one request in one mode

    def _base_extra_body(self) -> dict[str, Any]:
        return dict(getattr(self.chat_model, "extra_body", None) or {})

    def _request(
        self,
        mode: str,
        messages: list[BaseMessage],
        output_model: type[BaseModel],
        grammar: str | None,
        json_schema: dict | None,
    ) -> tuple[AIMessage, int]:
        runnable: Any = self.chat_model
        kwargs: dict[str, Any] = {}
        schema = json_schema if json_schema is not None else output_model.model_json_schema()
        if mode == "grammar":
            # Without a grammar, llama.cpp's own "json_schema" field constrains the output.
            field = {"grammar": grammar} if grammar else {"json_schema": schema}
            kwargs["extra_body"] = {**self._base_extra_body(), **field}
        elif mode == "json_schema":
            kwargs["extra_body"] = {
                **self._base_extra_body(),
                "guided_json": schema,  # vLLM before structured_outputs
                "structured_outputs": {"json": schema},  # current vLLM
            }
        elif mode == "tools":
            runnable = self.chat_model.bind_tools([output_model], tool_choice=output_model.__name__)

        return self._send(lambda: runnable.invoke(messages, **kwargs), MODE_KEYWORDS[mode])

    # -- the public call

    def invoke(
        self,
        messages: list[BaseMessage],
        *,
        output_model: type[T],
        grammar: str | None = None,
        json_schema: dict | None = None,
        parse_text: Callable[[str], BaseModel | None] | None = None,
    ) -> CallResult[T]:
        """Ask for an ``output_model``; see :class:`CallResult`.

        Raises :class:`~collm_nas.llm.chat_models.LLMUnavailable` when
        transient failures use up the retry policy and
        :class:`~collm_nas.core.errors.UserError` for a fatal refusal.
        """
        started = time.monotonic()
        attempts = 0
        while True:
            mode = self.mode
            try:
                response, used = self._request(mode, messages, output_model, grammar, json_schema)
            except DecodingUnsupported as exc:
                attempts += exc.attempts
                fallback = self._next_mode(mode)
                if fallback is None:
                    raise UserError(
                        f"the {self.describe} refused every decoding mode (last: {mode}: {exc})"
                    ) from exc
                log.warning("%s does not take %s decoding (%s); using %s from now on",
                            self.describe, mode, exc, fallback)
                self._mode = fallback
                continue
            attempts += used
            break

        text = _message_text(response)
        args: dict | None = None
        if mode == "tools":
            calls = getattr(response, "tool_calls", None) or []
            bad_calls = getattr(response, "invalid_tool_calls", None) or []
            if calls:
                args = calls[0].get("args") or {}
                text = json.dumps(args)
            elif bad_calls:
                text = str(bad_calls[0].get("args") or "")
        value, error = parse_output(
            text, output_model, args=args, parse_text=parse_text, prefer_parse_text=mode == "text"
        )
        prompt_tokens, completion_tokens = _token_counts(response)
        return CallResult(
            value=value,
            text=text,
            mode=mode,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.monotonic() - started,
            attempts=attempts,
            error=None if value is not None else error,
        )


    # -- a choice read from log-probabilities

    def choice_logprobs(self, messages: list[BaseMessage], labels: list[str]) -> ChoiceResult:
        """One token of answer, and how likely the model finds each of ``labels`` (one-token option names such
        as ``A``..``E``) as that token: a distribution over the options, not one sampled pick.

        A server of our own (:mod:`collm_nas.llm.llama_server`, which every local model runs on) answers on its
        choice route, with every label's exact log-probability; any other endpoint is asked the OpenAI way
        (``logprobs`` with ``top_logprobs``). Where the server takes a grammar the token is held to the labels.
        An endpoint that returns no log-probabilities (or none of the labels among them) gives
        ``logprobs=None`` with the reason; :class:`~collm_nas.llm.chat_models.LLMUnavailable` propagates as
        with :meth:`invoke`.
        """
        started = time.monotonic()
        if self._choice_route is None:
            ours = not self._injected and (self.guard is not None or serves_choice_route(self.cfg))
            self._choice_route = "collm" if ours else "openai"
        grammar = "root ::= " + " | ".join(json.dumps(label) for label in labels)
        try:
            if self._choice_route == "collm":
                top, token, prompt_tokens, completion_tokens, attempts = self._choice_on_route(
                    messages, labels, grammar if self.mode == "grammar" else None)
            else:
                top, token, prompt_tokens, completion_tokens, attempts = self._choice_openai(
                    messages, grammar if self.mode == "grammar" else None)
        except DecodingUnsupported as exc:
            return ChoiceResult(None, "", 0, 0, time.monotonic() - started, exc.attempts,
                                f"the {self.describe} refused log-probabilities: {exc}")
        logprobs = label_logprobs(top, labels) if top else None
        error = None
        if logprobs is None:
            error = ("the endpoint returned no log-probabilities" if not top
                     else f"none of the options {', '.join(labels)} among the likeliest next tokens")
        return ChoiceResult(logprobs, token, prompt_tokens, completion_tokens, time.monotonic() - started,
                            attempts, error)

    def _choice_openai(self, messages: list[BaseMessage], grammar: str | None
                       ) -> tuple[list[dict[str, Any]], str, int, int, int]:
        kwargs: dict[str, Any] = {"logprobs": True, "top_logprobs": CHOICE_TOP_LOGPROBS}
        if not self._injected:
            extra = {**self._base_extra_body(), "max_tokens": 1}
            if grammar:
                extra["grammar"] = grammar
            kwargs["extra_body"] = extra
        runnable: Any = self.chat_model
        response, attempts = self._send(lambda: runnable.invoke(messages, **kwargs),
                                        MODE_KEYWORDS["grammar"] + ("logprob",))
        top, token = _first_token_alternatives(response)
        prompt_tokens, completion_tokens = _token_counts(response)
        return top, token or _message_text(response), prompt_tokens, completion_tokens, attempts

    def _choice_on_route(self, messages: list[BaseMessage], labels: list[str], grammar: str | None
                         ) -> tuple[list[dict[str, Any]], str, int, int, int]:
        from langchain_core.messages import convert_to_openai_messages

        body: dict[str, Any] = {"model": self.cfg.model, "messages": convert_to_openai_messages(messages),
                                "labels": list(labels), "temperature": 0.0}
        if grammar:
            body["grammar"] = grammar
        client = self.chat_model.root_client  # type: ignore[attr-defined]
        answer, attempts = self._send(lambda: client.post("/collm-nas/choice", cast_to=object, body=body),
                                      MODE_KEYWORDS["grammar"])
        usage = answer.get("usage") or {}
        return (list(answer.get("top_logprobs") or []), str(answer.get("text") or ""),
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), attempts)

    # -- a turn of a tool conversation

    def converse(
        self,
        messages: list[BaseMessage],
        *,
        output_model: type[T],
        tools: list[Any],
        force_answer: bool = False,
        parse_text: Callable[[str], BaseModel | None] | None = None,
        tool_choice: str | None = None,
        answer_schema: dict | None = None,
    ) -> tuple[CallResult[T], AIMessage] | None:
        """One model turn where the model may call ``tools`` or answer as a call of ``output_model``.

        With ``force_answer`` the model must answer (``tool_choice`` names the
        answer); ``tool_choice`` may also name one of ``tools`` the model must call. Returns the parsed answer (``value`` None when the model only
        called tools) and the model's message; None when the server refuses
        tool calling (the mode is downgraded: the caller takes the direct path).

        ``answer_schema`` replaces the parameters of the answer tool (by default
        ``output_model``'s own schema) with a tighter one: bounded texts, option
        names and code patterns, which llama.cpp's server turns into the grammar
        of the call's arguments, as in grammar decoding. The answer is still
        validated against ``output_model``.
        """
        started = time.monotonic()
        answer_name = output_model.__name__
        choice = answer_name if force_answer else (tool_choice or "auto")
        answer_tool: Any = output_model
        if answer_schema is not None:
            answer_tool = {"type": "function", "function": {
                "name": answer_name, "description": (output_model.__doc__ or answer_name).strip(),
                "parameters": answer_schema}}
        runnable = self.chat_model.bind_tools([*tools, answer_tool], tool_choice=choice)
        try:
            response, attempts = self._send(lambda: runnable.invoke(messages), MODE_KEYWORDS["tools"])
        except DecodingUnsupported as exc:
            fallback = self._next_mode("tools")
            log.warning("%s does not take tool calls (%s); using %s from now on", self.describe, exc, fallback)
            self._mode = fallback or "text"
            return None
        calls = getattr(response, "tool_calls", None) or []
        answers = [c for c in calls if c.get("name") == answer_name]
        text = _message_text(response)
        if answers:
            args = answers[0].get("args") or {}
            value, error = parse_output(json.dumps(args), output_model, args=args, parse_text=parse_text)
            text = json.dumps(args)
        elif calls:
            value, error = None, None  # only tools asked for: the conversation goes on
        else:
            value, error = parse_output(text, output_model, parse_text=parse_text, prefer_parse_text=True)
        prompt_tokens, completion_tokens = _token_counts(response)
        result = CallResult(value=value, text=text, mode="tools", prompt_tokens=prompt_tokens,
                            completion_tokens=completion_tokens, latency_s=time.monotonic() - started,
                            attempts=attempts, error=None if value is not None else error)
        return result, response


__all__ = [
    "MODES",
    "CallResult",
    "ChoiceResult",
    "label_logprobs",
    "StructuredChat",
    "extract_json_object",
    "mode_for_models_listing",
    "parse_output",
    "probe_server_mode",
]
