"""Zero-cost proxy scores of a whole space: a warm start for the learned ranker that costs no training
(``--prior proxy:naswot``).

What an untrained network's activations or gradients look like tells something about what it reaches once
trained. On NAS-Bench-201, NASWOT of the small network (C=8, N=1) on one minibatch of 32 digits images ranks
the 15,284 legal codes at Kendall tau 0.57 to 0.61 against the table's accuracies
(``benchmarks/surrogate_offline.py --variant features+naswot``), at about 0.04 s a network on one core.

Each network is scored once (one code per :meth:`SearchSpace.network_key`, 4,929 networks on NB201) and the
scores go to a cache file, one JSON line per network, appended as they are computed: an interrupted
computation goes on where it stopped, and every later run (any dataset, any seed) reads the file in well
under a second. The scores depend on nothing but the network and the fixed recipe below, so one cache
serves every run on the machine.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collm_nas.core import UserError
from collm_nas.evaluators.proxies import PROXIES, ProxyConfig

# The recipe of the prior's scores: small and fast, and as good a ranking as the benchmark's network.
PRIOR_RECIPE = ProxyConfig(channels=8, cells=1, batch_size=32, seed=0)
PRIOR_DATASET = "digits"
# Spaces whose networks the proxies can build.
PROXY_SPACES = ("nb201",)
# The cache file is flushed to disk after this many networks (what an interrupted computation can lose).
FLUSH_EVERY = 100


def cache_file(cache_dir: str | Path, space_name: str) -> Path:
    """Where the proxy scores of ``space_name``'s networks are kept (one recipe, one file)."""
    r = PRIOR_RECIPE
    name = f"{space_name}-c{r.channels}n{r.cells}b{r.batch_size}-{PRIOR_DATASET}-seed{r.seed}.jsonl"
    return Path(cache_dir).expanduser() / "proxy-prior" / name


def check_proxy(proxy: str, space_name: str) -> None:
    """One line when ``proxy:NAME`` cannot be a prior of this space."""
    if proxy not in PROXIES:
        raise UserError(f"unknown proxy '{proxy}' in --prior proxy:{proxy}; use one of "
                        f"{', '.join('proxy:' + p for p in PROXIES)}")
    if space_name not in PROXY_SPACES:
        raise UserError(f"--prior proxy:{proxy} scores NAS-Bench-201 networks (space nb201), not '{space_name}'; "
                        "use another run's id as the prior for your own space")


def _read(path: Path) -> dict[str, dict[str, float]]:
    """The scores computed so far, by network key; a line cut short by a killed process is skipped."""
    scores: dict[str, dict[str, float]] = {}
    if not path.exists():
        return scores
    with path.open() as fh:
        for line in fh:
            try:
                row = json.loads(line)
                scores[str(row["key"])] = {p: float(row[p]) for p in PROXIES}
            except (ValueError, KeyError, TypeError):
                continue  # the torn last line of an interrupted computation: recomputed below
    return scores


def space_proxy_scores(space: Any, codes: Sequence[str], path: str | Path, *,
                       say: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """The three proxies of each code's network (``{code: {proxy: score}}``), computed where the cache
    file ``path`` lacks them and appended to it."""
    path = Path(path)
    keys = {code: space.network_key(code) for code in codes}
    known = _read(path)
    todo: dict[str, str] = {}
    for code, key in keys.items():
        if key not in known:
            todo.setdefault(key, code)
    if todo:
        from collm_nas.evaluators.datasets import load_dataset
        from collm_nas.evaluators.proxies import proxy_scores

        if say is not None:
            done = len(set(keys.values())) - len(todo)
            say(f"prior: scoring {len(todo)} networks with zero-cost proxies (once for this machine; "
                f"{done} already in {path})")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = load_dataset(PRIOR_DATASET)
        started = time.perf_counter()
        with path.open("a") as fh:
            for i, (key, code) in enumerate(todo.items(), 1):
                scores = proxy_scores(code, data, PRIOR_RECIPE)
                known[key] = scores
                fh.write(json.dumps({"key": key, "code": code, **scores}) + "\n")
                if i % FLUSH_EVERY == 0 or i == len(todo):
                    fh.flush()
                    os.fsync(fh.fileno())
        if say is not None:
            say(f"prior: {len(todo)} networks scored in {time.perf_counter() - started:.0f} s")
    return {code: known[key] for code, key in keys.items()}


def proxy_prior(space: Any, codes: Sequence[str], proxy: str, cache_dir: str | Path, *,
                say: Callable[[str], None] | None = None) -> tuple[list[str], list[float]]:
    """``(codes, values)``: ``proxy`` of every code's network, higher is better; a score that is not finite
    (a network whose activations vanish) is taken as the lowest finite one."""
    check_proxy(proxy, space.name)
    codes = list(codes)
    scores = space_proxy_scores(space, codes, cache_file(cache_dir, space.name), say=say)
    values = [scores[code][proxy] for code in codes]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        raise UserError(f"--prior proxy:{proxy}: no network of space '{space.name}' has a finite {proxy} score; "
                        "pick another proxy")
    floor = min(finite)
    return codes, [v if math.isfinite(v) else floor for v in values]
