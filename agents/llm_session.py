"""Which LLM a run talks to, and for how long.

``resolve_llm`` turns the user's choice (``auto``, ``endpoint``, ``local``,
``none``) into what this machine can do; ``open_llm`` builds one structured
chat client per role for the duration of a run, starting and always
stopping the embedded local model server when that is the choice.

Clients live in the graph's runtime context, never in checkpointed state or
the trial store, so endpoints may change between a run and its resumption
and API keys are never written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from collm_nas.agents.chat_models import ROLES, RoleModelConfig, endpoint_configured, role_config
from collm_nas.agents.local_model import INSTALL_HINT, LocalModelServer, local_model_available
from collm_nas.agents.structured import StructuredChat
from collm_nas.core.errors import UserError

LLM_CHOICES = ("auto", "endpoint", "local", "none")
# The embedded model shares the CPU with everything else: give one answer time.
LOCAL_TIMEOUT_S = 300.0
# Option names a user may pass for the roles (CLI flags / API); never an API key.
ROLE_OPTIONS = ("base_url", "model", "temperature", "max_tokens", "timeout_s", "decoding")


@dataclass
class LLMRoles:
    """The chat clients of one run, one per role."""

    source: str  # "endpoint" | "local" | "custom"
    chats: dict[str, StructuredChat]
    configs: dict[str, RoleModelConfig] = field(default_factory=dict)

    def chat(self, role: str) -> StructuredChat:
        try:
            return self.chats[role]
        except KeyError:
            raise UserError(f"no chat model is configured for the {role} role") from None

    def describe(self) -> dict[str, dict[str, Any]]:
        """Public facts per role (endpoint, model, decoding mode): safe to print and store."""
        out = {}
        for role, chat in self.chats.items():
            cfg = self.configs.get(role)
            info = cfg.public_dict() if cfg is not None else {"model": type(chat).__name__}
            info["mode"] = chat.mode
            out[role] = info
        return out

    @classmethod
    def from_chat_models(cls, **models: BaseChatModel) -> "LLMRoles":
        """Bring your own LangChain chat models, e.g. ``LLMRoles.from_chat_models(navigator=m, generator=m)``."""
        chats = {}
        for role, model in models.items():
            if role not in ROLES:
                raise UserError(f"unknown LLM role '{role}'; roles are {', '.join(ROLES)}")
            cfg = role_config(role, {"model": getattr(model, "model_name", None) or type(model).__name__},
                              environ={}, env_file=None)
            chats[role] = StructuredChat(cfg, chat_model=model)
        return cls("custom", chats)


def resolve_llm(choice: str, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """``(source, note)``: where LLM roles run on this machine, and a one-line note when none can."""
    if choice not in LLM_CHOICES:
        raise UserError(f"unknown --llm '{choice}'; choose one of {', '.join(LLM_CHOICES)}")
    if choice == "auto":
        if endpoint_configured(environ):
            return "endpoint", None
        if local_model_available():
            return "local", None
        return "none", ("no LLM endpoint is configured (COLLM_NAS_LLM_BASE_URL) and the local model is not "
                        "installed; running without an LLM")
    if choice == "endpoint" and not endpoint_configured(environ):
        raise UserError("--llm endpoint needs an endpoint: set COLLM_NAS_LLM_BASE_URL (and COLLM_NAS_LLM_API_KEY "
                        "if it needs one), or use --llm local")
    if choice == "local" and not local_model_available():
        raise UserError(INSTALL_HINT)
    return choice, None


def check_role_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``{"model": ..., "navigator.model": ...}`` style options; keys are never secrets."""
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        role, _, name = key.rpartition(".")
        if name not in ROLE_OPTIONS or (role and role not in ROLES):
            raise UserError(f"unknown LLM option '{key}'; use one of {', '.join(ROLE_OPTIONS)}, "
                            f"optionally prefixed by a role ({', '.join(ROLES)}) and a dot")
        clean[key] = value
    return clean


def _overrides_for(role: str, options: Mapping[str, Any]) -> dict[str, Any]:
    shared = {k: v for k, v in options.items() if "." not in k}
    own = {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(role + ".")}
    return {**shared, **own}


@contextmanager
def open_llm(source: str, options: Mapping[str, Any] | None = None, *, log_path: str | Path | None = None,
             roles: tuple[str, ...] = ("navigator", "generator")) -> Iterator[LLMRoles | None]:
    """Chat clients for a run's lifetime; the local server (if any) stops on exit, errors and Ctrl-C."""
    options = check_role_options(options or {})
    if source == "none":
        yield None
        return
    if source == "endpoint":
        configs = {role: role_config(role, _overrides_for(role, options)) for role in roles}
        yield LLMRoles("endpoint", {r: StructuredChat(c) for r, c in configs.items()}, configs)
        return
    if source == "local":
        with LocalModelServer(log_path=log_path) as server:
            configs = {}
            for role in roles:
                given = _overrides_for(role, options)
                given.update(base_url=server.base_url, model=server.model, api_key="local")
                given.setdefault("decoding", "grammar")
                given.setdefault("timeout_s", LOCAL_TIMEOUT_S)
                configs[role] = role_config(role, given)  # temperature, retries... still from settings
            yield LLMRoles("local", {r: StructuredChat(c) for r, c in configs.items()}, configs)
        return
    raise UserError(f"run needs LLM source '{source}', which cannot be opened here")
