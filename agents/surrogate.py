"""A learned ranker for LLM-free search (the LM-Searcher-style surrogate).

The ranker is a Gaussian process over NCodes, fitted online on the run's
own trials:

* inputs are the categorical decisions of the code (one category per option,
  plus an "inactive" category for decisions switched off in conditional
  spaces) and, optionally, a few continuous columns: the space's own
  features of the architecture (``SearchSpace.features``; NAS-Bench-201's
  are the live-edge shares of its operations), scaled to [0, 1] over the
  space, and the prediction of a *prior* learned from other runs;
* the kernel is an exponentiated Hamming kernel with one relevance weight per
  decision (ARD), which contains every order of interaction between
  decisions, times a squared-exponential kernel on the continuous columns
  (one relevance weight each), plus a constant term and a linear term in
  every continuous column (a learned linear mean function: "more 3x3
  convolutions on live edges help" is learnt from a few trials and applies
  to every code at once);
* targets are rank-gaussianised (or standardised), hyperparameters are set by
  Adam steps on the log marginal likelihood (120 from a fixed start for a new
  ranker, so a fit depends on the trials only; a few more, warm-started, for
  each further fit of the same ranker);
* acquisition: expected improvement, upper confidence bound or the mean.

:func:`featurize` gives the explicit one-hot (and pairwise) features of any
space; the prior model (a ridge regression on those features) uses them.
Everything is torch on the CPU; no other dependency.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from functools import lru_cache

import torch

from collm_nas.core.space import NCODE_ALPHABET, SearchSpace

__all__ = ["featurize", "LearnedRanker", "PriorModel"]

_DTYPE = torch.float64
_LUT = torch.full((256,), -1, dtype=torch.long)
for _i, _c in enumerate(NCODE_ALPHABET):
    _LUT[ord(_c)] = _i
    _LUT[ord(_c.upper())] = _i


# ---------------------------------------------------------------- features
def _index_matrix(space: SearchSpace, codes: Sequence[str]) -> torch.Tensor:
    """(n, L) option indices; inactive decisions of conditional spaces get index ``len(options)``."""
    L = space.length
    if not codes:
        return torch.zeros((0, L), dtype=torch.long)
    raw = "".join(codes).encode("ascii")
    if len(raw) != L * len(codes):
        bad = next(c for c in codes if len(c) != L)
        raise ValueError(f"code '{bad}' has length {len(bad)}; the space '{space.name}' needs {L}")
    idx = _LUT[torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()].view(len(codes), L)
    limits = torch.tensor([len(d.options) for d in space.decisions])
    bad_rows = ((idx < 0) | (idx >= limits)).any(1)
    if bad_rows.any():
        bad = codes[int(torch.nonzero(bad_rows)[0])]
        raise ValueError(f"code '{bad}' is not an NCode of the space '{space.name}'")
    if space.has_conditions:
        idx = idx.clone()
        for r, code in enumerate(codes):
            ind = idx[r].tolist()
            for pos in range(L):
                if not space.is_active(pos, ind):
                    idx[r, pos] = len(space.decisions[pos].options)
    return idx


def _sizes(space: SearchSpace) -> list[int]:
    """Categories per decision (options, plus one "inactive" slot when the decision is conditional)."""
    return [len(d.options) + (1 if d.active_if else 0) for d in space.decisions]


def featurize(
    space: SearchSpace, codes: Sequence[str], pairwise: bool = False, hook: bool = True
) -> torch.Tensor:
    """Explicit features of ``codes`` in ``space``: an (n, d) float tensor.

    One-hot per decision (an inactive decision of a conditional space has an
    all-zero block), optionally followed by one-hot features of every pair of
    decisions (the joint option of the pair), and by the space's own
    ``features(codes)`` when the space provides that hook.
    """
    idx = _index_matrix(space, codes)
    n = idx.shape[0]
    blocks: list[torch.Tensor] = []
    opts = [len(d.options) for d in space.decisions]
    active = [idx[:, p] < opts[p] for p in range(space.length)]
    for p, k in enumerate(opts):
        block = torch.zeros((n, k), dtype=_DTYPE)
        rows = torch.nonzero(active[p]).flatten()
        block[rows, idx[rows, p]] = 1.0
        blocks.append(block)
    if pairwise:
        for p in range(space.length):
            for q in range(p + 1, space.length):
                block = torch.zeros((n, opts[p] * opts[q]), dtype=_DTYPE)
                rows = torch.nonzero(active[p] & active[q]).flatten()
                block[rows, idx[rows, p] * opts[q] + idx[rows, q]] = 1.0
                blocks.append(block)
    if hook and space.provides_features:
        extra = torch.as_tensor(space.features(list(codes)), dtype=_DTYPE).reshape(n, -1)
        blocks.append(extra)
    return torch.cat(blocks, dim=1) if blocks else torch.zeros((n, 0), dtype=_DTYPE)


def _gaussianise(values: torch.Tensor) -> torch.Tensor:
    """Rank-based normal scores (ties share their mean rank)."""
    n = values.numel()
    if n == 0:
        return values.clone()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty(n, dtype=_DTYPE)
    ranks[order] = torch.arange(n, dtype=_DTYPE)
    # average ties
    uniq, inv = torch.unique(values, return_inverse=True)
    if uniq.numel() < n:
        sums = torch.zeros(uniq.numel(), dtype=_DTYPE).index_add_(0, inv, ranks)
        counts = torch.zeros(uniq.numel(), dtype=_DTYPE).index_add_(0, inv, torch.ones(n, dtype=_DTYPE))
        ranks = (sums / counts)[inv]
    u = (ranks + 0.5) / n
    return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)


def _standardise(values: torch.Tensor) -> torch.Tensor:
    if values.numel() < 2:
        return values - values.mean() if values.numel() else values.clone()
    sd = values.std()
    return (values - values.mean()) / (sd if sd > 0 else 1.0)


# Spaces with at most this many codes get their feature ranges from every code, larger ones from a sample.
_RANGE_ENUMERATE_LIMIT = 20_000
_RANGE_SAMPLE = 2048


def _hook_features(space: SearchSpace, codes: Sequence[str]) -> torch.Tensor:
    return torch.as_tensor(space.features(list(codes)), dtype=_DTYPE).reshape(len(codes), -1)


@lru_cache(maxsize=16)
def _feature_range(space: SearchSpace) -> tuple[torch.Tensor, torch.Tensor]:
    """Low end and span of each of the space's own features, over the space (or a seeded sample of it)."""
    if space.size_bound() <= _RANGE_ENUMERATE_LIMIT:
        codes = list(space.enumerate())
    else:
        rng = random.Random(0)
        codes = list(dict.fromkeys(space.sample(rng) for _ in range(_RANGE_SAMPLE)))
    values = _hook_features(space, codes)
    low, high = values.min(0).values, values.max(0).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return low, span


