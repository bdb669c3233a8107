"""Prompt templates: plain-text files in ``agents/prompts/``, filled with ``$name`` fields.

Templates hold the words; code only supplies the fields (the space
description, the history digest...). Nothing in a template is specific to
one search space.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@lru_cache(maxsize=None)
def template(name: str) -> Template:
    path = PROMPT_DIR / f"{name}.md"
    return Template(path.read_text(encoding="utf-8"))


def render(name: str, **fields: object) -> str:
    """The template ``name`` with every ``$field`` filled (a missing field is an error)."""
    return template(name).substitute({k: str(v) for k, v in fields.items()}).strip()
