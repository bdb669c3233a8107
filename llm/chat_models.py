"""Chat endpoints for the LLM roles: settings per role, the model factory, retries.

Every role (navigator, generator, ranker) talks to an OpenAI-compatible chat
endpoint: OpenAI itself, a vLLM server, or a llama.cpp / llama-cpp-python
server on this machine. Each setting of a role is looked up, first hit wins, in

1. explicit overrides (CLI flags, API arguments),
2. ``COLLM_NAS_<ROLE>_<FIELD>`` (e.g. ``COLLM_NAS_GENERATOR_MODEL``),
3. ``COLLM_NAS_LLM_<FIELD>`` (shared by all roles),
4. ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (key and URL only),
5. the defaults below.

The process environment wins over ``.env``. Network failures are sorted into
transient ones (timeouts, refused connections, 429, 5xx), which
:func:`call_with_retry` retries with backoff and finally turns into
:class:`LLMUnavailable`, and fatal ones (a refused key, an unknown model, a
malformed request), which become a one-line :class:`~collm_nas.core.errors.UserError`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlparse

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from collm_nas.core.errors import UserError

try:  # tenacity >= 8.3: stop before a sleep that would overrun the budget
    from tenacity import stop_before_delay as _stop_total
except ImportError:  # pragma: no cover - older tenacity
    from tenacity import stop_after_delay as _stop_total

try:
    import httpx
except ImportError:  # pragma: no cover - httpx comes with langchain-core
    httpx = None  # type: ignore[assignment]
try:  # newer openai clients are built on httpx2
    import httpx2
except ImportError:  # pragma: no cover
    httpx2 = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

log = logging.getLogger(__name__)

T = TypeVar("T")

ROLES = ("navigator", "generator", "ranker")
DecodingMode = Literal["auto", "grammar", "json_schema", "tools", "text"]

DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Sent as the bearer token when no key is configured: local servers ignore it.
NO_KEY = "not-needed"

ENV_PREFIX = "COLLM_NAS_"
SHARED_PREFIX = "COLLM_NAS_LLM_"
# Conventional variables, consulted after every COLLM_NAS_ one.
FALLBACK_ENV = {"api_key": "OPENAI_API_KEY", "base_url": "OPENAI_BASE_URL"}


# --------------------------------------------------------------------------- settings


class RetryPolicy(BaseModel):
    """How often and how long to retry transient failures of one call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(5, ge=1)
    initial_wait_s: float = Field(1.0, ge=0)
    max_wait_s: float = Field(30.0, ge=0)
    max_total_s: float = Field(180.0, gt=0)
    jitter_s: float = Field(1.0, ge=0)


# Flat setting names of the retry policy, as they appear in variables and overrides.
RETRY_FIELDS = {f"retry_{name}": name for name in RetryPolicy.model_fields}