# ------------------------------------------------------------------- prior
class PriorModel:
    """Predicts, for any code, what another run/dataset said about it.

    Observed codes answer with their (rank-gaussianised) observed value;
    other codes with a ridge regression on one-hot + pairwise features
    fitted on the prior's trials. Higher always means better (``mode``).
    """

    def __init__(self, space: SearchSpace, codes: Sequence[str], values: Sequence[float], mode: str = "max",
                 name: str = "prior", ridge: float = 1.0) -> None:
        pairs = [(c, float(v)) for c, v in zip(codes, values) if v is not None and math.isfinite(float(v))]
        if not pairs:
            raise ValueError(f"prior '{name}' holds no finite values")
        self.space, self.name, self.size = space, name, len(pairs)
        y = torch.tensor([v for _, v in pairs], dtype=_DTYPE)
        if mode == "min":
            y = -y
        self.raw = {c: float(v) for (c, _), v in zip(pairs, y.tolist())}
        z = _gaussianise(y)
        self.observed = {c: float(v) for (c, _), v in zip(pairs, z.tolist())}
        X = featurize(space, [c for c, _ in pairs], pairwise=True, hook=False)
        A = X.T @ X + ridge * torch.eye(X.shape[1], dtype=_DTYPE)
        self.weights = torch.linalg.solve(A, X.T @ z)
        self._cache: dict[str, float] = {}

    def predict(self, codes: Sequence[str]) -> torch.Tensor:
        out = torch.empty(len(codes), dtype=_DTYPE)
        missing: list[int] = []
        for i, c in enumerate(codes):
            v = self.observed.get(c)
            if v is None:
                v = self._cache.get(c)
            if v is None:
                missing.append(i)
            else:
                out[i] = v
        if missing:
            miss_codes = [codes[i] for i in missing]
            pred = featurize(self.space, miss_codes, pairwise=True, hook=False) @ self.weights
            out[missing] = pred
            if len(self._cache) < 200_000:
                self._cache.update(zip(miss_codes, pred.tolist()))
        return out


