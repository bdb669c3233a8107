"""The local model server's speed with llama.cpp's extra buffer types on and off, per model, side by side.

For each model (the embedded SmolLM2-135M and any ``--model FILE.gguf``, e.g. Qwen2.5-Coder-1.5B) and each
setting of the extra buffers, a server is started through collm-nas's own entry point
(:class:`collm_nas.llm.local_server.LocalModelServer`) and asked the same chat question ``--calls`` times with
a prompt of about ``--prompt-lines`` history lines; settings alternate, repeat after repeat, so a noisy machine
disturbs them alike. Printed: seconds to start (load until ``/v1/models`` answers), the median call, prompt
and completion tokens, and how the server's process ended when it did not answer (on CPUs with AMX, extra
buffers on kill it at the first completion: that row then says so).

    python benchmarks/llm_speed.py --model ~/.cache/collm-nas/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from collm_nas.llm.local_server import LocalModelServer, local_model_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], help="more GGUF files (the embedded model is always in)")
    p.add_argument("--repeats", type=int, default=2, help="server starts per model and setting (default 2)")
    p.add_argument("--calls", type=int, default=2, help="chat calls per start (default 2)")
    p.add_argument("--prompt-lines", type=int, default=150, help="history lines in the prompt (default 150)")
    p.add_argument("--max-tokens", type=int, default=32)
    return p.parse_args(argv)


def _prompt(lines: int) -> str:
    history = "\n".join(f"{(i * 7919) % 15625:06d}|{60 + (i * 37) % 40}.{i % 10}" for i in range(lines))
    return f"Architectures and their accuracies:\n{history}\nWhich pattern do the best ones share? One sentence."


def one_start(model: Path | None, extra: bool, args: argparse.Namespace) -> dict:
    from langchain_openai import ChatOpenAI

    log = Path(tempfile.mkdtemp(prefix="collm-nas-speed-")) / "server.log"
    started = time.perf_counter()
    server = LocalModelServer(model_path=model, extra_buffers=extra, log_path=log)
    try:
        server.start()
        load_s = time.perf_counter() - started
        chat = ChatOpenAI(base_url=server.base_url, api_key="none", model=server.model, temperature=0,
                          timeout=600, max_retries=0, extra_body={"max_tokens": args.max_tokens})
        calls = []
        for _ in range(args.calls):
            t = time.perf_counter()
            reply = chat.invoke(_prompt(args.prompt_lines))
            usage = reply.response_metadata["token_usage"]
            calls.append((time.perf_counter() - t, usage["prompt_tokens"], usage["completion_tokens"]))
        return {"load_s": load_s, "calls": calls}
    except Exception as e:  # noqa: BLE001 - the row reports it
        died = server.exit_description()
        return {"error": f"server {died}" if died else f"{type(e).__name__}: {' '.join(str(e).split())[:80]}"}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models: list[Path | None] = [None, *(Path(m).expanduser() for m in args.model)]
    results: dict[tuple[str, bool], list[dict]] = {}
    for _ in range(args.repeats):
        for model in models:
            for extra in (False, True):
                name = (model or local_model_path()).name
                results.setdefault((name, extra), []).append(one_start(model, extra, args))
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; calls per start {args.calls}, "
          f"{args.repeats} starts per row\n")
    print("| model | extra buffers | start s (each) | call s (median) | calls s | prompt / completion tokens | |")
    print("|---|---|---|---|---|---|---|")
    for (name, extra), runs in results.items():
        errors = [r["error"] for r in runs if "error" in r]
        good = [r for r in runs if "error" not in r]
        calls = [c for r in good for c in r["calls"]]
        loads = ", ".join(f"{r['load_s']:.2f}" for r in good) or "-"
        median = f"{statistics.median(c[0] for c in calls):.2f}" if calls else "-"
        each = ", ".join(f"{c[0]:.1f}" for c in calls) or "-"
        tokens = f"{calls[0][1]} / {calls[0][2]}" if calls else "-"
        print(f"| {name} | {'on' if extra else 'off'} | {loads} | {median} | {each} | {tokens} | "
              f"{'; '.join(errors)} |")


if __name__ == "__main__":
    main()
