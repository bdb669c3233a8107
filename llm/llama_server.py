"""Our entry point for llama.cpp's OpenAI-compatible server: ``python -m collm_nas.llm.llama_server``.

It takes every argument of ``python -m llama_cpp.server`` and one of its own, ``--extra_buffers on|off``
(default ``off``), and then runs that server, with one route more: ``GET /collm-nas/health`` answers
``{"busy": bool}`` at once, without waiting for the model (llama-cpp-python's ``/v1/models`` waits for the
completion in progress), so a watcher can tell a busy server from a hung one.

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

import sys
from collections.abc import Sequence

EXTRA_BUFFERS_FLAG = "--extra_buffers"
HEALTH_PATH = "/collm-nas/health"


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


def main(argv: Sequence[str] | None = None) -> None:
    extra, rest = split_arguments(sys.argv[1:] if argv is None else argv)
    set_extra_buffers(extra)
    import llama_cpp.server.__main__ as entry

    create_app = entry.create_app

    def create_app_with_health(*args, **kwargs):
        app = create_app(*args, **kwargs)
        add_health_route(app)
        return app

    entry.create_app = create_app_with_health
    sys.argv = [sys.argv[0], *rest]
    entry.main()


if __name__ == "__main__":
    main()
