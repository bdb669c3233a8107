"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real `collm-nas dashboard`
(and a real `langgraph dev`) in its own process, over runs that real `collm-nas search` processes started.

The approval flow: a CoLLM-NAS search (table evaluator, a fake OpenAI server for its LLM roles) pauses every
round; on the approval page an invalid code is refused with the checker's reason, an edit drops one
candidate and adds 333132, a rejection's comment reaches the next Navigator prompt, the rest is approved, a
second answer to an answered pause is refused, and a search in another process is watched live on its run
page until its budget. No page may log a console error. SQLite and PostgreSQL.

Set COLLM_NAS_SCREENSHOTS=DIR to keep the screenshots (docs/dashboard-run.png and docs/dashboard-approval.png
come from here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from collm_nas import Workspace
from fake_openai import FakeOpenAIServer, Reply
from test_collm import SECRET, STRATEGY, last_user, role_of

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("COLLM_NAS_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright (its own browser download cannot work offline). Skipped when
    either is missing, unless COLLM_NAS_REQUIRE_BROWSER=1 (CI), where that fails."""
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (the dev extra has it)"
    if why is None and not Path(CHROMIUM).exists():
        why = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if why is not None:
        if os.environ.get("COLLM_NAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"COLLM_NAS_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


class Console:
    """Every console error and uncaught exception of the pages of one browser context."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: uncaught {e}"))
        return page


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _cli(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def dashboard(env: dict[str, str], *args: str) -> Iterator[str]:
    """`collm-nas dashboard --port 0` in its own process; yields its URL; stopped with Ctrl-C (SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "dashboard", "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("collm-nas dashboard: http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[-1].rstrip("/")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        err = proc.stderr.read()
        assert code == 0 and "Traceback" not in err, err


def _shot(page: Any, name: str, tmp: Path) -> Path:
    out = tmp / name
    page.screenshot(path=str(out), full_page=False)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("COLLM_NAS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / name)
    return out


def _ready(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


class Navigator:
    """The fake LLM: the Navigator gets STRATEGY, the Generator fresh codes (the server keeps every request)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.k = 0

    def __call__(self, request: dict) -> Reply:
        if role_of(request) == "navigator":
            return Reply.text(json.dumps(STRATEGY), delay=self.delay)
        self.k += 1
        k = self.k
        codes = [f"{(k + i) % 4 + 1}{(k * 3 + i) % 5}31{i % 4 + 1}2" for i in range(3)]
        return Reply.text(json.dumps({"codes": codes}), delay=self.delay)


def _env(store_args: list[str], table_path: str, server: FakeOpenAIServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLM_NAS_LLM_", "OPENAI_", "COLLM_NAS_STORE"))}
    env.update(COLLM_NAS_NB201_TABLE=table_path, COLLM_NAS_LLM_BASE_URL=server.base_url,
               COLLM_NAS_LLM_API_KEY=SECRET, COLLM_NAS_LLM_MODEL="fake-model", COLLM_NAS_LLM_DECODING="text",
               COLLM_NAS_LLM_RETRY_INITIAL_WAIT_S="0.01", COLLM_NAS_LLM_RETRY_MAX_WAIT_S="0.05",
               COLLM_NAS_LLM_TIMEOUT_S="60", PYTHONPATH=str(ROOT / "tests"))
    env.pop("COLLM_NAS_DASHBOARD_TOKEN", None)
    return env


def _approval_flow(browser: Any, tmp: Path, store_args: list[str], table_path: str, screenshots: bool) -> None:
    comment = "fewer pooling layers; put 3x3 convolutions on the edges into node 3"
    with FakeOpenAIServer(default=Reply.dynamic(Navigator())) as server:
        env = _env(store_args, table_path, server)
        started = _cli(["search", "--strategy", "collm", "--llm", "endpoint", "--budget", "6", "--batch-size", "2",
                        "--approval", "every-round", "--run-id", "appr", "--seed", "3", "--no-progress",
                        *store_args], env)
        assert started.returncode == 0 and "paused for approval" in started.stderr, started.stderr
        ws = Workspace(store=store_args[1]) if store_args[0] == "--store" else Workspace(store_args[1])
        with dashboard(env, *store_args) as url:
            context = browser.new_context(viewport={"width": 1180, "height": 820})
            console = Console()
            page = console.watch(context.new_page())

            # The runs page: the paused run stands out and links to its batch.
            _ready(page, url + "/")
            row = page.locator("tr[data-run='appr']")
            assert "awaiting" in (row.get_attribute("class") or "")
            assert "1 run waits for approval" in page.inner_text("#runs-awaiting")
            row.locator("a.approve-link").click()
            page.wait_for_selector("body[data-ready='1']")
            assert page.url.endswith("/runs/appr/approval")
            page.wait_for_selector("#approval-table tbody tr")
            assert "Round 1" in page.inner_text("#approval-head")
            batch = page.locator("#approval-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.ncode)")
            assert len(batch) == 2 and "333132" not in batch
            assert "Navigator:" in page.inner_text("#approval-strategy")

            # An invalid code: the checker's reason on the page, the pause open, nothing evaluated.
            page.fill("#edit-add", "000000")
            page.click("#edit-button")
            page.wait_for_selector("#approval-error:not([hidden])")
            error = page.inner_text("#approval-error")
            assert "cannot add '000000'" in error and "degenerate" in error and "pause stays open" in error
            assert _get(f"{url}/api/runs/appr/approval")["pending"]["round"] == 1 and ws.run("appr").trials() == []
            if screenshots:
                _shot(page, "dashboard-approval.png", tmp)

            # An edit: drop the first candidate, add 333132; the run goes on (in the dashboard) to round 2.
            page.fill("#edit-add", "333132")
            page.check(f"#approval-table tr[data-ncode='{batch[0]}'] input.drop")
            page.click("#edit-button")
            page.wait_for_function("document.getElementById('approval-answer').textContent.includes('round 2')",
                                   timeout=60_000)
            assert [t.ncode for t in ws.run("appr").trials()] == [batch[1], "333132"]
            assert "Round 2" in page.inner_text("#approval-head")

            # Reject with a comment: nothing evaluated; the comment reaches round 3's Navigator.
            page.fill("#reject-comment", comment)
            page.click("#reject-button")
            page.wait_for_function("document.getElementById('approval-answer').textContent.includes('round 3')",
                                   timeout=60_000)
            assert len(ws.run("appr").trials()) == 2
            prompts = [last_user(b) for b in server.chat_bodies if role_of(b) == "navigator"]
            assert len(prompts) == 3 and comment not in prompts[0] + prompts[1]
            assert comment in prompts[2] and "rejected" in prompts[2]

            # Approve round 3; a second answer to that pause is refused and changes nothing.
            page.click("#approve-button")
            page.wait_for_function("document.getElementById('approval-answer').textContent.includes('round 4')",
                                   timeout=60_000)
            status, body = _post(f"{url}/api/runs/appr/approval", {"action": "approve", "round": 3})
            assert status == 409 and "answered already" in body["error"]
            assert len(ws.run("appr").trials()) == 4
            page.click("#approve-button")
            page.wait_for_function("document.getElementById('approval-none').textContent.includes('finished')",
                                   timeout=60_000)
            status, body = _post(f"{url}/api/runs/appr/approval", {"action": "approve"})
            assert status == 409 and "not waiting for approval" in body["error"]
            trials = ws.run("appr").trials()
            assert len(trials) == 6 == len({t.ncode for t in trials}) and ws.run("appr").status == "finished"

            # Its run page: the rounds with the person's answers, the Coordinator's verdicts, the curve.
            _ready(page, f"{url}/runs/appr")
            assert page.inner_text("#run-evaluations") == "6 / 6" and "finished" in page.inner_text("#run-status")
            rounds = page.inner_text("#rounds")
            assert comment in rounds and "rejected: nothing evaluated" in rounds and "added 333132" in rounds
            assert page.locator(".verdict.accepted").count() >= 4
            assert page.locator("#llm-facts").inner_text().count("calls") >= 1
            box = page.locator("#curve svg").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.5)
            page.wait_for_selector("#tip:not([hidden])")
            assert "NCode" in page.inner_text("#tip") and "|" in page.inner_text("#tip")
            assert page.locator("#scatter svg g.front circle").count() >= 1
            page.fill("#trials-filter", "333132")
            page.wait_for_function("document.querySelectorAll('#trials-table tbody tr').length === 1")
            page.fill("#trials-filter", "")
            page.wait_for_function("document.querySelectorAll('#trials-table tbody tr').length === 6")
            page.locator("#trials-table th[data-key='cifar10_valid']").click()
            page.wait_for_selector("#trials-table th.desc[data-key='cifar10_valid']")
            shown = page.locator("#trials-table tbody tr td.mono").all_inner_texts()
            assert shown == [t.ncode for t in ws.run("appr").trials(top=6)]  # sorted by the server, best first

            # A search in another process, watched live (no reload) until its budget.
            server.default = Reply.dynamic(Navigator(delay=0.35))
            live = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "search", "--strategy", "collm",
                                     "--llm", "endpoint", "--budget", "16", "--batch-size", "2", "--run-id", "live",
                                     "--no-progress", *store_args], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.time() + 120
                while ws.store.get_run("live") is None:
                    assert live.poll() is None and time.time() < deadline, live.communicate()
                    time.sleep(0.1)
                _ready(page, f"{url}/runs/live")
                page.evaluate("""() => {
                    window.__sameDocument = true;
                    window.__counts = [document.getElementById('run-evaluations').textContent];
                    new MutationObserver(() => {
                        const now = document.getElementById('run-evaluations');
                        if (now && window.__counts[window.__counts.length - 1] !== now.textContent)
                            window.__counts.push(now.textContent);
                    }).observe(document.getElementById('run-facts'),
                               {childList: true, subtree: true, characterData: true});
                }""")
                page.wait_for_function("document.getElementById('run-evaluations').textContent === '16 / 16'",
                                       timeout=120_000)
                assert live.wait(timeout=60) == 0
                counts = page.evaluate("window.__counts")
                assert page.evaluate("window.__sameDocument === true")  # updated in place, never reloaded
                numbers = [int(c.split("/")[0]) for c in counts]
                assert numbers == sorted(numbers) and len(set(numbers)) >= 3 and numbers[-1] == 16, counts
                page.wait_for_function("document.getElementById('run-status').textContent.startsWith('finished')")
                if screenshots:
                    page.evaluate("window.scrollTo(0, 0)")
                    _shot(page, "dashboard-run.png", tmp)
            finally:
                if live.poll() is None:
                    live.kill()
                    live.wait()

            # Compare both runs; the 404 page names an unknown run.
            _ready(page, f"{url}/compare?runs=appr,live")
            assert page.locator("#compare-charts svg path.series").count() >= 1
            assert "live" in page.inner_text("#compare-table") and "16 / 16" in page.inner_text("#compare-table")
            errors_before = list(console.errors)
            response = page.goto(f"{url}/runs/no-such-run")
            assert response.status == 404 and "unknown run 'no-such-run'" in page.inner_text("#error-message")
            assert errors_before == [], errors_before
            assert all("404" in e for e in console.errors), console.errors  # only the 404 document itself
            context.close()


