"""Which model a ``--llm-model`` value names: a GGUF file, or the folder ``collm-nas finetune`` writes (read
without transformers).

``--llm local --llm-model DIR`` names such a folder (or a bare ``.gguf``
file). :func:`find_model` tells which: the tuned ranker's ``ranker.json``
says which GGUF file to serve and how to ask it (the prompt style it was
trained on); a bare GGUF file is served as it is, asked in the full style.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collm_nas.core.errors import UserError

__all__ = ["MANIFEST", "RANKER_STYLES", "TunedRanker", "find_model"]

# How a ranker model is asked: "full" (the untuned prompt: the space described, the history as NCODE|reward
# lines) or "compact" (what `collm-nas finetune` trains on). The prompts themselves are the ranker role's
# (collm_nas.agents.ranker); a model file says which of them it expects.
RANKER_STYLES = ("full", "compact")

MANIFEST = "ranker.json"
GGUF_NAME = "ranker.gguf"  # where a fine-tune's GGUF file lies (written by us, or converted from merged/)
KIND = "collm-nas tuned ranker"


@dataclass
class TunedRanker:
    """What ``ranker.json`` holds."""

    gguf: str | None  # file name inside the folder (None: an HF base, not servable by llama.cpp yet)
    style: str = "compact"
    base: str = "local"
    top_k: int | None = None  # history lines of the style (None: the style's default)
    recent: int | None = None
    temperature: float | None = 0.0  # a ranker trained for the argmax is asked greedily (None: the role's)
    samples: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None
    steps: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    final_loss: float | None = None
    probe_loss: dict[str, Any] = field(default_factory=dict)  # answer loss on training samples, before / after
    folder: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("folder")
        return {"kind": KIND, "version": 1, **data}

    @property
    def gguf_path(self) -> Path | None:
        return (self.folder / self.gguf) if self.folder is not None and self.gguf else None


def _read_manifest(folder: Path) -> TunedRanker:
    where = folder / MANIFEST
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{where} is unreadable ({exc}); run `collm-nas finetune` again into a new --out") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise UserError(f"{where} is not a collm-nas tuned-ranker manifest; point --llm-model at a "
                        "`collm-nas finetune --out` folder or a .gguf file")
    known = {k: v for k, v in data.items() if k in TunedRanker.__dataclass_fields__ and k != "folder"}
    ranker = TunedRanker(**known, folder=folder)
    if ranker.style not in RANKER_STYLES:
        raise UserError(f"{where}: unknown prompt style {ranker.style!r}")
    if ranker.gguf is None and (folder / GGUF_NAME).is_file():
        ranker.gguf = GGUF_NAME  # a Hugging Face base's merged model, converted by the user as the hint said
    if ranker.gguf_path is None:
        raise UserError(f"{folder} has no GGUF model to serve (its base was a Hugging Face folder): convert "
                        f"{folder / 'merged'} with llama.cpp's convert_hf_to_gguf.py --outfile {folder / GGUF_NAME}, "
                        "or fine-tune from a GGUF base (--base local or --base FILE.gguf)")
    if not ranker.gguf_path.is_file():
        raise UserError(f"{folder}: its model file {ranker.gguf} is missing; run `collm-nas finetune` again "
                        "into a new --out")
    return ranker


def find_model(value: str | Path) -> TunedRanker:
    """The model ``--llm-model`` names for the local server: a tuned-ranker folder or a GGUF file."""
    path = Path(value).expanduser()
    if path.is_dir() and (path / MANIFEST).is_file():
        return _read_manifest(path.resolve())
    if path.is_file() and path.suffix == ".gguf":
        return TunedRanker(gguf=path.name, style="full", base=str(path), temperature=None,
                           folder=path.resolve().parent)
    raise UserError(f"--llm-model {value}: with --llm local give a `collm-nas finetune --out` folder "
                    "(it holds ranker.json) or a .gguf file")
