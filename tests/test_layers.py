"""Imports point one way: core <- spaces <- models <- evaluators <- backends; core <- llm; core <- tools <- agents
(which use llm) <- finetune; everything <- engine <- graphs <- api <- cli / studio / dashboard. Lazy imports
inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BELOW = {
    "core": set(),
    "storage": {"core"},
    "spaces": {"core"},
    "models": {"core", "spaces"},
    "evaluators": {"core", "spaces", "models"},
    "backends": {"core", "spaces", "models", "evaluators"},
    "tools": {"core", "spaces"},
    "llm": {"core"},
    "agents": {"core", "spaces", "tools", "llm"},
    "finetune": {"core", "spaces", "tools", "llm", "agents"},
}
BELOW["engine"] = set(BELOW) - {"finetune"}
BELOW["graphs"] = BELOW["engine"] | {"engine"}
BELOW["api"] = BELOW["graphs"] | {"graphs", "finetune"}
BELOW["faces"] = BELOW["api"] | {"api"}
# Modules of the collm_nas package folder itself, by layer.
TOP = {"api": "api", "trajectories": "api", "__init__": "api", "cli": "faces", "studio": "faces",
       "studio_app": "faces", "progress": "faces", "plotting": "faces", "faces": "faces", "testing": "faces",
       "dashboard": "faces"}
FOLDERS = ["core", "storage", "spaces", "models", "evaluators", "backends", "tools", "llm", "agents", "finetune",
           "engine", "graphs"]


def layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "collm_nas":
        return TOP[rel.parts[1] if len(rel.parts) > 2 else path.stem]
    return rel.parts[0]


def layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "collm_nas":
        return None
    if len(parts) == 1:
        return "api"  # the package's face: collm_nas/__init__.py
    return parts[1] if parts[1] in FOLDERS else TOP.get(parts[1], parts[1])


def project_files() -> list[Path]:
    files = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]
    return files + sorted((ROOT / "collm_nas").rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    bad = []
    for path in project_files():
        mine = layer_of_file(path)
        for line, module in imports(path):
            theirs = layer_of_module(module)
            if theirs is not None and theirs != mine and theirs not in BELOW[mine]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {module} ({theirs})")
    return bad


def test_every_project_module_has_a_layer() -> None:
    for path in project_files():
        assert layer_of_file(path) in BELOW, path


def test_imports_point_down_only() -> None:
    assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    """The test itself can fail: a core module that imports the engine is reported."""
    fake = ROOT / "core" / "_upward_probe.py"
    fake.write_text("from collm_nas.engine import SearchLoop\n", encoding="utf-8")
    try:
        assert any("core/_upward_probe.py:1: core imports collm_nas.engine" in b for b in upward_imports())
    finally:
        fake.unlink()


LIGHT = ("collm_nas", "collm_nas.core", "collm_nas.spaces", "collm_nas.tools", "collm_nas.evaluators",
         "collm_nas.backends.worker")


def test_the_core_and_an_evaluation_worker_import_light() -> None:
    """Neither LangGraph nor LangChain comes with the core, the spaces, the tools or an evaluation worker
    (every process-pool worker imports them): a fresh interpreter imports them and looks."""
    import json
    import subprocess
    import sys

    probe = ("import importlib, json, sys\n"
             f"for name in {LIGHT!r}: importlib.import_module(name)\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('langgraph', 'langchain_core', 'langchain_openai') or m.startswith(('collm_nas.engine', "
             "'collm_nas.agents', 'collm_nas.llm', 'collm_nas.graphs')))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_the_package_names_come_on_first_use() -> None:
    import collm_nas

    assert collm_nas.Workspace.__module__ == "collm_nas.api" and "Workspace" in dir(collm_nas)
