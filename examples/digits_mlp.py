"""Bring your own model: an evaluator for the search space ``examples/digits_mlp.yaml``.

``evaluate(arch)`` receives the decoded architecture — a dict of the space's
active decisions, options as text, e.g. ``{"depth": "2", "width_1": "64",
"width_2": "128", "activation": "relu", "batch_norm": "true", "dropout":
"0.1", "lr": "0.003"}`` (``width_3`` is inactive at depth 2, so absent) —
builds that multilayer perceptron, trains
it with Adam on the training split of scikit-learn's handwritten digits and
returns its metrics: validation accuracy (%), parameters, last-epoch training
loss and training seconds. It also takes the evaluation's ``seed`` (the
search passes it: the run seed and the NCode), so every result repeats.

Search it from the repository root (the module is imported as
``examples.digits_mlp``, so the root must be on ``PYTHONPATH``)::

    PYTHONPATH=. .venv/bin/collm-nas search --space examples/digits_mlp.yaml \\
        --evaluator examples.digits_mlp:evaluate --metric valid_acc --strategy rea --budget 30

Each evaluation trains for 20 epochs of 11 minibatches: about a third of a second of CPU time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from collm_nas.evaluators.datasets import load_dataset

EPOCHS = 20
BATCH_SIZE = 128
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def build_mlp(arch: Mapping[str, str], inputs: int = 64, classes: int = 10) -> nn.Sequential:
    """The network of a decoded architecture: ``depth`` hidden layers of Linear (+ BatchNorm) + activation + dropout."""
    depth = int(arch["depth"])
    activation = ACTIVATIONS[arch["activation"]]
    batch_norm = arch["batch_norm"] == "true"
    dropout = float(arch["dropout"])
    layers: list[nn.Module] = []
    width = inputs
    for i in range(1, depth + 1):
        units = int(arch[f"width_{i}"])
        layers.append(nn.Linear(width, units, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(activation())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = units
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def evaluate(arch: dict, seed: int = 0) -> dict:
    """Train the MLP of ``arch`` on the digits' training split; metrics on the held-out validation split."""
    data = load_dataset("digits", image_size=8)  # the trainer's split of the 1,797 images (cached per process)
    x, y = data.train_x.flatten(1), data.train_y
    vx, vy = data.valid_x.flatten(1), data.valid_y
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread is fastest and leaves the other cores alone
    try:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # initial weights and dropout
        model = build_mlp(arch, inputs=x.shape[1], classes=data.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(arch["lr"]))
        started = time.perf_counter()
        steps = len(y) // BATCH_SIZE
        model.train()
        for _ in range(EPOCHS):
            perm = torch.randperm(len(y), generator=generator)
            total = 0.0
            for i in range(steps):
                idx = perm[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
        train_s = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            accuracy = (model(vx).argmax(1) == vy).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    return {
        "valid_acc": 100.0 * accuracy,
        "params": float(sum(p.numel() for p in model.parameters())),
        "train_loss": total / steps,
        "train_s": train_s,
    }
