"""Image classification data for real training, held in memory as tensors.

Every loader returns an :class:`ImageDataset`: float32 tensors ``(N, C, H, W)``
normalised per channel with the training split's mean and standard
deviation, integer labels, a training and a validation split (and a test
split where the data set has one). The trainer moves them to the GPU once
and indexes batches there.

Names :func:`load_dataset` understands:

* ``digits``: scikit-learn's handwritten digits (1,797 grey 8x8 images, 10
  classes, shipped with scikit-learn), upsampled to ``image_size`` (16 by
  default) and split 80/20 into training and validation, stratified and seeded;
* ``cifar10`` / ``cifar100``: the CIFAR python version from a local folder
  (``cifar-10-batches-py`` with ``data_batch_1..5`` and ``test_batch``;
  ``cifar-100-python`` with ``train`` and ``test``), read without
  torchvision; a seeded, stratified 5,000 training images are held out for
  validation and ``test_batch`` / ``test`` is the test split;
* ``fashion-mnist``: Fashion-MNIST from its IDX files (Debian's
  ``dataset-fashion-mnist`` puts them in ``/usr/share/datasets/fashion-mnist``;
  ``data_dir`` overrides that folder), 28x28 grey, read by our own IDX reader
  (:func:`read_idx`, no torchvision); a seeded, stratified 10,000 of the
  60,000 training images are held out for validation and the official 10,000
  ``t10k`` images are the test split;
* ``idx:PATH``: any folder of MNIST-format IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each plain or ``.gz``), split the same way (a
  tenth held out when the training split is small);
* ``torchvision:NAME``: a dataset class of ``torchvision.datasets``
  (``torchvision:MNIST``, ``torchvision:FashionMNIST``, ``torchvision:SVHN``, ...)
  from its folder, never downloaded; its test split is the test split;
* ``imagefolder:PATH``: ``torchvision.datasets.ImageFolder`` over ``PATH/train``
  (and ``PATH/val`` or ``PATH/valid``, ``PATH/test`` when present), or over
  ``PATH`` itself with a seeded validation hold-out.

The last two need torchvision, imported only then; data folders come from
``data_dir`` (the CLI's ``--data-dir``, else ``COLLM_NAS_DATA_DIR``).
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from collm_nas.core.errors import UserError

__all__ = [
    "TRAIN_DATASETS",
    "ImageDataset",
    "check_dataset_available",
    "check_dataset_name",
    "dataset_label",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_fashion_mnist",
    "load_idx_folder",
    "load_torchvision",
    "read_idx",
    "subset_train",
]

TRAIN_DATASETS = ("digits", "cifar10", "cifar100", "fashion-mnist", "idx:PATH", "torchvision:NAME",
                  "imagefolder:PATH")
_DATA_FIX = "set --data-dir or COLLM_NAS_DATA_DIR"
# Where Debian's dataset-fashion-mnist package puts the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"


@dataclass(frozen=True)
class ImageDataset:
    """Training, validation and (optionally) test images as normalised tensors."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    num_classes: int
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    # Random crops and flips suit natural images (CIFAR, ImageNet), not digits.
    augment: bool = False
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def has_test(self) -> bool:
        return self.test_x is not None

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: torch.device | str) -> ImageDataset:
        """A copy with every tensor on ``device`` (the same object when already there)."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "valid_x", "valid_y")}
        if self.test_x is not None:
            move["test_x"], move["test_y"] = self.test_x.to(device), self.test_y.to(device)
        return replace(self, **move)

    def summary(self) -> str:
        c, h, w = self.input_shape
        test = f", {len(self.test_y)} test" if self.test_y is not None else ""
        return (f"{self.name}: {len(self.train_y)} training, {len(self.valid_y)} validation{test} images "
                f"of {c}x{h}x{w}, {self.num_classes} classes")


# --------------------------------------------------------------------- helpers
def _stratified_split(labels: np.ndarray, holdout: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): ``holdout`` images (or that fraction) held out, balanced over classes."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    n_out = int(round(holdout * n)) if isinstance(holdout, float) else int(holdout)
    if not 0 < n_out < n:
        raise UserError(f"cannot hold out {n_out} of {n} images for validation; choose a smaller validation size")
    classes = np.unique(labels)
    held: list[np.ndarray] = []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.append(idx[: int(round(n_out * len(idx) / n))])
    out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(n), out)
    return keep, out


def _normalise(train: torch.Tensor, *others: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Scale every split with the training split's per-channel mean and standard deviation."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std if t is not None else None for t in (train, *others)]


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    if size < 4:
        raise UserError(f"image size {size} is too small; use at least 4 pixels")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _build(name: str, train_x, train_y, valid_x, valid_y, num_classes: int, test_x=None, test_y=None,
           image_size: int | None = None, augment: bool = False, description: str = "") -> ImageDataset:
    train_x, valid_x = _resize(train_x, image_size), _resize(valid_x, image_size)
    test_x = _resize(test_x, image_size) if test_x is not None else None
    train_x, valid_x, test_x = _normalise(train_x, valid_x, test_x)
    as_long = lambda y: torch.as_tensor(np.asarray(y), dtype=torch.long)  # noqa: E731
    return ImageDataset(
        name=name,
        train_x=train_x.contiguous(), train_y=as_long(train_y),
        valid_x=valid_x.contiguous(), valid_y=as_long(valid_y),
        num_classes=num_classes,
        test_x=test_x.contiguous() if test_x is not None else None,
        test_y=as_long(test_y) if test_y is not None else None,
        augment=augment, description=description,
    )


# ---------------------------------------------------------------------- digits
def load_digits(image_size: int | None = 16, valid_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's handwritten digits, upsampled to ``image_size`` (bilinear) and split stratified."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise UserError("the digits data set needs scikit-learn; install it with "
                        "'.venv/bin/python -m pip install scikit-learn'") from None
    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8), 0..1
    labels = np.asarray(bunch.target)
    if not 0.0 < valid_fraction < 1.0:
        raise UserError(f"validation fraction must lie between 0 and 1, got {valid_fraction}")
    keep, held = _stratified_split(labels, float(valid_fraction), seed)
    return _build("digits", images[keep], labels[keep], images[held], labels[held], 10,
                  image_size=image_size or 8,
                  description="scikit-learn handwritten digits (8x8 grey, upsampled)")


# ----------------------------------------------------------------------- CIFAR
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}


def _cifar_folder(name: str, data_dir: str | Path | None) -> Path:
    folder_name, train_files, test_files, _, _ = _CIFAR[name]
    need = f"{', '.join(train_files[:1] + (['...'] if len(train_files) > 1 else []) + test_files)}"
    if data_dir is None:
        raise UserError(f"{name} needs its python-format folder '{folder_name}' ({need}); {_DATA_FIX} "
                        "to the folder that holds it")
    root = Path(data_dir).expanduser()
    for candidate in (root, root / folder_name):
        if all((candidate / f).is_file() for f in train_files + test_files):
            return candidate
    raise UserError(f"{name} not found in '{root}': expected {folder_name}/ with {need} (the extracted python "
                    f"version of the data set); {_DATA_FIX} to the folder that holds it")


def _read_cifar_file(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"cannot read CIFAR file '{path}' ({type(e).__name__}: {e}); replace it with the "
                        "original python-format file") from None
    if len(labels) != len(data):
        raise UserError(f"CIFAR file '{path}' has {len(data)} images but {len(labels)} labels; replace it")
    return data, labels


def load_cifar(name: str, data_dir: str | Path | None, *, valid_size: int = 5000, seed: int = 0,
               image_size: int | None = None) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 from its python-format folder, with a seeded validation hold-out."""
    if name not in _CIFAR:
        raise UserError(f"unknown CIFAR variant '{name}'; use cifar10 or cifar100")
    folder = _cifar_folder(name, data_dir)
    _, train_files, test_files, label_key, classes = _CIFAR[name]
    train = [_read_cifar_file(folder / f, label_key) for f in train_files]
    test = [_read_cifar_file(folder / f, label_key) for f in test_files]
    x = np.concatenate([d for d, _ in train])
    y = np.concatenate([l for _, l in train])
    tx = np.concatenate([d for d, _ in test])
    ty = np.concatenate([l for _, l in test])
    if y.min() < 0 or max(y.max(), ty.max()) >= classes:
        raise UserError(f"{name} labels in '{folder}' fall outside 0..{classes - 1}; check the folder's files")
    keep, held = _stratified_split(y, int(valid_size), seed)
    as_float = lambda a: torch.from_numpy(a).float().div_(255.0)  # noqa: E731
    return _build(name, as_float(x[keep]), y[keep], as_float(x[held]), y[held], classes,
                  test_x=as_float(tx), test_y=ty, image_size=image_size, augment=True,
                  description=f"{name.upper()} from {folder}")