class RoleModelConfig(BaseModel):
    """Everything needed to talk to one role's chat endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = Field(DEFAULT_MODEL, min_length=1)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, gt=0)
    timeout_s: float = Field(60, gt=0)
    decoding: DecodingMode = "auto"
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("base_url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        if not text:
            return None
        parsed = urlparse(text)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("expected an http:// or https:// URL such as http://127.0.0.1:8080/v1")
        return text.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def endpoint(self) -> str:
        """The base URL requests go to (OpenAI's when none is set)."""
        return self.base_url or OPENAI_BASE_URL

    @property
    def is_openai(self) -> bool:
        """Whether the endpoint is OpenAI's own API (or Azure OpenAI)."""
        return is_openai_host(self.base_url)

    def public_dict(self) -> dict[str, Any]:
        """The settings without the key, fit for run configs and logs."""
        data = self.model_dump(mode="json", exclude={"api_key"})
        data["api_key_set"] = self.api_key is not None
        return data


def is_openai_host(base_url: str | None) -> bool:
    """Whether ``base_url`` (None: the default) is OpenAI's API or Azure OpenAI."""
    if not base_url:
        return True
    host = (urlparse(base_url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def _merged_environ(environ: Mapping[str, str] | None, env_file: str | Path | None) -> dict[str, str]:
    """``.env`` values overlaid by the environment (the environment wins)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def _lookup(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown LLM role '{role}'; choose one of {', '.join(ROLES)}")
    return role


def role_config(
    role: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    defaults: Mapping[str, Any] | None = None,
) -> RoleModelConfig:
    """The settings of ``role``, resolved from overrides, variables, ``.env`` and defaults.

    ``overrides`` uses the field names (``model``, ``base_url``, ``retry_max_attempts``...;
    ``retry`` may also be a mapping or a :class:`RetryPolicy`); None values are ignored.
    ``defaults`` (same names) replace the built-in defaults where neither an override nor a variable
    sets the field: the embedded model's longer timeout, say, which a variable may still change.
    """
    _check_role(role)
    env = _merged_environ(environ, env_file)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    retry_override = overrides.pop("retry", None)
    if isinstance(retry_override, RetryPolicy):
        retry_override = retry_override.model_dump()
    for key, value in (retry_override or {}).items():
        overrides.setdefault(f"retry_{key}", value)

    role_prefix = f"{ENV_PREFIX}{role.upper()}_"
    flat_fields = [f for f in RoleModelConfig.model_fields if f not in ("role", "retry")] + list(RETRY_FIELDS)
    unknown = set(overrides) - set(flat_fields)
    if unknown:
        raise UserError(f"unknown {role} LLM setting(s): {', '.join(sorted(unknown))}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # flat field -> where its value came from
    for name in flat_fields:
        if name in overrides:
            values[name], sources[name] = overrides[name], f"'{name}' ({role} override)"
            continue
        candidates = [role_prefix + name.upper(), SHARED_PREFIX + name.upper()]
        if name in FALLBACK_ENV:
            candidates.append(FALLBACK_ENV[name])
        for var in candidates:
            found = _lookup(env, var)
            if found is not None:
                values[name], sources[name] = found, var
                break
        else:
            if defaults and defaults.get(name) is not None:
                values[name], sources[name] = defaults[name], f"'{name}' (default for this endpoint)"

    retry = {RETRY_FIELDS[k]: values.pop(k) for k in list(values) if k in RETRY_FIELDS}
    try:
        return RoleModelConfig(role=role, retry=RetryPolicy(**retry), **values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        if loc and loc[0] == "retry" and len(loc) > 1:
            flat = f"retry_{loc[1]}"
        elif loc and loc[0] in RETRY_FIELDS.values():  # raised by RetryPolicy(**retry)
            flat = f"retry_{loc[0]}"
        else:
            flat = loc[0] if loc else "?"
        where = sources.get(flat, f"{role_prefix}{flat.upper()}")
        got = "" if flat == "api_key" else f" (got {_one_line(repr(err.get('input')), 60)})"
        raise UserError(f"setting {where} is invalid: {err['msg']}{got}") from None


def role_configs(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
) -> dict[str, RoleModelConfig]:
    """:func:`role_config` for every role; ``overrides`` is keyed by role."""
    overrides = overrides or {}
    return {role: role_config(role, overrides.get(role), environ, env_file) for role in ROLES}


def endpoint_configured(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> bool:
    """Whether a base URL or an API key is configured for any role.

    The CLI uses it to choose: a configured endpoint first, else a local model,
    else the LLM-free strategies.
    """
    env = _merged_environ(environ, env_file)
    names = [SHARED_PREFIX + "BASE_URL", SHARED_PREFIX + "API_KEY", *FALLBACK_ENV.values()]
    for role in ROLES:
        names += [f"{ENV_PREFIX}{role.upper()}_BASE_URL", f"{ENV_PREFIX}{role.upper()}_API_KEY"]
    return any(_lookup(env, name) is not None for name in names)


# --------------------------------------------------------------------------- factory


def make_chat_model(cfg: RoleModelConfig) -> ChatOpenAI:
    """A ``ChatOpenAI`` for ``cfg`` that never retries by itself (see :func:`call_with_retry`).

    The completion cap goes out under the name each kind of server reads:
    langchain-openai sends ``max_tokens`` as ``max_completion_tokens``, which
    OpenAI wants (it refuses a request carrying both names), but llama-cpp-python
    and older llama.cpp builds read only ``max_tokens``. So OpenAI (and Azure
    OpenAI) get ``max_completion_tokens`` and every other server gets
    ``max_tokens`` in ``extra_body``, which vLLM and llama.cpp also accept.
    """
    from langchain_openai import ChatOpenAI

    kwargs: dict[str, Any] = {
        "model": cfg.model,
        "base_url": cfg.endpoint,  # explicit, so OPENAI_* variables cannot redirect it
        "api_key": cfg.api_key.get_secret_value() if cfg.api_key else NO_KEY,
        "temperature": cfg.temperature,
        "timeout": cfg.timeout_s,
        "max_retries": 0,
        # Local servers speak Chat Completions only; never route to /responses.
        "use_responses_api": False,
    }
    if cfg.is_openai:
        kwargs["max_tokens"] = cfg.max_tokens
    else:
        kwargs["extra_body"] = {"max_tokens": cfg.max_tokens}
    return ChatOpenAI(**kwargs)


# --------------------------------------------------------------------------- errors


class LLMUnavailable(Exception):
    """Transient failures used up the retry policy; the caller may go on without the LLM."""

    def __init__(self, describe: str, attempts: int, reason: str) -> None:
        self.describe = describe
        self.attempts = attempts
        self.reason = reason
        times = "time" if attempts == 1 else "times"
        if attempts:
            super().__init__(f"{describe} failed {attempts} {times} ({reason}); continuing without it")
        else:  # nothing was sent: the server is known to be down
            super().__init__(f"{describe} is down ({reason}); continuing without it")

    def __str__(self) -> str:
        return " ".join(str(self.args[0]).split())


class DecodingUnsupported(Exception):
    """The server refused a structured-decoding parameter; a simpler mode may work."""

    def __init__(self, message: str, status_code: int | None = None, attempts: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.status_code = status_code
        self.attempts = attempts


_TRANSIENT_STATUS = {408, 409, 429}
_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (openai.APITimeoutError, TimeoutError)
_CONNECTION_TYPES: tuple[type[BaseException], ...] = (openai.APIConnectionError, ConnectionError)
for _mod in (httpx, httpx2):
    if _mod is not None:
        _TIMEOUT_TYPES += (_mod.TimeoutException,)
        _CONNECTION_TYPES += (_mod.TransportError,)


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a request that timed out."""
    return isinstance(exc, _TIMEOUT_TYPES)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later could make ``exc`` go away."""
    if isinstance(exc, _TIMEOUT_TYPES + _CONNECTION_TYPES):
        return True
    if isinstance(exc, (openai.RateLimitError, openai.InternalServerError)):
        return True
    if isinstance(exc, openai.APIStatusError) or (httpx is not None and isinstance(exc, httpx.HTTPStatusError)):
        status = _status_of(exc)
        return status is not None and (status in _TRANSIENT_STATUS or status >= 500)
    return False


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_detail(exc: BaseException) -> str:
    """The server's own words about ``exc`` (its error message), on one line."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, Mapping) else inner
        if message:
            return _one_line(str(message))
    elif isinstance(body, str) and body.strip():
        return _one_line(body)
    return _one_line(getattr(exc, "message", None) or str(exc) or type(exc).__name__)


def failure_reason(exc: BaseException) -> str:
    """A short phrase for a transient failure: 'HTTP 500 Internal Server Error', 'timed out'..."""
    status = _status_of(exc)
    if status is not None:
        response = getattr(exc, "response", None)
        phrase = getattr(response, "reason_phrase", "") or ""
        return f"HTTP {status} {phrase}".strip()
    if isinstance(exc, _TIMEOUT_TYPES):
        return "timed out"
    if isinstance(exc, _CONNECTION_TYPES):
        # The wrappers say only "Connection error."; the innermost cause says why.
        detail, cause, seen = "", exc.__cause__ or exc.__context__, 0
        while cause is not None and seen < 10:
            detail = str(cause) or detail
            cause, seen = cause.__cause__ or cause.__context__, seen + 1
        return _one_line(f"connection failed: {detail}" if detail else "connection failed", 120)
    return _one_line(f"{type(exc).__name__}: {exc}", 120)


# Phrases with which servers say that they do not take a request field.
_REJECTION_PHRASES = (
    "not supported",
    "unsupported",
    "unrecognized",
    "unknown",
    "not allowed",
    "not permitted",
    "extra inputs",
    "extra_forbidden",
    "does not support",
    "requires",
    "invalid",
)


def is_decoding_rejection(exc: BaseException, keywords: Collection[str]) -> bool:
    """Whether ``exc`` is the server refusing one of the decoding fields named by ``keywords``.

    A 400/422 that names such a field counts, and so does one that says "not
    supported"/"unrecognized"...; a 5xx counts only when it names the field *and*
    says so (llama.cpp answers "tools param requires --jinja flag" with HTTP 500).
    """
    if not keywords:
        return False
    status = _status_of(exc)
    if status is None:
        return False
    text = error_detail(exc).lower()
    names_field = any(k.lower() in text for k in keywords)
    refuses = any(p in text for p in _REJECTION_PHRASES)
    if status in (400, 422):
        return names_field or refuses
    if status >= 500:
        return names_field and refuses
    return False


def fatal_user_error(exc: BaseException, describe: str, role: str | None = None) -> UserError | None:
    """The :class:`UserError` for a non-transient HTTP failure, or None if ``exc`` is none."""
    status = _status_of(exc)
    if status is None or is_transient(exc):
        return None
    role_part = role.upper() if role else "<ROLE>"
    detail = error_detail(exc)
    if status in (401, 403):
        return UserError(
            f"the {describe} refused the API key (HTTP {status}); "
            f"set COLLM_NAS_LLM_API_KEY or COLLM_NAS_{role_part}_API_KEY"
        )
    if status == 404:
        return UserError(
            f"the {describe} does not know the model or path (HTTP 404: {detail}); "
            f"set COLLM_NAS_{role_part}_MODEL (or COLLM_NAS_LLM_MODEL) to a model it serves "
            f"and check COLLM_NAS_{role_part}_BASE_URL"
        )
    return UserError(f"the {describe} rejected the request (HTTP {status}: {detail})")


# --------------------------------------------------------------------------- retries


def retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` / ``Retry-After``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class wait_backoff_or_retry_after(wait_base):
    """Exponential backoff with jitter, but never shorter than a server's Retry-After.

    Both are capped by ``max_wait_s``.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        p = self.policy
        exponent = max(0, retry_state.attempt_number - 1)
        backoff = min(p.initial_wait_s * (2**exponent), p.max_wait_s)
        if p.jitter_s > 0:
            backoff += random.uniform(0, p.jitter_s)
        outcome = retry_state.outcome
        asked = retry_after_s(outcome.exception()) if outcome is not None and outcome.failed else None
        if asked is not None:
            backoff = max(backoff, asked)
        return min(backoff, p.max_wait_s)


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    describe: str,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    role: str | None = None,
    decoding_keywords: Collection[str] = (),
) -> tuple[T, int]:
    """Call ``fn`` until it succeeds; return its result and the number of attempts.

    Transient failures are retried within ``policy`` (attempts and total time)
    and then raise :class:`LLMUnavailable`. A refusal of a decoding field named
    by ``decoding_keywords`` raises :class:`DecodingUnsupported`. Other HTTP
    errors raise :class:`UserError` (``role`` names the variables to fix). Any
    other exception propagates unchanged. ``on_retry(attempt, error, wait_s)``
    is called before each sleep.
    """
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return fn()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s: attempt %d failed (%s); retrying in %.1fs", describe, state.attempt_number,
                 failure_reason(exc) if exc else "?", wait)
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, wait)

    def retryable(exc: BaseException) -> bool:
        return is_transient(exc) and not is_decoding_rejection(exc, decoding_keywords)

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts) | _stop_total(policy.max_total_s),
        wait=wait_backoff_or_retry_after(policy),
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        result = retrying(attempt)
    except Exception as exc:
        if is_decoding_rejection(exc, decoding_keywords):
            raise DecodingUnsupported(error_detail(exc), _status_of(exc), attempts) from exc
        if is_transient(exc):
            raise LLMUnavailable(describe, attempts, failure_reason(exc)) from exc
        fatal = fatal_user_error(exc, describe, role)
        if fatal is not None:
            raise fatal from exc
        raise
    return result, attempts


__all__ = [
    "DEFAULT_MODEL",
    "ROLES",
    "DecodingUnsupported",
    "LLMUnavailable",
    "RetryPolicy",
    "RoleModelConfig",
    "call_with_retry",
    "endpoint_configured",
    "error_detail",
    "failure_reason",
    "is_decoding_rejection",
    "is_openai_host",
    "is_timeout",
    "is_transient",
    "make_chat_model",
    "retry_after_s",
    "role_config",
    "role_configs",
    "wait_backoff_or_retry_after",
]
