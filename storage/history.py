"""A run's trials as the strategies see them, read incrementally from the trial store."""

from __future__ import annotations

from collections.abc import Sequence

from collm_nas.core import Objective, Trial, TrialStore


class RunHistory:
    """One run's trials in evaluation order (the ``History`` protocol), refreshed from the store.

    ``refresh()`` reads only what was recorded since the last call, so the
    engine calls it freely; the best trial is kept by the run's objective.
    """

    def __init__(self, store: TrialStore, run_id: str, objective: Objective | str = "max") -> None:
        self.store = store
        self.run_id = run_id
        self.objective = objective if isinstance(objective, Objective) else Objective("value", objective)
        self._trials: list[Trial] = []
        self._by_code: dict[str, Trial] = {}
        self._by_round: dict[int, list[Trial]] = {}
        self._best: Trial | None = None
        self._last_seq = 0
        self.refresh()

    @property
    def mode(self) -> str:
        return self.objective.mode

    def refresh(self) -> "RunHistory":
        for t in self.store.trials(self.run_id, after_seq=self._last_seq):
            self._trials.append(t)
            self._by_code[t.ncode] = t
            self._by_round.setdefault(t.round, []).append(t)
            self._last_seq = t.seq
            if t.ok and self.objective.better(t, self._best):
                self._best = t
        return self

    def trials(self) -> Sequence[Trial]:
        return self._trials

    def __contains__(self, ncode: object) -> bool:
        return ncode in self._by_code

    def __len__(self) -> int:
        return len(self._trials)

    def get(self, ncode: str) -> Trial | None:
        return self._by_code.get(ncode)

    def best(self) -> Trial | None:
        return self._best

    def in_round(self, round_no: int) -> list[Trial]:
        return list(self._by_round.get(round_no, ()))
