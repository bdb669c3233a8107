"""MkDocs hook: lets mkdocstrings find the package's modules where setuptools' package-dir maps them.

The folders ``core/``, ``engine/``, … install as ``collm_nas.core``, ``collm_nas.engine``, … (pyproject's
``[tool.setuptools.package-dir]``), a layout griffe cannot follow from the source tree. At start the hook
builds the installed layout as symbolic links in a temporary folder (removed at exit) and points the python
handler's ``paths`` at it. Nothing is written into the repository.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]


def package_tree(target: Path) -> Path:
    """``target/collm_nas`` as it installs: the package folder's files plus one link per mapped subpackage."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    package = target / "collm_nas"
    package.mkdir()
    for entry in (ROOT / mapping["collm_nas"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        if name != "collm_nas":
            (package / name.split(".", 1)[1]).symlink_to(ROOT / folder)
    return target


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config):
    tree = Path(tempfile.mkdtemp(prefix="collm-nas-docs-"))
    atexit.register(shutil.rmtree, tree, True)
    handlers = config.plugins["mkdocstrings"].config.handlers
    python = handlers.setdefault("python", {})
    python["paths"] = [str(package_tree(tree))]
    return config
