"""The documentation stays true: docs/ pages, the architecture page, README.md and mkdocs.yml's nav.

* Every fenced ``python`` block of a guide page (and of README.md) runs, in a temporary folder on the real
  NAS-Bench-201 table, unless the line before it is ``<!-- no-run: why -->`` (a block that needs a server, an
  LLM, a GPU or a user's own module). Shell blocks are not run, but every ``collm-nas SUBCOMMAND`` in them is a
  real subcommand.
* The architecture page names every top-level package folder, and every repository path it names exists.
* README.md stays short and shows the two commands a newcomer needs, verbatim.
* mkdocs.yml's nav lists every page under docs/, and only those.
* .env.example lists every COLLM_NAS_* setting the code reads.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from collm_nas.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
NO_RUN = "<!-- no-run"

SETUP_AND_SEARCH = ("bash scripts/setup.sh && .venv/bin/collm-nas search --space nb201 --dataset cifar10 "
                    "--strategy local --budget 100 --seed 0")
TESTS = ".venv/bin/python -m pytest -q -n auto"
README_MAX_LINES = 250

_FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,})(?P<info>[^`]*)$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    info: str
    code: str
    marker: str  # the last non-blank line before the fence

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (nested indentation, as in list items, included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].startswith(indent + fence) and
                                      lines[j][len(indent):].strip() == fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        assert j < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence"
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        lang = info.split()[0] if info else ""
        blocks.append(Block(path, i + 1, lang, info, "\n".join(body) + "\n", before))
        i = j + 1
    return blocks


# README.md's examples are held to the same rules as the pages'.
ALL_BLOCKS = [block for page in [*PAGES, ROOT / "README.md"] for block in fenced_blocks(page)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]
RUNNABLE = [b for b in PYTHON_BLOCKS if not b.marker.startswith(NO_RUN)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


def test_the_pages_have_code_to_check() -> None:
    assert len(PAGES) >= 10
    assert len(RUNNABLE) >= 8, [b.id for b in RUNNABLE]
    assert len(SHELL_BLOCKS) >= 20
    # Skipping is the exception: most Python examples run.
    assert len(RUNNABLE) > len(PYTHON_BLOCKS) - len(RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_python_examples_run(block: Block, tmp_path: Path, table_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLLM_NAS_NB201_TABLE", table_path)
    monkeypatch.setenv("COLLM_NAS_PROGRESS", "never")
    for name in ("COLLM_NAS_STORE", "COLLM_NAS_RUNS_DIR", "COLLM_NAS_BACKEND", "COLLM_NAS_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    code = compile(block.code, block.id, "exec")
    exec(code, {"__name__": "__docs__"})  # noqa: S102 - the documentation's own examples


def _subcommands() -> dict[str, set[str]]:
    """Every subcommand of the CLI parser, with the actions of those that have their own (``llm serve``)."""
    import argparse

    def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:  # noqa: SLF001 - argparse has no public way to list subparsers
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                return dict(action.choices)
        return {}

    return {name: set(actions(sub)) for name, sub in actions(build_parser()).items()}


_COMMAND = re.compile(r"(?:^|[\s/;|&(`])collm-nas[ \t]+(?:\\\n[ \t]*)?([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")


def test_shell_examples_use_real_subcommands() -> None:
    commands = _subcommands()
    seen = set()
    bad = []
    for block in SHELL_BLOCKS:
        for m in _COMMAND.finditer(block.code):
            name, action = m.group(1), m.group(2)
            seen.add(name)
            if name not in commands:
                bad.append(f"{block.id}: collm-nas {name}")
            elif commands[name] and action is not None and action not in commands[name]:
                bad.append(f"{block.id}: collm-nas {name} {action}")
    assert not bad, bad
    # The pages show the main commands.
    assert {"search", "resume", "approve", "show", "dashboard", "finetune", "llm"} <= seen


ARCHITECTURE = DOCS / "architecture.md"
_PATH = re.compile(r"`([A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-/*]*|[A-Za-z0-9_\-]+\.(?:py|yaml|json|toml|md))`")


def package_folders() -> list[str]:
    """The repository's top-level folders that hold Python files."""
    return sorted(p.name for p in ROOT.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in ("build", "dist", "site")
                  and not p.name.endswith(".egg-info") and any(p.glob("*.py")))


def test_architecture_page_names_every_package_folder() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    folders = package_folders()
    assert {"agents", "backends", "core", "engine", "evaluators", "finetune", "graphs", "llm", "models", "spaces",
            "storage", "tools", "collm_nas"} <= set(folders)
    missing = [f for f in folders if f"`{f}/`" not in text]
    assert not missing, f"docs/architecture.md does not name these folders (as `folder/`): {missing}"


def _exists(name: str) -> bool:
    if "*" in name:
        return any(ROOT.glob(name))
    return (ROOT / name).exists()


def test_architecture_page_paths_exist() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(_PATH.findall(text))
    assert len(named) >= 40, sorted(named)
    # A path is taken from the repository root, or inside the folder its section names
    # (`engine/` ... `loop.py`): bare file names must exist in some top-level folder.
    bad = []
    for name in sorted(named):
        if name.startswith(("http", "collm_nas.")):
            continue
        if "/" in name:
            if not _exists(name.rstrip("/")):
                bad.append(name)
        elif not (_exists(name) or any(_exists(f"{folder}/{name}") for folder in package_folders())
                  or any(_exists(f"{folder}/**/{name}") for folder in package_folders())):
            bad.append(name)
    assert not bad, f"docs/architecture.md names paths that do not exist: {bad}"


def test_readme_is_short_and_has_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    lines = text.splitlines()
    assert SETUP_AND_SEARCH in lines
    assert TESTS in lines
    assert "mkdocs serve" in text and "docs/" in text


def _nav_pages(nav) -> list[str]:
    found: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        found += _nav_pages(value) if isinstance(value, list) else [value]
    return found


def test_mkdocs_nav_lists_every_page() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in PAGES)
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav))


def test_env_example_lists_every_setting() -> None:
    files = subprocess.run(["git", "ls-files", "*.py", "*.sh", ".ci/*"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    names = set()
    for name in files:
        path = ROOT / name
        if path.is_file():
            names |= set(re.findall(r"COLLM_NAS_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    names -= {"COLLM_NAS_LLM"}  # the shared prefix of the LLM settings, not a setting
    listed = (ROOT / ".env.example").read_text(encoding="utf-8")
    missing = sorted(n for n in names if not re.search(rf"\b{n}=", listed))
    assert not missing, f".env.example lacks {missing}"
