"""Our entry point for llama.cpp's OpenAI-compatible server: ``python -m collm_nas.llm.llama_server``.

It takes every argument of ``python -m llama_cpp.server`` and one of its own, ``--extra_buffers on|off``
(default ``off``), and then runs that server, with one route more: ``GET /collm-nas/health`` answers
``{"busy": bool}`` at once, without waiting for the model (llama-cpp-python's ``/v1/models`` waits for the
completion in progress), so a watcher can tell a busy server from a hung one. And ``POST
/v1/collm-nas/choice``: a chat completion of one token that also returns the log-probability of each of the
request's ``labels`` (one-token option names) as the next token, read from the model's logits by a logits
processor. llama-cpp-python's own ``logprobs`` need ``--logits_all True``, which keeps the logits of every
prompt position (``n_ctx`` x vocabulary floats, 2.5 GB for Qwen2.5's 152k-token vocabulary at 4k context) and
computes them for every prompt token; the choice needs only the last position's, which the sampler sees anyway.

Why it exists: llama-cpp-python 0.3.36 loads a model with llama.cpp's *extra buffer types* switched on (the
CPU backend's AMX tiles and weight repacking). On CPUs with AMX the process is killed on the first completion
of a quantised model, after the model loaded and ``/v1/models`` answered. ``llama_model_params.use_extra_bufts
= False`` avoids it, and llama-cpp-python's server has no setting for it. So the model parameters'
defaults are patched here, in the server's own process, before the model is loaded.

Off is the default on every CPU. Measured on a 2-core AMD EPYC with AVX-512 and no AMX, with a 1,836-token
prompt and a 30-token answer (``benchmarks/llm_speed.py``): SmolLM2-135M Q4_1 took 8.2-10.8 s with extra
buffers off and 9.6-9.7 s with them on. Qwen2.5-Coder-1.5B Q4_K_M took 32.1-32.9 s off and 34.6-35.4 s on,
and it loaded in 0.4 s off against 1.0-3.5 s on, because repacking the weights costs time at load. There is
nothing to win by switching them on for these models, and switching them on crashes the AMX machines.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence

EXTRA_BUFFERS_FLAG = "--extra_buffers"
HEALTH_PATH = "/collm-nas/health"
CHOICE_PATH = "/v1/collm-nas/choice"


def split_arguments(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """``(extra_buffers, the rest)``: our one flag taken out of the server's arguments."""
    rest: list[str] = []
    extra = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        value: str | None = None
        if arg == EXTRA_BUFFERS_FLAG:
            if i + 1 >= len(args):
                raise SystemExit(f"{EXTRA_BUFFERS_FLAG} needs a value: on or off")
            value, i = args[i + 1], i + 2
        elif arg.startswith(EXTRA_BUFFERS_FLAG + "="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            rest.append(arg)
            i += 1
            continue
        if value not in ("on", "off"):
            raise SystemExit(f"{EXTRA_BUFFERS_FLAG} takes on or off, not {value!r}")
        extra = value == "on"
    return extra, rest


def set_extra_buffers(enabled: bool) -> None:
    """Make every model this process loads use (or not use) llama.cpp's extra buffer types."""
    import llama_cpp.llama_cpp as native

    defaults = native.llama_model_default_params
    if getattr(defaults, "_collm_nas_patched", False):
        defaults = defaults.__wrapped__  # type: ignore[attr-defined]

    def model_params():
        params = defaults()
        if hasattr(params, "use_extra_bufts"):  # older llama.cpp builds have no such field: nothing to do
            params.use_extra_bufts = enabled
        return params

    model_params.__wrapped__ = defaults  # type: ignore[attr-defined]
    model_params._collm_nas_patched = True  # type: ignore[attr-defined]
    native.llama_model_default_params = model_params


def add_health_route(app) -> None:
    """``GET /collm-nas/health``: answered by the event loop alone, whether or not a completion is running."""
    import llama_cpp.server.app as server_app

    async def health() -> dict[str, bool]:
        return {"busy": server_app.llama_outer_lock.locked() or server_app.llama_inner_lock.locked()}

    app.add_api_route(HEALTH_PATH, health, methods=["GET"])


def label_alternatives(logits, labels: Sequence[str], tokenize) -> list[dict[str, float | str]]:
    """Every one-token spelling of each label (``"A"``, ``" A"``) with its log-probability as the next token,
    from the next-token ``logits`` (a numpy vector over the vocabulary), in the shape of OpenAI's
    ``top_logprobs``. ``tokenize(text) -> token ids`` without a beginning-of-text token."""
    import numpy as np

    scores = np.asarray(logits, dtype=np.float64)
    top = scores.max()
    log_total = top + np.log(np.exp(scores - top).sum())
    out: list[dict[str, float | str]] = []
    for label in labels:
        for spelling in (label, " " + label):
            ids = tokenize(spelling)
            if len(ids) == 1 and 0 <= ids[0] < len(scores):
                out.append({"token": spelling, "logprob": float(scores[ids[0]] - log_total)})
    return out


def add_choice_route(app) -> None:
    """``POST /v1/collm-nas/choice``: a chat-completion request (its messages, grammar, temperature...) and
    ``labels``; answers ``{"text", "top_logprobs", "usage"}``: one generated token, and each label's
    log-probability as that token (see :func:`label_alternatives`)."""
    import contextlib

    import llama_cpp
    import llama_cpp.server.app as server_app
    from llama_cpp.server.types import CreateChatCompletionRequest
    from pydantic import Field
    from starlette.concurrency import run_in_threadpool

    class ChoiceRequest(CreateChatCompletionRequest):
        labels: list[str] = Field(min_length=1, max_length=100)

    async def choice(body: ChoiceRequest) -> dict:
        kwargs = body.model_dump(exclude={"n", "logit_bias_type", "user", "min_tokens", "labels"})
        kwargs.update(max_tokens=1, stream=False, logprobs=False, top_logprobs=None)
        seen: dict[str, object] = {}

        def capture(_input_ids, scores):
            if "logits" not in seen:  # the first token's: the only one asked for
                seen["logits"] = scores.copy()
            return scores

        async with contextlib.asynccontextmanager(server_app.get_llama_proxy)() as proxy:
            llama = server_app.prepare_request_resources(body, proxy, body.model, kwargs)
            kwargs["logits_processor"] = llama_cpp.LogitsProcessorList(
                [*(kwargs.get("logits_processor") or []), capture])
            completion = await run_in_threadpool(llama.create_chat_completion, **kwargs)

            def tokenize(text: str) -> list[int]:
                return llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

            top = label_alternatives(seen["logits"], body.labels, tokenize) if "logits" in seen else []
        return {"text": completion["choices"][0]["message"].get("content") or "", "top_logprobs": top,
                "usage": completion.get("usage") or {}}

    # This module's annotations are strings (``from __future__ import annotations``); FastAPI must see the class.
    choice.__annotations__ = {"body": ChoiceRequest, "return": dict}
    app.add_api_route(CHOICE_PATH, choice, methods=["POST"])


# How often the server looks whether the process that started it is still there.
PARENT_POLL_S = 1.0
# Set by LocalModelServer to its own pid: the server then ends with that process. Unset (the entry point run
# by hand), the server stays up on its own.
PARENT_ENV = "COLLM_NAS_SERVER_PARENT"


def end_with_parent(poll_s: float = PARENT_POLL_S) -> threading.Thread | None:
    """Exit when the process named by ``$COLLM_NAS_SERVER_PARENT`` is gone (killed, even by SIGKILL, where its
    own cleanup never ran): the server runs in a session of its own and would otherwise hold its gigabytes of
    model for good. A process whose parent ends is handed to another, so its parent id changes."""
    named = os.environ.get(PARENT_ENV)
    if not named or not named.isdigit() or int(named) != os.getppid():  # not started by that process itself
        return None
    parent = int(named)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        print(f"collm-nas: the process that started this server ({parent}) is gone; the server stops",
              file=sys.stderr, flush=True)
        os._exit(0)

    thread = threading.Thread(target=watch, name="collm-nas-parent-watch", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> None:
    extra, rest = split_arguments(sys.argv[1:] if argv is None else argv)
    set_extra_buffers(extra)
    end_with_parent()
    import llama_cpp.server.__main__ as entry

    create_app = entry.create_app

    def create_app_with_health(*args, **kwargs):
        app = create_app(*args, **kwargs)
        add_health_route(app)
        add_choice_route(app)
        return app

    entry.create_app = create_app_with_health
    sys.argv = [sys.argv[0], *rest]
    entry.main()


if __name__ == "__main__":
    main()
