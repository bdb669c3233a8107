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

import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from collm_nas.llm.chat_models import ROLES, RoleModelConfig, endpoint_configured, role_config
from collm_nas.llm.local_server import INSTALL_HINT, LocalModelServer, local_model_available
from collm_nas.llm.server_watch import DEFAULT_MAX_RESTARTS, ServerEvent, ServerWatch
from collm_nas.llm.structured import StructuredChat
from collm_nas.llm.model_files import TunedRanker, find_model
from collm_nas.core.errors import UserError

LLM_CHOICES = ("auto", "endpoint", "local", "none")
# The embedded model shares the CPU with everything else: give one answer time.
LOCAL_TIMEOUT_S = 300.0
# Restarts of a run's local model server when it dies or hangs (COLLM_NAS_LLM_MAX_RESTARTS).
MAX_RESTARTS_ENV = "COLLM_NAS_LLM_MAX_RESTARTS"
# Option names a user may pass for the roles (CLI flags / API); never an API key.
ROLE_OPTIONS = ("base_url", "model", "temperature", "max_tokens", "timeout_s", "decoding")


@dataclass
class LLMRoles:
    """The chat clients of one run, one per role."""

    source: str  # "endpoint" | "local" | "custom"
    chats: dict[str, StructuredChat]
    configs: dict[str, RoleModelConfig] = field(default_factory=dict)
    # How the ranker asks (collm_nas.agents.ranker.LLMRanker): a tuned ranker is asked as it was trained.
    ranker_style: str = "full"
    ranker_history: tuple[int | None, int | None] = (None, None)  # (top_k, recent); None: the style's
    tuned_ranker: bool = False  # the ranker role is a `collm-nas finetune` model: strategies may rank with it
    watches: list[ServerWatch] = field(default_factory=list)  # the local servers this run owns, watched

    def servers(self) -> list[dict[str, Any]]:
        """The local model servers this run owns: model file, pid, base URL and log file (empty for endpoints)."""
        return [{"model": w.server.model, "pid": w.server.pid, "base_url": w.server.base_url,
                 "log": str(w.server.log_path), "extra_buffers": w.server.extra_buffers} for w in self.watches]

    def take_server_events(self) -> list[ServerEvent]:
        """What the watches of this run's local servers saw since the last call (restarts, timeouts)."""
        return [event for watch in self.watches for event in watch.take_events()]

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
        with ExitStack() as stack:
            yield _local_roles(stack, options, log_path, roles)
        return
    raise UserError(f"run needs LLM source '{source}', which cannot be opened here")


def _max_restarts() -> int:
    raw = os.environ.get(MAX_RESTARTS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RESTARTS
    if not raw.isdigit():
        raise UserError(f"setting {MAX_RESTARTS_ENV} must be a whole number of restarts (0 or more), got {raw!r}")
    return int(raw)


def _local_roles(stack: ExitStack, options: Mapping[str, Any], log_path: str | Path | None,
                 roles: tuple[str, ...]) -> LLMRoles:
    """The local servers of a run: the embedded model, and a tuned ranker's (``model`` names its folder).

    With ``--llm-model DIR`` (or ``ranker.model``) naming a ``collm-nas finetune`` folder, the ranker role
    talks to the tuned model, asked in the style it was trained on, and the other roles (a hybrid run's
    Navigator and Generator) to the embedded model; hybrid then ranks its proposals with the tuned ranker.
    A ``.gguf`` file serves every role. Each distinct model gets its own server, started once.
    """
    named = {role: _overrides_for(role, options).get("model") for role in ROLES}
    models: dict[str, TunedRanker | None] = {}
    for role, value in named.items():
        if value is not None:
            found = find_model(value)
            # A tuned ranker serves the ranker role only; a plain GGUF file serves whichever role names it.
            models[role] = found if (found.style == "full" or role == "ranker") else None
    tuned = models.get("ranker")
    wanted = tuple(roles) + (("ranker",) if tuned is not None and tuned.style != "full" and
                             "ranker" not in roles else ())
    servers: dict[Path | None, LocalModelServer] = {}
    watches: dict[Path | None, ServerWatch] = {}
    configs: dict[str, RoleModelConfig] = {}
    for role in wanted:
        model = models.get(role)
        key = model.gguf_path if model is not None else None
        if key not in servers:
            log = log_path if not servers or log_path is None else Path(log_path).with_suffix(f".{len(servers)}.log")
            server = LocalModelServer(log_path=log, model_path=key)
            servers[key] = stack.enter_context(server)
            watches[key] = ServerWatch(server, max_restarts=_max_restarts(),
                                       name="local model server" if model is None
                                       else f"local model server of {model.gguf_path.name}")
        server = servers[key]
        given = {k: v for k, v in _overrides_for(role, options).items() if k != "model"}
        given.update(base_url=server.base_url, model=server.model, api_key="local")
        if model is not None and model.temperature is not None:
            given.setdefault("temperature", model.temperature)
        # Grammar decoding and a timeout for a slow local model, unless a flag or a variable says otherwise.
        configs[role] = role_config(role, given, defaults={"decoding": "grammar", "timeout_s": LOCAL_TIMEOUT_S})
    ranker = tuned if tuned is not None and "ranker" in configs else None
    guard_of = {role: watches[models[role].gguf_path if models.get(role) is not None else None] for role in configs}
    return LLMRoles("local", {r: StructuredChat(c, guard=guard_of[r]) for r, c in configs.items()}, configs,
                    ranker_style=ranker.style if ranker else "full",
                    ranker_history=(ranker.top_k, ranker.recent) if ranker else (None, None),
                    tuned_ranker=ranker is not None and ranker.style != "full",
                    watches=list(watches.values()))