# ------------------------------------------------------------------ ranker
class LearnedRanker:
    """Gaussian-process ranker of NCodes, fitted on the run's own trials.

    ``prior``: a list of ``(codes, values)`` (or ``(name, codes, values)``)
    from OTHER runs or datasets -- never the target's own results -- used as
    an extra input and as a learned linear mean.
    """

    def __init__(
        self,
        space: SearchSpace,
        mode: str = "max",
        acquisition: str = "ei",
        prior: Sequence[tuple] | None = None,
        prior_mode: str | None = None,
        seed: int = 0,
        beta: float = 2.0,
        xi: float = 0.0,
        transform: str = "rank",
        fit_steps: int = 120,
        refit_steps: int = 12,
        use_hook: bool = True,
        max_fit_points: int = 200,
        max_var_flops: float = 3e9,
        theta0: float = 0.3,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        if acquisition not in ("ei", "ucb", "mean"):
            raise ValueError("acquisition must be 'ei', 'ucb' or 'mean'")
        if transform not in ("rank", "standard"):
            raise ValueError("transform must be 'rank' or 'standard'")
        self.space, self.mode, self.acquisition = space, mode, acquisition
        self.seed, self.beta, self.xi, self.transform = seed, beta, xi, transform
        self.fit_steps, self.refit_steps = fit_steps, refit_steps
        self.max_fit_points, self.max_var_flops = max_fit_points, max_var_flops
        self.theta0 = theta0
        self.use_hook = use_hook and space.provides_features
        if self.use_hook:
            self._hook_low, self._hook_span = _feature_range(space)
        self.priors: list[PriorModel] = []
        for i, entry in enumerate(prior or ()):
            if isinstance(entry, PriorModel):  # built once, reused round after round
                self.priors.append(entry)
                continue
            if len(entry) == 3:
                name, codes, values = entry
            else:
                (codes, values), name = entry, f"prior{i + 1}"
            self.priors.append(PriorModel(space, list(codes), list(values), prior_mode or mode, name=str(name)))
        self._sizes = _sizes(space)
        self._offsets = torch.tensor([0] + list(itertools.accumulate(self._sizes))[:-1], dtype=torch.long)
        self._width = sum(self._sizes)
        self._params: dict[str, torch.Tensor] | None = None
        self._codes: list[str] = []
        self.trials = 0

    # -------------------------------------------------------------- inputs
    def _onehot(self, codes: Sequence[str]) -> torch.Tensor:
        idx = _index_matrix(self.space, codes) + self._offsets
        out = torch.zeros((len(codes), self._width), dtype=_DTYPE)
        out.scatter_(1, idx, 1.0)
        return out

    def _extra(self, codes: Sequence[str]) -> torch.Tensor:
        cols = [p.predict(codes).unsqueeze(1) for p in self.priors]
        if self.use_hook:
            cols.append((_hook_features(self.space, codes) - self._hook_low) / self._hook_span)
        return torch.cat(cols, dim=1) if cols else torch.zeros((len(codes), 0), dtype=_DTYPE)

    @property
    def _n_prior(self) -> int:
        return len(self.priors)

    # -------------------------------------------------------------- kernel
    def _kernel(self, p: dict, H1, F1, H2, F2, diag: bool = False) -> torch.Tensor:
        theta = torch.exp(p["log_theta"])  # per decision
        w = theta.repeat_interleave(torch.tensor(self._sizes))
        if diag:
            out = torch.full((H1.shape[0],), float(torch.exp(p["log_const"]) + torch.exp(p["log_amp"])), dtype=_DTYPE)
            if F1.shape[1]:
                out = out + (F1 ** 2) @ torch.exp(p["log_lin"])
            return out
        dist = theta.sum() - (H1 * w) @ H2.T  # weighted number of mismatches
        lin = 0.0
        if F1.shape[1]:
            phi = torch.exp(p["log_phi"])
            a, b = F1 * phi.sqrt(), F2 * phi.sqrt()
            dist = dist + (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T
            lin = (F1 * torch.exp(p["log_lin"])) @ F2.T
        return torch.exp(p["log_const"]) + lin + torch.exp(p["log_amp"]) * torch.exp(-dist.clamp_min(0.0))

    @torch.no_grad()
    def _cross(self, p: dict, H: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
        """k(codes, trials) without autograd, in place (the scoring hot path)."""
        theta = torch.exp(p["log_theta"])
        w = theta.repeat_interleave(torch.tensor(self._sizes))
        K = (H * w) @ self._H.T  # weighted matches
        K.sub_(float(theta.sum()))  # minus all weights = -weighted mismatches
        if F.shape[1]:
            phi = torch.exp(p["log_phi"]).sqrt()
            a, b = F * phi, self._F * phi
            K.addmm_(a, b.T, alpha=2.0)
            K.sub_((a * a).sum(1, keepdim=True)).sub_((b * b).sum(1))
        K.clamp_(max=0.0).exp_().mul_(float(torch.exp(p["log_amp"]))).add_(float(torch.exp(p["log_const"])))
        if F.shape[1]:
            K.addmm_(F * torch.exp(p["log_lin"]), self._F.T)
        return K

    def _init_params(self, q: int) -> dict[str, torch.Tensor]:
        L = self.space.length
        return {
            "log_theta": torch.full((L,), math.log(self.theta0), dtype=_DTYPE),
            "log_phi": torch.full((q,), math.log(0.5), dtype=_DTYPE),
            "log_lin": torch.full((q,), math.log(0.5), dtype=_DTYPE),
            "log_const": torch.tensor(math.log(0.1), dtype=_DTYPE),
            "log_amp": torch.tensor(0.0, dtype=_DTYPE),
            "log_noise": torch.tensor(math.log(0.05), dtype=_DTYPE),
        }

    def _gram_parts(self, H: torch.Tensor, F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the training kernel is made of, once per fit: per decision, whether two trials differ there
        (n, n, L); per continuous column, their squared difference and their product (n, n, q) each. The kernel
        is then a few contractions with the hyperparameters, cheap to differentiate step after step."""
        blocks = torch.split(H, self._sizes, dim=1)
        mismatch = torch.stack([1.0 - b @ b.T for b in blocks], dim=2)
        diff = (F.unsqueeze(1) - F.unsqueeze(0)) ** 2
        prod = F.unsqueeze(1) * F.unsqueeze(0)
        return mismatch, diff, prod

    def _nll(self, p, parts, y) -> torch.Tensor:
        n = y.numel()
        mismatch, diff, prod = parts
        dist = mismatch @ torch.exp(p["log_theta"])
        K = torch.exp(p["log_const"])
        if diff.shape[2]:
            dist = dist + diff @ torch.exp(p["log_phi"])
            K = K + prod @ torch.exp(p["log_lin"])
        K = K + torch.exp(p["log_amp"]) * torch.exp(-dist)
        K = K + (torch.exp(p["log_noise"]) + 1e-6) * torch.eye(n, dtype=_DTYPE)
        Lc = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(1), Lc)
        nll = 0.5 * (y.unsqueeze(1) * alpha).sum() + torch.log(torch.diagonal(Lc)).sum()
        # weak log-normal hyperpriors keep tiny data sets sane
        reg = 0.5 * ((p["log_theta"] - math.log(self.theta0)) ** 2).sum() / 4.0
        reg = reg + 0.5 * ((p["log_noise"] - math.log(0.05)) ** 2) / 4.0
        reg = reg + 0.5 * (p["log_amp"] ** 2) / 4.0
        if p["log_phi"].numel():
            reg = reg + 0.5 * ((p["log_phi"] - math.log(0.5)) ** 2).sum() / 4.0
        return (nll + reg) / n

    @torch.no_grad()
    def _nll_and_grad(self, p, parts, y) -> tuple[float, dict[str, torch.Tensor]]:
        """:meth:`_nll` and its gradient in closed form (what a fit's every step needs; autograd through the
        Cholesky factor costs several times more at these sizes). With ``G = (K^-1 - a a^T) / 2`` the
        derivative along any kernel hyperparameter is the sum of ``G`` times that derivative of ``K``."""
        n = y.numel()
        mismatch, diff, prod = parts
        theta, phi, lin = torch.exp(p["log_theta"]), torch.exp(p["log_phi"]), torch.exp(p["log_lin"])
        const, amp, noise = torch.exp(p["log_const"]), torch.exp(p["log_amp"]), torch.exp(p["log_noise"])
        dist = mismatch @ theta
        if diff.shape[2]:
            dist = dist + diff @ phi
        E = torch.exp(-dist)
        K = const + amp * E
        if diff.shape[2]:
            K = K + prod @ lin
        K = K + (noise + 1e-6) * torch.eye(n, dtype=_DTYPE)
        Lc = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(1), Lc)
        nll = 0.5 * float((y.unsqueeze(1) * alpha).sum()) + float(torch.log(torch.diagonal(Lc)).sum())
        G = 0.5 * (torch.cholesky_inverse(Lc) - alpha @ alpha.T)
        GE = G * E * amp
        t0, n0 = math.log(self.theta0), math.log(0.05)
        grads = {
            "log_theta": -(GE.unsqueeze(2) * mismatch).sum((0, 1)) * theta + (p["log_theta"] - t0) / 4.0,
            "log_phi": -(GE.unsqueeze(2) * diff).sum((0, 1)) * phi + (p["log_phi"] - math.log(0.5)) / 4.0,
            "log_lin": (G.unsqueeze(2) * prod).sum((0, 1)) * lin,
            "log_const": G.sum() * const,
            "log_amp": GE.sum() + p["log_amp"] / 4.0,
            "log_noise": torch.diagonal(G).sum() * noise + (p["log_noise"] - n0) / 4.0,
        }
        reg = 0.5 * float(((p["log_theta"] - t0) ** 2).sum() + (p["log_noise"] - n0) ** 2 + p["log_amp"] ** 2) / 4.0
        reg += 0.5 * float(((p["log_phi"] - math.log(0.5)) ** 2).sum()) / 4.0
        return (nll + reg) / n, {k: g / n for k, g in grads.items()}

    # ------------------------------------------------------------------ API
    def fit(self, codes: Sequence[str], values: Sequence[float]) -> LearnedRanker:
        """Fit on the run's trials (failed ones, value None/NaN, are skipped)."""
        pairs = [(c, float(v)) for c, v in zip(codes, values) if v is not None and math.isfinite(float(v))]
        # the last value wins for a repeated code
        merged: dict[str, float] = {}
        for c, v in pairs:
            merged[c] = v
        self._codes = list(merged)
        self.trials = len(self._codes)
        if not self._codes:
            self._y = torch.zeros(0, dtype=_DTYPE)
            return self
        y = torch.tensor(list(merged.values()), dtype=_DTYPE)
        if self.mode == "min":
            y = -y
        self._guard_prior(self._codes, y)
        self._y = _gaussianise(y) if self.transform == "rank" else _standardise(y)
        self._H = self._onehot(self._codes)
        self._F = self._extra(self._codes)
        q = self._F.shape[1]
        if self._params is None or self._params["log_phi"].numel() != q or self._params["log_lin"].numel() != q:
            self._params = self._init_params(q)
            steps = self.fit_steps
        else:
            steps = self.refit_steps
        if self.trials >= 3 and steps > 0:
            self._optimise(steps)
        self._factor()
        return self

    def fit_trials(self, trials: Sequence) -> LearnedRanker:
        """Fit on :class:`~collm_nas.core.strategy.Trial` records (only the ``ok`` ones count)."""
        good = [t for t in trials if getattr(t, "ok", False)]
        return self.fit([t.ncode for t in good], [t.value for t in good])

    def _guard_prior(self, codes: list[str], y: torch.Tensor) -> None:
        """Refuse a prior that simply replays the target's own results."""
        vals = y.tolist()
        for prior in self.priors:
            shared = [(prior.raw[c], v) for c, v in zip(codes, vals) if c in prior.raw]
            if len(shared) >= 5 and all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in shared):
                raise ValueError(
                    f"prior '{prior.name}' reproduces the target's own results; a prior must come from other runs"
                )

    def _optimise(self, steps: int) -> None:
        H, F, y = self._H, self._F, self._y
        if self.trials > self.max_fit_points:
            # hyperparameters from a subset: the best quarter plus a seeded random rest
            order = torch.argsort(y, descending=True).tolist()
            keep = order[: self.max_fit_points // 4]
            rest = order[self.max_fit_points // 4:]
            keep += random.Random(self.seed).sample(rest, self.max_fit_points - len(keep))
            H, F, y = H[keep], F[keep], y[keep]
        parts = self._gram_parts(H, F)
        # All hyperparameters in one vector: one Adam update a step instead of one per kind.
        names = list(self._params)
        sizes = [self._params[k].numel() for k in names]
        shapes = [self._params[k].shape for k in names]
        flat = torch.cat([self._params[k].detach().reshape(-1) for k in names]).clone()
        noise_at = sum(sizes[: names.index("log_noise")])
        theta_at = sum(sizes[: names.index("log_theta")])
        theta_end = theta_at + sizes[names.index("log_theta")]

        def unpack(vector: torch.Tensor) -> dict[str, torch.Tensor]:
            return {k: part.reshape(shape) for k, part, shape in zip(names, torch.split(vector, sizes), shapes)}

        opt = torch.optim.Adam([flat], lr=0.1)
        best, best_loss = flat.clone(), float("inf")
        for _ in range(steps):
            try:
                loss, grads = self._nll_and_grad(unpack(flat), parts, y)
            except RuntimeError:  # not positive definite: stop here
                break
            if loss < best_loss:
                best_loss = loss
                best = flat.clone()
            flat.grad = torch.cat([grads[k].reshape(-1) for k in names])
            opt.step()
            with torch.no_grad():
                flat[noise_at].clamp_(math.log(1e-4), math.log(2.0))
                flat[theta_at:theta_end].clamp_(math.log(1e-3), math.log(20.0))
        best = unpack(best)
        self._params = best

    def _factor(self) -> None:
        p = self._params
        K = self._kernel(p, self._H, self._F, self._H, self._F)
        noise = float(torch.exp(p["log_noise"])) + 1e-6
        eye = torch.eye(self.trials, dtype=_DTYPE)
        for jitter in (0.0, 1e-4, 1e-2, 1e-1):
            try:
                self._L = torch.linalg.cholesky(K + (noise + jitter) * eye)
                break
            except RuntimeError:
                continue
        self._alpha = torch.cholesky_solve(self._y.unsqueeze(1), self._L).squeeze(1)
        self._Linv = torch.linalg.solve_triangular(self._L, eye, upper=False).to(torch.float32)

    def predict(self, codes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation (transformed scale, higher = better)."""
        codes = list(codes)
        m = len(codes)
        if not self.trials:
            F = self._extra(codes)
            mean = F[:, : self._n_prior].mean(1) if self._n_prior else torch.zeros(m, dtype=_DTYPE)
            return mean, torch.ones(m, dtype=_DTYPE)
        p = self._params
        H, F = self._onehot(codes), self._extra(codes)
        Ks = self._cross(p, H, F)
        mean = Ks @ self._alpha
        prior_var = self._kernel(p, H, F, H, F, diag=True)
        n = self.trials
        short = int(self.max_var_flops / (n * n))
        if short >= m:
            V = Ks.to(torch.float32) @ self._Linv.T
            var = prior_var - (V.double() ** 2).sum(1)
            return mean, var.clamp_min(1e-12).sqrt()
        # many trials and many codes: exact variance for the codes with the best means only;
        # the others (all with lower means) get the median deviation of that shortlist
        top = torch.topk(mean, max(short, 1)).indices
        V = Ks[top].to(torch.float32) @ self._Linv.T
        sd_top = (prior_var[top] - (V.double() ** 2).sum(1)).clamp_min(1e-12).sqrt()
        sd = torch.full((m,), float(sd_top.median()), dtype=_DTYPE)
        sd[top] = sd_top
        return mean, sd

    def score(self, codes: Sequence[str]) -> list[float]:
        """Acquisition values (higher = more promising)."""
        return self._acquire(list(codes)).tolist()

    def _acquire(self, codes: list[str]) -> torch.Tensor:
        if not codes:
            return torch.zeros(0, dtype=_DTYPE)
        mean, sd = self.predict(codes)
        if self.acquisition == "mean" or not self.trials:
            return mean if self.acquisition == "mean" or self._n_prior else mean + self.beta * sd
        if self.acquisition == "ucb":
            return mean + self.beta * sd
        best = float(self._y.max()) + self.xi
        z = (mean - best) / sd
        normal = torch.distributions.Normal(torch.zeros((), dtype=_DTYPE), torch.ones((), dtype=_DTYPE))
        out = (mean - best) * normal.cdf(z) + sd * torch.exp(normal.log_prob(z))
        return torch.log(out.clamp_min(1e-300))  # same order, finite, spread out

    def rank(self, codes: Sequence[str]) -> list[str]:
        """``codes`` (deduplicated) best first; ties broken by a seeded shuffle."""
        uniq = list(dict.fromkeys(codes))
        if not uniq:
            return []
        scores = self._acquire(uniq)
        by_tie = torch.randperm(len(uniq), generator=torch.Generator().manual_seed(self.seed))
        order = by_tie[torch.argsort(-scores[by_tie], stable=True)]
        return [uniq[i] for i in order.tolist()]

    def describe(self) -> str:
        prior = (
            "prior: " + ", ".join(f"'{p.name}' ({p.size} trials)" for p in self.priors)
            if self.priors else "no prior"
        )
        hook = ", space features (kernel and linear mean)" if self.use_hook else ""
        return (
            f"GP ranker (ARD exponentiated-Hamming kernel over {self.space.length} decisions{hook}; "
            f"{self.transform} targets; acquisition {self.acquisition}; {self.trials} trials; {prior})"
        )