# ------------------------------------------------------------------------- IDX
# IDX type codes (the MNIST distribution's "IDX file format"): big-endian data.
_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
# The four files of an MNIST-format folder, by role; each may be plain or .gz, with '-' or '.' before idx.
_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """One IDX file (plain or gzip-compressed) as a numpy array in native byte order.

    Checks the magic number (two zero bytes, a known type code, the number of
    dimensions, ``ndim`` when given) and that the data is exactly as long as
    the header's sizes say. Any problem is a one-line :class:`UserError` naming
    the file.
    """
    p = Path(path)
    bad = lambda what: UserError(f"IDX file '{p}' is malformed: {what}; replace it with the original file")  # noqa: E731
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name says
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise UserError(f"IDX file '{p}' not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise bad(f"its gzip stream is broken or truncated ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise UserError(f"cannot read IDX file '{p}' ({e.strerror or e})") from None
    if len(raw) < 4:
        raise bad(f"{len(raw)} bytes, shorter than the 4-byte magic number")
    zero, code, dims = raw[0] | raw[1], raw[2], raw[3]
    if zero != 0 or code not in _IDX_TYPES:
        raise bad(f"magic number 0x{raw[:4].hex()} is not an IDX header (00 00 type dims)")
    if ndim is not None and dims != ndim:
        raise bad(f"{dims} dimensions, expected {ndim}")
    if dims < 1:
        raise bad("zero dimensions")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise bad(f"its header is truncated ({len(raw)} bytes, the sizes need {header})")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise bad(f"{what}: {got} data bytes, the header's sizes {'x'.join(map(str, shape))} need {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_paths(folder: Path) -> dict[str, Path] | None:
    """The four files of an MNIST-format folder, or None when any is missing."""
    found = {role: _idx_file(folder, stem) for role, (stem, _) in _IDX_FILES.items()}
    return None if any(p is None for p in found.values()) else found  # type: ignore[return-value]


def _idx_need() -> str:
    return ", ".join(stem + "[.gz]" for stem, _ in _IDX_FILES.values())


def _fashion_mnist_folder(data_dir: str | Path | None) -> tuple[Path, dict[str, Path]]:
    """The folder of Fashion-MNIST's IDX files: ``data_dir`` (or its fashion-mnist/) when set, else Debian's."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
        where = f"'{root}' (--data-dir / COLLM_NAS_DATA_DIR)"
    else:
        candidates = [Path(FASHION_MNIST_DIR)]
        where = f"'{FASHION_MNIST_DIR}'"
    for folder in candidates:
        paths = _idx_paths(folder)
        if paths is not None:
            return folder, paths
    raise UserError(f"fashion-mnist not found in {where}: install it with 'apt-get install {FASHION_MNIST_PACKAGE}' "
                    f"(files in {FASHION_MNIST_DIR}) or {_DATA_FIX} to a folder with {_idx_need()}")


def _idx_folder(path: str | Path, data_dir: str | Path | None) -> tuple[Path, dict[str, Path]]:
    folder = Path(path).expanduser()
    if not folder.is_absolute() and data_dir is not None and not folder.exists():
        folder = Path(data_dir).expanduser() / folder
    paths = _idx_paths(folder) if folder.is_dir() else None
    if paths is None:
        state = "does not exist" if not folder.is_dir() else "lacks some of its files"
        raise UserError(f"IDX folder '{folder}' {state}: idx:PATH needs {_idx_need()} (MNIST format)")
    return folder, paths


def load_idx_folder(folder: str | Path, *, name: str | None = None, valid_size: int | float | None = None,
                    seed: int = 0, image_size: int | None = None, paths: dict[str, Path] | None = None,
                    description: str = "") -> ImageDataset:
    """An MNIST-format folder: training images (less a seeded, stratified validation hold-out) and t10k as test.

    ``valid_size`` defaults to 10,000 images where the training split has at
    least 20,000 (Fashion-MNIST, MNIST), else a tenth.
    """
    folder = Path(folder)
    paths = paths or _idx_folder(folder, None)[1]
    x = read_idx(paths["train_images"], 3)
    y = read_idx(paths["train_labels"], 1)
    tx = read_idx(paths["test_images"], 3)
    ty = read_idx(paths["test_labels"], 1)
    for images, labels, ip, lp in ((x, y, "train_images", "train_labels"), (tx, ty, "test_images", "test_labels")):
        if len(images) != len(labels):
            raise UserError(f"IDX files '{paths[ip]}' and '{paths[lp]}' disagree: {len(images)} images but "
                            f"{len(labels)} labels; replace them with the original files")
        if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
            raise UserError(f"IDX file '{paths[lp]}' does not hold non-negative integer labels; replace it")
    if x.shape[1:] != tx.shape[1:]:
        raise UserError(f"IDX images in '{folder}' differ in size: training {x.shape[1:]}, test {tx.shape[1:]}")
    if len(y) < 20:
        raise UserError(f"IDX folder '{folder}' holds only {len(y)} training images; too few to train on")
    if valid_size is None:
        valid_size = 10_000 if len(y) >= 20_000 else 0.1
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    as_float = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1).div_(scale)  # noqa: E731
    keep, held = _stratified_split(y, valid_size, seed)
    classes = int(max(y.max(), ty.max() if len(ty) else 0)) + 1
    return _build(name or f"idx:{folder.name}", as_float(x[keep]), y[keep].astype(np.int64), as_float(x[held]),
                  y[held].astype(np.int64), classes, test_x=as_float(tx), test_y=ty.astype(np.int64),
                  image_size=image_size, augment=False, description=description or f"IDX files from {folder}")


def load_fashion_mnist(data_dir: str | Path | None = None, *, valid_size: int | None = None, seed: int = 0,
                       image_size: int | None = None) -> ImageDataset:
    """Fashion-MNIST from its IDX files (see :func:`_fashion_mnist_folder` for where); 10,000 held out for validation."""
    folder, paths = _fashion_mnist_folder(data_dir)
    return load_idx_folder(folder, name="fashion-mnist", valid_size=valid_size, seed=seed, image_size=image_size,
                           paths=paths, description=f"Fashion-MNIST (28x28 grey) from {folder}")


def subset_train(data: ImageDataset, size: int, seed: int = 0) -> ImageDataset:
    """``data`` with a seeded, stratified ``size`` of its training images (all of them when ``size`` is 0 or more)."""
    n = len(data.train_y)
    if size <= 0 or size >= n:
        return data
    labels = data.train_y.cpu().numpy()
    _, picked = _stratified_split(labels, int(size), seed)
    idx = torch.as_tensor(picked, device=data.train_y.device)
    return replace(data, train_x=data.train_x.index_select(0, idx).contiguous(),
                   train_y=data.train_y.index_select(0, idx))


# ----------------------------------------------------------------- torchvision
def _torchvision(what: str):
    try:
        import torchvision  # noqa: F401  (optional; a CUDA build fails to import on CPU-only torch)
        import torchvision.datasets
        import torchvision.transforms
    except (ImportError, RuntimeError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what} needs torchvision, which does not import here ({first}); install the "
                        "project's 'vision' extra where torchvision matches torch, or use digits, cifar10 "
                        "or cifar100") from None
    return torchvision


def _to_tensors(dataset, batch_size: int = 512) -> tuple[torch.Tensor, np.ndarray]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.float())
        ys.append(np.asarray(y))
    if not xs:
        raise UserError("the data set holds no images; check its folder")
    return torch.cat(xs), np.concatenate(ys)


def _transform(tv, image_size: int | None):
    steps = []
    if image_size is not None:
        steps += [tv.transforms.Resize(image_size), tv.transforms.CenterCrop(image_size)]
    steps.append(tv.transforms.ToTensor())
    return tv.transforms.Compose(steps)


def load_torchvision(name: str, data_dir: str | Path | None, *, image_size: int | None = None,
                     valid_size: int | float = 0.1, seed: int = 0) -> ImageDataset:
    """A dataset class of ``torchvision.datasets`` from ``data_dir`` (never downloaded)."""
    tv = _torchvision(f"dataset 'torchvision:{name}'")
    cls = getattr(tv.datasets, name, None)
    if not isinstance(cls, type):
        raise UserError(f"torchvision.datasets has no data set '{name}'; use its class name, e.g. torchvision:MNIST")
    if data_dir is None:
        raise UserError(f"torchvision:{name} needs the folder holding its files; {_DATA_FIX}")
    root = str(Path(data_dir).expanduser())
    transform = _transform(tv, image_size)

    def split(train: bool):
        attempts = ({"train": train}, {"split": "train" if train else "test"})
        last: Exception | None = None
        for kwargs in attempts:
            try:
                return cls(root=root, download=False, transform=transform, **kwargs)
            except TypeError as e:  # the class takes the other way of naming splits
                last = e
            except (RuntimeError, OSError, ValueError) as e:  # not found / not downloaded
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(f"torchvision:{name} not found in '{root}' ({first}); put its files there "
                                f"(nothing is downloaded) or {_DATA_FIX}") from None
        raise UserError(f"torchvision:{name} takes neither train= nor split= ({last}); use imagefolder:PATH")

    x, y = _to_tensors(split(True))
    tx, ty = _to_tensors(split(False))
    keep, held = _stratified_split(y, valid_size, seed)
    classes = int(max(y.max(), ty.max())) + 1
    return _build(f"torchvision:{name}", x[keep], y[keep], x[held], y[held], classes, test_x=tx, test_y=ty,
                  augment=x.shape[1] == 3, description=f"torchvision {name} from {root}")


def load_image_folder(path: str | Path, *, image_size: int | None = 32, valid_size: int | float = 0.1,
                      seed: int = 0) -> ImageDataset:
    """``ImageFolder`` data: ``PATH/train`` (+ ``val``/``valid``, ``test``) or ``PATH`` with a hold-out."""
    tv = _torchvision(f"dataset 'imagefolder:{path}'")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist; give imagefolder:PATH with one sub-folder per class "
                        "(or train/ and val/ folders of them)")
    transform = _transform(tv, image_size)

    def folder(p: Path):
        try:
            return tv.datasets.ImageFolder(str(p), transform=transform)
        except (FileNotFoundError, RuntimeError) as e:
            raise UserError(f"cannot read image folder '{p}' ({e}); it needs one sub-folder of images per class") from None

    train_dir = root / "train" if (root / "train").is_dir() else root
    train = folder(train_dir)
    x, y = _to_tensors(train)
    valid_dir = next((root / d for d in ("val", "valid", "validation") if (root / d).is_dir()), None)
    if valid_dir is not None and train_dir != root:
        vx, vy = _to_tensors(folder(valid_dir))
    else:
        keep, held = _stratified_split(y, valid_size, seed)
        x, y, vx, vy = x[keep], y[keep], x[held], y[held]
    tx = ty = None
    if train_dir != root and (root / "test").is_dir():
        tx, ty = _to_tensors(folder(root / "test"))
    return _build(f"imagefolder:{root.name}", x, y, vx, vy, len(train.classes), test_x=tx, test_y=ty,
                  augment=x.shape[1] == 3, description=f"ImageFolder {root}")


# --------------------------------------------------------------------- facade
def check_dataset_name(name: str) -> None:
    """Refuse a data set name :func:`load_dataset` does not know, in one line (loads nothing)."""
    if name in ("digits", "cifar10", "cifar100", "fashion-mnist"):
        return
    kind, sep, rest = name.partition(":")
    if sep and kind in ("torchvision", "imagefolder", "idx") and rest:
        return
    raise UserError(f"unknown dataset '{name}' for the train evaluator; use digits, cifar10, cifar100, "
                    "fashion-mnist, idx:PATH, torchvision:NAME or imagefolder:PATH")


def check_dataset_available(name: str, data_dir: str | Path | None = None) -> None:
    """Check, without loading anything, that ``name`` can be loaded here; a one-line UserError if not."""
    check_dataset_name(name)
    if name == "digits":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            raise UserError("the digits data set needs scikit-learn; install it with "
                            "'.venv/bin/python -m pip install scikit-learn'") from None
    elif name in _CIFAR:
        _cifar_folder(name, data_dir)
    elif name == "fashion-mnist":
        _fashion_mnist_folder(data_dir)
    elif name.startswith("idx:"):
        _idx_folder(name.partition(":")[2], data_dir)
    else:
        kind, _, rest = name.partition(":")
        _torchvision(f"dataset '{name}'")
        if kind == "torchvision" and data_dir is None:
            raise UserError(f"{name} needs the folder holding its files; {_DATA_FIX}")
        if kind == "imagefolder":
            path = Path(rest).expanduser()
            if not path.is_absolute() and data_dir is not None and not path.exists():
                path = Path(data_dir).expanduser() / path
            if not path.is_dir():
                raise UserError(f"image folder '{path}' does not exist; give imagefolder:PATH with one sub-folder "
                                "per class (or train/ and val/ folders of them)")


def dataset_label(name: str) -> str:
    """A short label of a data set name for run ids (``imagefolder:/data/pets`` -> ``pets``)."""
    kind, sep, rest = name.partition(":")
    if not sep:
        return name
    return Path(rest).name or rest if kind == "imagefolder" else rest


def load_dataset(name: str, *, data_dir: str | Path | None = None, image_size: int | None = None,
                 seed: int = 0) -> ImageDataset:
    """The data set ``name`` (see the module's docstring); cached per process.

    ``image_size`` resizes images (default: digits 16, CIFAR 32, ImageFolder
    32, Fashion-MNIST / IDX and torchvision data sets their own size).
    """
    check_dataset_name(name)
    return _load_cached(name, None if data_dir is None else str(Path(data_dir).expanduser()), image_size, seed)


@lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: str | None, image_size: int | None, seed: int) -> ImageDataset:
    if name == "digits":
        return load_digits(image_size=image_size or 16, seed=seed)
    if name in _CIFAR:
        return load_cifar(name, data_dir, seed=seed, image_size=image_size)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, seed=seed, image_size=image_size)
    kind, _, rest = name.partition(":")
    if kind == "idx":
        folder, paths = _idx_folder(rest, data_dir)
        return load_idx_folder(folder, name=name, seed=seed, image_size=image_size, paths=paths)
    if kind == "torchvision":
        return load_torchvision(rest, data_dir, image_size=image_size, seed=seed)
    path = Path(rest)
    if not path.is_absolute() and data_dir is not None and not path.exists():
        path = Path(data_dir) / path
    return load_image_folder(path, image_size=image_size or 32, seed=seed)



class ImageDataEvaluator:
    """What the evaluators that run networks on an image data set share (train, supernet, proxy).

    A subclass sets ``space``, ``dataset``, ``data_dir``, ``device`` and a
    ``config`` with an ``image_size`` field, and ``_data = None``.
    """

    space: Any
    dataset: str
    data_dir: str | None
    device: Any
    config: Any
    _data: "ImageDataset | None" = None

    def _place(self, space: Any, dataset: str, options: Any, data_dir: str | Path | None) -> dict[str, Any]:
        """Set ``space``, ``dataset`` and ``data_dir`` (option, argument, then setting); return the other options."""
        from collm_nas.core.settings import load_settings

        options = dict(options or {})
        chosen = options.pop("data_dir", None) or data_dir or load_settings().data_dir
        check_dataset_name(dataset)
        self.space, self.dataset = space, dataset
        self.data_dir = str(chosen) if chosen else None
        return options

    # Resources known before evaluation: the space's own declared costs.
    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.space.cost_names))

    def resources(self, ncode: str) -> dict[str, float]:
        return self.space.costs(ncode)

    def prepare(self) -> None:
        """Check, loading nothing, that the data set is here (a search calls this before it starts)."""
        check_dataset_available(self.dataset, self.data_dir)

    def data(self) -> "ImageDataset":
        """The data set, loaded once and moved to the evaluation device."""
        if self._data is None:
            data = load_dataset(self.dataset, data_dir=self.data_dir, image_size=self.config.image_size or None)
            # train_size: the same seeded, stratified subset of the training split for every network
            data = subset_train(data, int(getattr(self.config, "train_size", 0) or 0))
            self._data = data.to(self.device)
        return self._data
