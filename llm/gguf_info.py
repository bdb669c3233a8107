"""What a GGUF model file says about itself, read from its header without loading the model.

The local server takes any chat model in GGUF form (``--llm local --llm-model FILE.gguf``); its settings come
from the file: the context it was trained for (``<arch>.context_length``), its name, its size, and whether it
carries a chat template (``tokenizer.chat_template``, which llama.cpp's server applies). Only the key-value
header is read; large arrays (the vocabulary) are skipped, so this takes milliseconds even for a 1 GB file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from collm_nas.core.errors import UserError

__all__ = ["GGUFInfo", "read_gguf_info"]

_MAGIC = b"GGUF"
# GGUF value types: struct format of the scalars; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this are skipped, not kept (the vocabulary, merges, scores).
_KEEP_ARRAY = 64


@dataclass(frozen=True)
class GGUFInfo:
    """The header facts of one GGUF file."""

    path: Path
    architecture: str
    name: str
    context_length: int | None
    layers: int | None
    embedding: int | None
    has_chat_template: bool
    size_bytes: int
    values: dict[str, Any] = field(default_factory=dict, repr=False)  # every scalar and short array read

    @property
    def label(self) -> str:
        """A short name for the model: its ``general.name``, else the file's stem."""
        return self.name or self.path.stem


class _Reader:
    def __init__(self, handle: BinaryIO, where: Path) -> None:
        self.handle = handle
        self.where = where

    def take(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise UserError(f"{self.where} is not a whole GGUF file (it ends inside its header); "
                            "download or build it again")
        return data

    def scalar(self, kind: int) -> Any:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        (length,) = struct.unpack("<Q", self.take(8))
        return self.take(length).decode("utf-8", "replace")

    def skip_string(self) -> None:
        (length,) = struct.unpack("<Q", self.take(8))
        self.handle.seek(length, 1)

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            (item_kind,) = struct.unpack("<I", self.take(4))
            (count,) = struct.unpack("<Q", self.take(8))
            if count <= _KEEP_ARRAY:
                return [self.value(item_kind) for _ in range(count)]
            if item_kind in _SCALARS:
                self.handle.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
            elif item_kind == _STRING:
                for _ in range(count):
                    self.skip_string()
            else:
                for _ in range(count):
                    self.value(item_kind)
            return None
        raise UserError(f"{self.where}: unknown GGUF value type {kind}; is it a GGUF file of a newer format?")


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """The header of the GGUF file at ``path``; a one-line UserError when it is missing or not GGUF."""
    where = Path(path).expanduser()
    if not where.is_file():
        raise UserError(f"model file not found: {where}")
    with open(where, "rb") as handle:
        reader = _Reader(handle, where)
        if handle.read(4) != _MAGIC:
            raise UserError(f"{where} is not a GGUF model file (llama.cpp serves GGUF files: convert the model "
                            "with llama.cpp's convert_hf_to_gguf.py)")
        version = reader.scalar(4)
        if version < 2:
            raise UserError(f"{where} is a GGUF file of version {version}; convert it again with a current "
                            "llama.cpp")
        reader.scalar(10)  # tensor count
        n_values = reader.scalar(10)
        values: dict[str, Any] = {}
        has_template = False
        for _ in range(n_values):
            key = reader.string()
            (kind,) = struct.unpack("<I", reader.take(4))
            value = reader.value(kind)
            if key == "tokenizer.chat_template":
                has_template = bool(value)
                continue  # a long Jinja text: its presence is what matters
            if value is not None:
                values[key] = value
    arch = str(values.get("general.architecture") or "")

    def number(suffix: str) -> int | None:
        found = values.get(f"{arch}.{suffix}")
        return int(found) if isinstance(found, (int, float)) else None

    return GGUFInfo(path=where.resolve(), architecture=arch, name=str(values.get("general.name") or ""),
                    context_length=number("context_length"), layers=number("block_count"),
                    embedding=number("embedding_length"), has_chat_template=has_template,
                    size_bytes=where.stat().st_size, values=values)
