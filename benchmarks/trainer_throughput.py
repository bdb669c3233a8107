"""Training throughput of the trainer against a plain PyTorch loop, side by side.

For each setting (space, architecture, network size, image size) both train
the same network (same initial weights) on the same data for the same number
of epochs, batch size, optimiser (SGD, Nesterov momentum, cosine schedule) and
loss; the figure is training images per second of the training loop alone
(no evaluation, no FLOP counting, no latency timing):

* **trainer**: :func:`collm_nas.evaluators.trainer.train_network` (data held as
  device tensors, batches gathered by an on-device permutation; on CUDA also
  bf16 autocast and channels-last);
* **plain loop**: the textbook loop: a ``DataLoader`` over a ``TensorDataset``
  (shuffle, drop_last), every batch copied to the device, fp32, default layout.

Each pair runs ``--repeats`` times, interleaved, and the best run of each
counts (the machine may be shared). Both figures are given: images per
second of wall time, and per second of this process's CPU time, which a
shared machine disturbs much less (on a GPU the wall figure is the one
that matters). Prints a Markdown table.

    python benchmarks/trainer_throughput.py                 # CPU, 1 thread
    python benchmarks/trainer_throughput.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import dataclass

import torch
from torch import nn

from collm_nas.evaluators.datasets import ImageDataset, load_dataset
from collm_nas.evaluators.trainer import TrainConfig, resolve_device, train_network
from collm_nas.models import build_network


@dataclass(frozen=True)
class Setting:
    label: str
    space: str
    arch: str
    image_size: int
    options: dict
    epochs: int


SETTINGS = (
    Setting("nb201 333132, C=8 N=1, 16x16", "nb201", "333132", 16, {"channels": 8, "cells_per_stage": 1}, 2),
    Setting("nb201 111111, C=8 N=1, 16x16", "nb201", "111111", 16, {"channels": 8, "cells_per_stage": 1}, 2),
    Setting("nb201 333132, C=16 N=5, 32x32", "nb201", "333132", 32, {"channels": 16, "cells_per_stage": 5}, 1),
    Setting("mbv3 k5e4 x3 layers, width 0.5, 16x16", "mbv3", "k5e4 k5e4 k5e4 | k5e4 k5e4 k5e4 | k5e4 k5e4 k5e4 | "
            "k5e4 k5e4 k5e4 | k5e4 k5e4 k5e4", 16, {"width_mult": 0.5, "stem_stride": 1}, 1),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for both loops (default 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every setting's epochs")
    return p.parse_args(argv)


def make_network(setting: Setting, data: ImageDataset, seed: int) -> nn.Module:
    from collm_nas.spaces import SPACES

    space = SPACES.resolve(setting.space)
    code = space.parse_arch(setting.arch) if setting.space == "mbv3" else setting.arch
    torch.manual_seed(seed)
    return build_network(space, code, num_classes=data.num_classes, in_channels=data.channels, **setting.options)


def plain_loop(model: nn.Module, data: ImageDataset, epochs: int, batch_size: int, lr: float,
               device: torch.device, seed: int) -> tuple[float, float]:
    """The textbook loop; returns training images per second of wall time and of CPU time."""
    model.to(device).train()
    dataset = torch.utils.data.TensorDataset(data.train_x.cpu(), data.train_y.cpu())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    images = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    rows = []
    for setting in SETTINGS:
        data = load_dataset("digits", image_size=setting.image_size)
        epochs = max(1, math.ceil(setting.epochs * args.epochs_scale))
        config = TrainConfig(epochs=epochs, batch_size=args.batch_size, threads=args.threads, device=str(device),
                             seed=0, latency_repeats=1)
        plain, trainer = [0.0, 0.0], [0.0, 0.0]  # best (wall, CPU) images per second
        for _ in range(args.repeats):
            wall, cpu = plain_loop(make_network(setting, data, 0), data, epochs, args.batch_size, config.lr,
                                   device, 0)
            plain = [max(plain[0], wall), max(plain[1], cpu)]
            out = train_network(make_network(setting, data, 0), data, config, device=device)
            images = out.cost["images_per_s"] * out.cost["train_s"]
            trainer = [max(trainer[0], out.cost["images_per_s"]), max(trainer[1], images / out.cost["train_cpu_s"])]
        rows.append((setting.label, epochs, plain, trainer))
        print(f"  {setting.label}: plain {plain[0]:,.0f} img/s ({plain[1]:,.0f} per CPU s), "
              f"trainer {trainer[0]:,.0f} img/s ({trainer[1]:,.0f} per CPU s)", flush=True)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    print(f"\nTraining throughput on {where}, {args.threads} thread(s), batch {args.batch_size}, digits "
          f"(1,438 training images), best of {args.repeats}; torch {torch.__version__}\n")
    print("| network | epochs | plain loop img/s | trainer img/s | trainer / plain | plain img/CPU-s "
          "| trainer img/CPU-s | trainer / plain (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, epochs, plain, trainer in rows:
        print(f"| {label} | {epochs} | {plain[0]:,.0f} | {trainer[0]:,.0f} | {trainer[0] / plain[0]:.2f}x "
              f"| {plain[1]:,.0f} | {trainer[1]:,.0f} | {trainer[1] / plain[1]:.2f}x |")


if __name__ == "__main__":
    main()
