"""The GGUF header reader: the facts the local server takes from a model file, and one-line refusals."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from collm_nas.llm.gguf_info import read_gguf_info
from collm_nas.core.errors import UserError


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _kv(key: str, kind: int, payload: bytes) -> bytes:
    return _string(key) + struct.pack("<I", kind) + payload


def write_gguf(path: Path, *, template: bool = True, vocab: int = 1000) -> Path:
    """A GGUF header as llama.cpp writes it: scalars, strings, a long string array (the vocabulary)."""
    values = [
        _kv("general.architecture", 8, _string("qwen2")),
        _kv("general.name", 8, _string("Tiny Test Model")),
        _kv("qwen2.context_length", 4, struct.pack("<I", 32768)),
        _kv("qwen2.block_count", 4, struct.pack("<I", 28)),
        _kv("qwen2.embedding_length", 4, struct.pack("<I", 1536)),
        _kv("general.languages", 9, struct.pack("<IQ", 8, 2) + _string("en") + _string("de")),
        _kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, vocab) + b"".join(_string(f"t{i}") for i in range(vocab))),
        _kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, vocab) + struct.pack(f"<{vocab}f", *range(vocab))),
    ]
    if template:
        values.append(_kv("tokenizer.chat_template", 8, _string("{% for m in messages %}{{ m.content }}{% endfor %}")))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(values)) + b"".join(values))
    return path


def test_the_header_gives_context_name_size_and_template(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf"))
    assert (info.architecture, info.name, info.context_length, info.layers, info.embedding) == (
        "qwen2", "Tiny Test Model", 32768, 28, 1536)
    assert info.has_chat_template and info.label == "Tiny Test Model"
    assert info.values["general.languages"] == ["en", "de"]  # short arrays are kept
    assert "tokenizer.ggml.tokens" not in info.values  # the vocabulary is skipped, not read into memory


def test_a_model_without_chat_template_says_so(tmp_path: Path) -> None:
    assert not read_gguf_info(write_gguf(tmp_path / "base.gguf", template=False)).has_chat_template


@pytest.mark.parametrize("content, words", [
    (b"PK\x03\x04 a zip file", "is not a GGUF model file"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 5) + _string("general.name"), "is not a whole GGUF file"),
])
def test_files_that_are_not_whole_gguf_are_refused_in_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=words) as caught:
        read_gguf_info(bad)
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model file not found"):
        read_gguf_info(tmp_path / "absent.gguf")
