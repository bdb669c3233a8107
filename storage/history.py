"""A run's trials as the strategies see them, read incrementally from the trial store."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from collm_nas.core import Objective, Trial, TrialStore


class RunHistory:
    """One run's trials in evaluation order (the ``History`` protocol), refreshed from the store.

    ``refresh()`` reads only what was recorded since the last call, so the
    engine calls it freely; the best trial is kept by the run's objective.

    With ``network_key`` (the space's, where one network has several codes and the run evaluates each
    network once) a code is *in* the history when any code of its network was evaluated:
    every ``code in history`` test (the Coordinator's screening, ``is_new_and_legal``, the samplers) then
    skips it, and :meth:`same_network` names the trial that stands for it.
    """

    def __init__(self, store: TrialStore, run_id: str, objective: Objective | str = "max",
                 network_key: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.objective = objective if isinstance(objective, Objective) else Objective("value", objective)
        self._trials: list[Trial] = []
        self._by_code: dict[str, Trial] = {}
        self.network_key = network_key
        self._by_network: dict[str, Trial] = {}  # network key -> its first evaluated trial
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
            if self.network_key is not None:
                self._by_network.setdefault(self.network_key(t.ncode), t)
            self._by_round.setdefault(t.round, []).append(t)
            self._last_seq = t.seq
            if t.ok and self.objective.better(t, self._best):
                self._best = t
        return self

    def trials(self) -> Sequence[Trial]:
        return self._trials

    def __contains__(self, ncode: object) -> bool:
        return ncode in self._by_code or (self.network_key is not None and isinstance(ncode, str)
                                          and self.network_key(ncode) in self._by_network)

    def same_network(self, ncode: str) -> Trial | None:
        """The evaluated trial of another code of ``ncode``'s network (None: none, or ``ncode`` itself was
        evaluated, or the run evaluates every code)."""
        if self.network_key is None or ncode in self._by_code:
            return None
        return self._by_network.get(self.network_key(ncode))

    def __len__(self) -> int:
        return len(self._trials)

    def get(self, ncode: str) -> Trial | None:
        return self._by_code.get(ncode)

    def best(self) -> Trial | None:
        return self._best

    def in_round(self, round_no: int) -> list[Trial]:
        return list(self._by_round.get(round_no, ()))
