"""How the tools answer bad arguments: one line an LLM can act on (which argument, what is wrong)."""

from __future__ import annotations

from typing import Any


def validation_message(error: Any) -> str:
    """A tool's argument validation error as one line: ``invalid arguments: ncodes: Field required``."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        parts = []
        for err in errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
            parts.append(f"{where}: {err.get('msg')}")
        return "Error: invalid arguments: " + "; ".join(parts) + "; call the tool again with its documented arguments"
    return f"Error: invalid arguments: {' '.join(str(error).split())[:300]}"
