"""A fixed list of architectures as a strategy: ``--strategy codes:PATH``.

Evaluates the codes of a text file in the file's order, skipping those the
run has already evaluated (so a resumed run picks up where it stopped and
never repeats a network) and those that are illegal (constraints, a table
that lacks them). The file holds one architecture per line, as an NCode or,
for spaces that parse them (NAS-Bench-201), as the benchmark's own string;
blank lines and ``#`` comments are ignored. The file is read again on resume:
keep it unchanged while its run is unfinished. Give ``--budget`` at most the
list's length: past the list's end the Coordinator tops the batch up with the
LLM-free fallback, as it does for every short batch.

Used to build ground-truth tables (``benchmarks/fmnist_ground_truth.py``) and
to re-evaluate a known set of architectures with another evaluator.
"""

from __future__ import annotations

from pathlib import Path

from collm_nas.core.errors import UserError
from collm_nas.core.space import SearchSpace
from collm_nas.core.strategy import Generator, Navigator, RoundContext, SearchStrategy, Strategy

PREFIX = "codes:"


def read_codes_file(path: str | Path, space: SearchSpace | None = None) -> list[str]:
    """The architectures of ``path`` in order, duplicates dropped; NB201 strings turned into NCodes."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"codes file '{p}' not found; give --strategy codes:PATH with one NCode per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read codes file '{p}' ({e}); give a UTF-8 text file with one NCode per line") \
            from None
    codes: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if space is not None:
            if text.startswith("|") and hasattr(space, "parse_arch"):
                try:
                    text = space.parse_arch(text)
                except UserError as e:
                    raise UserError(f"codes file '{p}' line {lineno}: {e}") from None
            problems = space.format_problems(text)
            if problems:
                raise UserError(f"codes file '{p}' line {lineno}: '{text}' is no {space.name} NCode "
                                f"({problems[0].message})")
        codes.append(text)
    codes = list(dict.fromkeys(codes))
    if not codes:
        raise UserError(f"codes file '{p}' lists no architecture; write one NCode per line")
    return codes


class CodesListNavigator(Navigator):
    multi_objective = True  # the list is what it is, whatever the objectives

    def __init__(self, path: str) -> None:
        self.path = path

    def navigate(self, ctx: RoundContext) -> Strategy:
        return Strategy(summary=f"evaluate the next architectures of the list in {Path(self.path).name}",
                        plan={"phase": "list"})


class CodesListGenerator(Generator):
    def __init__(self, path: str) -> None:
        self.path = path
        self._codes: list[str] | None = None

    def codes(self, space: SearchSpace) -> list[str]:
        if self._codes is None:
            self._codes = read_codes_file(self.path, space)
        return self._codes

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        out: list[str] = []
        networks: set[str] = set()  # one code per network (where the run evaluates each network once)
        for code in self.codes(ctx.space):
            if len(out) >= n:
                break
            if code not in out and ctx.is_new_and_legal(code) and ctx.network_key(code) not in networks:
                networks.add(ctx.network_key(code))
                out.append(code)
        return out


def codes_list(path: str | Path, batch_size: int = 1) -> SearchStrategy:
    """The strategy that evaluates the architectures listed in ``path`` in order."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"codes file '{p}' not found; give --strategy codes:PATH with one NCode per line")
    return SearchStrategy(f"{PREFIX}{path}", CodesListNavigator(str(p)), CodesListGenerator(str(p)), batch_size,
                          f"the architectures listed in {p}, in order")


def find_codes_strategy(name: str) -> SearchStrategy | None:
    """``codes:PATH`` for the strategy registry (None for other names)."""
    if not name.startswith(PREFIX) or not name[len(PREFIX):]:
        return None
    return codes_list(name[len(PREFIX):])
