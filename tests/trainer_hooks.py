"""Model hooks for the trainer tests (``--train-option model_hook=trainer_hooks:NAME``, tests/ on PYTHONPATH)."""

from __future__ import annotations

import torch


def nan_unless_conv_first(model: torch.nn.Module, arch: dict[str, str]) -> None:
    """Make the classifier's output NaN unless the cell's first edge is a convolution.

    The loss of such a network is NaN from its first step: a real NaN-loss
    trial, arising in the real forward pass, that the trainer must fail while
    the search goes on.
    """
    if arch.get("edge_1<-0") in ("nor_conv_1x1", "nor_conv_3x3"):
        return
    model.classifier.register_forward_hook(lambda module, inputs, output: output * float("nan"))


def broken(model: torch.nn.Module, arch: dict[str, str]) -> None:
    raise ValueError("the hook itself is broken")
