"""Best-so-far curves (accuracy against evaluations, one panel per dataset) and Pareto fronts.

Used by ``collm-nas plot`` and by ``benchmarks/strategies.py``; a run with
several objectives is drawn as its trials against the first two objectives,
the front highlighted. matplotlib
is an optional extra (``pip install -e '.[plot]'``), imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from collm_nas.core import Direction, Objectives, Trial, UserError

Curves = Mapping[str, Mapping[str, Sequence[Sequence[float]]]]  # panel -> line label -> one curve per seed


def best_so_far(trials: Sequence[Trial], mode: str, reported: str | None = None) -> list[float]:
    """After each evaluation: the ``reported`` metric (default: the searched value) of the best trial so far.

    The best is chosen by the searched metric, as a search would choose it;
    failed trials repeat the previous point.
    """
    curve: list[float] = []
    best: Trial | None = None
    direction = Direction.of(mode)
    for t in trials:
        if t.ok and direction.better(t.value, best.value if best is not None else None):
            best = t
        if best is None:
            curve.append(float("nan"))
        else:
            curve.append(best.metrics.get(reported, best.value) if reported else best.value)
    return curve


def _pyplot():
    """matplotlib's pyplot without a screen, or a one-line error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install -e '.[plot]'") from None
    return plt


def _save(plt, fig, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_curves(curves: Curves, out: str | Path, *, ylabel: str = "test accuracy (%) of the best so far",
                title: str | None = None) -> Path:
    """Mean line and min–max band per label, one panel per key of ``curves``; writes a PNG."""
    plt = _pyplot()
    import math

    panels = list(curves)
    if not panels:
        raise UserError("nothing to plot: no runs with trials")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, runs in curves[panel].items():
            length = max(len(c) for c in runs)
            xs = list(range(1, length + 1))
            means, lows, highs = [], [], []
            for i in range(length):
                column = [c[i] for c in runs if i < len(c) and not math.isnan(c[i])]
                if not column:
                    column = [float("nan")]
                means.append(sum(column) / len(column))
                lows.append(min(column))
                highs.append(max(column))
            n = len(runs)
            line = ax.plot(xs, means, label=f"{label} (n={n})" if n > 1 else label)[0]
            if n > 1:
                ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(panel)
        ax.set_xlabel("evaluations")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, out)


def plot_fronts(runs: Sequence[tuple[str, Sequence[Trial]]], objectives: Objectives, out: str | Path,
                title: str | None = None) -> Path:
    """Every trial of each run against the first two objectives, its Pareto front highlighted; writes a PNG."""
    plt = _pyplot()
    x_name, y_name = objectives.metrics[1], objectives.metrics[0]  # cost across, the searched metric up
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for label, trials in runs:
        points = [(t.metric(x_name), t.metric(y_name)) for t in trials if objectives.point(t) is not None]
        if not points:
            continue
        dots = ax.scatter([x for x, _ in points], [y for _, y in points], s=10, alpha=0.35)
        front = sorted((t.metric(x_name), t.metric(y_name)) for t in objectives.front(trials))
        ax.plot([x for x, _ in front], [y for _, y in front], marker="o", markersize=5,
                color=dots.get_facecolor()[0][:3], drawstyle="steps-post" if len(objectives) == 2 else "default",
                label=f"{label}: front of {len(front)}")
    ax.set_xlabel(f"{x_name} ({objectives.items[1].mode})")
    ax.set_ylabel(f"{y_name} ({objectives.items[0].mode})")
    ax.set_title(title or "trials and Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)
