"""The ranker's instruction-tuning samples as the fine-tune reads them, checked line by line.

A sample is one JSON object per line, as ``collm-nas export-trajectories``
writes it: ``messages`` (chat turns, the last one the assistant's answer),
``answer`` (the pool's truly best code), ``pool`` (``{code: value}``) and
``meta`` (run, step, space, ``code_length``...). Whatever is wrong with a
file is reported as one :class:`~collm_nas.core.errors.UserError` naming the
file, the line and the fix, before any model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collm_nas.core.errors import UserError

__all__ = ["Sample", "load_samples", "sample_from_dict"]

EXPORT_HINT = "write samples with `collm-nas export-trajectories RUN_ID... --out FILE.jsonl`"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Sample:
    """One ranking question and its true answer."""

    messages: tuple[tuple[str, str], ...]  # (role, content), the last one the assistant's answer
    answer: str
    pool: tuple[str, ...]
    group: str  # samples of one run share a group (the held-out split keeps groups whole)
    where: str = ""  # FILE:LINE, for messages
    values: dict[str, float | None] = field(default_factory=dict, compare=False)

    @property
    def prompt(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages[:-1]]

    @property
    def reply(self) -> str:
        return self.messages[-1][1]

    def key(self) -> str:
        """A stable text of the whole sample (for the fine-tune's data signature)."""
        return json.dumps([self.messages, self.answer, self.pool])


def _reply_names(reply: str, answer: str) -> bool:
    text = reply.strip()
    if text == answer:
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and str(data.get("code", "")).strip() == answer


def sample_from_dict(data: Any, where: str, group: str | None = None) -> Sample:
    """A :class:`Sample` from one decoded line, or a one-line UserError saying what is wrong at ``where``."""

    def bad(problem: str) -> UserError:
        return UserError(f"{where}: {problem}; {EXPORT_HINT}")

    if not isinstance(data, dict):
        raise bad(f"a sample must be a JSON object, got {type(data).__name__}")
    missing = [name for name in ("messages", "answer", "pool") if name not in data]
    if missing:
        raise bad(f"missing field(s) {', '.join(repr(m) for m in missing)} (a sample needs messages, answer, pool)")
    messages = data["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        raise bad("'messages' must be a list of at least two chat turns")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise bad(f"messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise bad(f"messages[{i}] has role {m['role']!r}; roles are {', '.join(ROLES)}")
        turns.append((m["role"], m["content"]))
    if turns[-1][0] != "assistant":
        raise bad("the last message must be the assistant's answer")
    answer, pool = data["answer"], data["pool"]
    if not isinstance(answer, str) or not answer:
        raise bad("'answer' must be a non-empty code string")
    if not isinstance(pool, dict) or len(pool) < 2:
        raise bad("'pool' must be an object {code: value} with at least two codes")
    codes = tuple(pool)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    length = meta.get("code_length")
    expected = length if isinstance(length, int) and length > 0 else len(answer)
    for code in (answer, *codes):
        if len(code) != expected:
            whose = f"the space's codes have {expected} (meta.code_length)" if expected == length \
                else f"the answer has {expected}"
            raise bad(f"code {code!r} has {len(code)} characters but {whose}")
    if answer not in pool:
        raise bad(f"the answer {answer!r} is not one of the pool's codes")
    if not _reply_names(turns[-1][1], answer):
        raise bad(f"the assistant's message does not give the answer {answer!r}")
    values: dict[str, float | None] = {}
    for code, value in pool.items():
        if value is not None and not isinstance(value, (int, float)):
            raise bad(f"pool value of {code!r} must be a number or null")
        values[code] = None if value is None else float(value)
    run = meta.get("run_id")
    return Sample(tuple(turns), answer, codes, group or (f"run:{run}" if run else where), where, values)


def _read(path: Path) -> Iterable[Sample]:
    if not path.is_file():
        raise UserError(f"data file {path} not found; {EXPORT_HINT}")
    lines = 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            lines += 1
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{where}: not JSON ({exc}); {EXPORT_HINT}") from None
            yield sample_from_dict(data, where)
    if lines == 0:
        raise UserError(f"data file {path} is empty; {EXPORT_HINT}")


def load_samples(paths: Sequence[str | Path]) -> list[Sample]:
    """Every sample of the JSON-lines files ``paths``, in order; the first problem raises a UserError."""
    samples: list[Sample] = []
    for path in paths:
        samples.extend(_read(Path(path)))
    return samples