def test_dashboard_approval_flow_and_live_updates_sqlite(browser: Any, tmp_path: Path, table_path: str) -> None:
    _approval_flow(browser, tmp_path, ["--runs-dir", str(tmp_path / "runs")], table_path, screenshots=True)


def test_dashboard_approval_flow_and_live_updates_postgres(browser: Any, tmp_path: Path, table_path: str,
                                                           postgres_url: str) -> None:
    _approval_flow(browser, tmp_path, ["--store", postgres_url], table_path, screenshots=False)


def test_a_studio_run_is_answered_from_the_dashboard_inside_langgraph_dev(browser: Any, tmp_path: Path,
                                                                          table_path: str) -> None:
    """One `langgraph dev`: Studio's API and the dashboard (under /dashboard). A run started with the SDK
    shows up on the dashboard; its pause is answered there (the run goes on in the server), then with
    LangChain's decisions form through the SDK."""
    from test_studio import STREAM, _langgraph_dev, _pause

    from langgraph_sdk import get_sync_client

    runs = tmp_path / "default-runs"  # the server's runs folder ($COLLM_NAS_RUNS_DIR): its runs and the dashboard's
    with _langgraph_dev(tmp_path, table_path) as running:
        client = get_sync_client(url=running["url"])
        thread = client.threads.create()["thread_id"]
        parts = list(client.runs.stream(thread, "search", input={"strategy": "random", "budget": 6, "batch_size": 2,
                                                                 "approval": "every_round", "run_id": "lg"},
                                        stream_mode=STREAM))
        pause = _pause(parts)
        assert pause["round"] == 1 and pause["action_requests"][0]["args"]["codes"] == \
            [c["ncode"] for c in pause["candidates"]]
        assert pause["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject"]
        url = running["url"] + "/dashboard"
        context = browser.new_context(viewport={"width": 1180, "height": 820})
        console = Console()
        page = console.watch(context.new_page())
        _ready(page, url + "/")
        assert "awaiting" in (page.locator("tr[data-run='lg']").get_attribute("class") or "")
        _ready(page, f"{url}/runs/lg/approval")
        page.wait_for_selector("#approval-table tbody tr")
        page.fill("#edit-add", "12345")
        page.click("#edit-button")
        page.wait_for_selector("#approval-error:not([hidden])")
        assert "cannot add '12345'" in page.inner_text("#approval-error")
        page.fill("#edit-add", "")
        page.click("#approve-button")  # taken by the server, which runs round 1 and pauses at round 2
        page.wait_for_function("document.getElementById('approval-answer').textContent.includes('round 2')",
                               timeout=90_000)
        assert client.threads.get(thread)["status"] == "interrupted"
        run = Workspace(runs, table_path=table_path).run("lg")
        assert len(run.trials()) == 2 and [r["human"]["action"] for r in run.rounds()] == ["approve"]
        status, body = _post(f"{url}/api/runs/lg/approval", {"action": "approve", "round": 1})
        assert status == 409 and "answered already" in body["error"]

        # LangChain's reply form, through the SDK as Agent Chat UI sends it: an edit naming the new batch.
        second = [c["ncode"] for c in _get(f"{url}/api/runs/lg/approval")["pending"]["candidates"]]
        decisions = {"decisions": [{"type": "edit", "edited_action": {"name": "evaluate_batch",
                                                                      "args": {"codes": [second[0], "333132"]}}}]}
        parts = list(client.runs.stream(thread, "search", command={"resume": decisions}, stream_mode=STREAM))
        assert [e["ncode"] for e in parts_custom(parts) if e.get("event") == "evaluation"] == [second[0], "333132"]
        page.wait_for_function("document.getElementById('approval-head').textContent.includes('Round 3')",
                               timeout=60_000)
        page.click("#approve-button")
        page.wait_for_function("document.getElementById('approval-none').textContent.includes('finished')",
                               timeout=90_000)
        run = Workspace(runs, table_path=table_path).run("lg")
        assert run.status == "finished" and len(run.trials()) == 6
        assert [r["human"]["action"] for r in run.rounds()] == ["approve", "edit", "approve"]
        _ready(page, f"{url}/runs/lg")
        assert page.inner_text("#run-evaluations") == "6 / 6"
        assert console.errors == [], console.errors
        context.close()


def parts_custom(parts: list[Any]) -> list[dict]:
    return [p.data for p in parts if p.event == "custom"]
