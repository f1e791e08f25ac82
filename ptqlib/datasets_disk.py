"""Real datasets read from a local folder in their standard on-disk layouts.

- cifar10 / cifar100: torchvision's python layout (`cifar-10-batches-py/`, `cifar-100-python/`),
  whose pickles we read ourselves (torchvision's classes checksum every file on each load).
  CIFAR-100 uses the 100 fine labels.
- tinyimagenet: `tiny-imagenet-200/` with `train/<wnid>/images/*.JPEG` and `val/images/*.JPEG`
  labelled by `val/val_annotations.txt`; classes sorted by wnid for both splits; `val` is the
  test split.
- imagefolder: `root/train/<class>/*` and `root/test/<class>/*`, any format Pillow reads,
  resized to `image_size` only when it is > 0.

`data_root` may be the folder that holds the dataset's folder or that folder itself. Decoded
images are cached as uint8 tensors in the store (`<store>/dataset/<key>/images.pt`), so JPEGs
are decoded once. Nothing is ever downloaded unless the preset says `download: true`.
Subsets take the first n examples: in file order for CIFAR (already shuffled), in class
round-robin order for the class-sorted folder layouts (so a subset keeps every class).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .data import ImageData, channel_stats
from .store import Job, Store

CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "label_key": b"labels", "classes": 10,
                "archive": "cifar-10-python.tar.gz", "title": "CIFAR-10"},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"],
                 "label_key": b"fine_labels", "classes": 100,
                 "archive": "cifar-100-python.tar.gz", "title": "CIFAR-100"},
}
TINY_FOLDER = "tiny-imagenet-200"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# ---------------------------------------------------------------- where the data lies

def _dataset_dir(root: Path, folder: str) -> Path:
    """`root/folder`, or `root` itself when it already is that folder."""
    return root if root.name == folder and not (root / folder).exists() else root / folder


def check_available(cfg) -> None:
    """Raise a one-line ConfigError naming the path looked at, what belongs there, how to get it."""
    root = Path(cfg.data_root).expanduser()
    if cfg.dataset in CIFAR:
        spec = CIFAR[cfg.dataset]
        where = _dataset_dir(root, spec["folder"])
        files = ", ".join(spec["train"] + spec["test"]) if cfg.dataset == "cifar100" else "data_batch_1..5, test_batch"
        how = (f"download {spec['archive']} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
               f"into {root}, or set download: true on a machine with a network")
        if not where.is_dir():
            raise ConfigError(f"data_root: {where} not found; expected torchvision's {spec['title']} python "
                              f"layout ({files}); {how}")
        missing = [f for f in spec["train"] + spec["test"] if not (where / f).is_file()]
        if missing:
            raise ConfigError(f"data_root: {where} lacks {', '.join(missing)}; expected torchvision's "
                              f"{spec['title']} python layout ({files}); {how}")
        for f in spec["train"] + spec["test"]:  # a malformed pickle fails here, before any compute
            _read_cifar_file(where / f, spec["label_key"], spec["classes"])
    elif cfg.dataset == "tinyimagenet":
        where = _dataset_dir(root, TINY_FOLDER)
        how = (f"download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip "
               f"and unzip it into {root}")
        expected = "train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"
        for need in (where, where / "train", where / "val" / "images", where / "val" / "val_annotations.txt"):
            if not need.exists():
                raise ConfigError(f"data_root: {need} not found; expected the {TINY_FOLDER} layout "
                                  f"({expected}); {how}")
    elif cfg.dataset == "imagefolder":
        for split in ("train", "test"):
            where = root / split
            if not where.is_dir() or not any(p.is_dir() for p in where.iterdir()):
                raise ConfigError(f"data_root: {where} not found or has no class folders; expected "
                                  f"{root}/train/<class>/<image> and {root}/test/<class>/<image> (any format "
                                  f"Pillow reads); point data_root at the folder holding train/ and test/")
    else:
        raise ConfigError(f"dataset: {cfg.dataset!r} is not read from disk; use cifar10, cifar100, "
                          f"tinyimagenet or imagefolder")


def dataset_identity(cfg) -> dict:
    """What identifies the examples a config trains on (for job keys): dataset, subsets, size.

    An imagefolder dataset is only known by its folder, so its resolved path is part of it.
    """
    spec = {"dataset": cfg.dataset, "train_subset": cfg.train_subset, "test_subset": cfg.test_subset}
    if cfg.dataset == "imagefolder":
        spec.update(root=str(Path(cfg.data_root).expanduser().resolve()), image_size=cfg.image_size)
    return spec


def _fingerprint(files: list[Path], base: Path) -> str:
    """A hash of every file's relative path and size: a changed dataset gets a new cache entry."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(base).as_posix()}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- readers

def _read_cifar_file(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except Exception as err:  # any unpickling failure means the file is not what it should be
        raise ConfigError(f"data_root: {path} is not a readable CIFAR pickle ({type(err).__name__}: "
                          f"{str(err)[:80]}); delete the folder and extract the archive again") from None
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        keys = sorted(entry)[:6] if isinstance(entry, dict) else type(entry).__name__
        raise ConfigError(f"data_root: {path} has no {b'data'!r} and {label_key!r} entries (found {keys}); "
                          f"it is not a torchvision CIFAR pickle")
    images = np.asarray(entry[b"data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise ConfigError(f"data_root: {path} holds data of shape {images.shape} ({images.dtype}) and "
                          f"{len(labels)} labels; expected uint8 (N, 3072) rows and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"data_root: {path} has labels outside 0..{num_classes - 1}")
    return images.reshape(-1, 3, 32, 32), labels


def _read_cifar(where: Path, spec: dict) -> dict:
    out = {}
    for split in ("train", "test"):
        parts = [_read_cifar_file(where / f, spec["label_key"], spec["classes"]) for f in spec[split]]
        out[f"x_{split}"] = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        out[f"y_{split}"] = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    out["classes"] = [str(i) for i in range(spec["classes"])]
    return out


def _decode(paths: list[Path], mode: str, size: int, expect: tuple | None) -> torch.Tensor:
    """Decode image files into one uint8 (N, C, H, W) tensor, several files at a time."""
    from PIL import Image

    def one(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if size > 0 and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise ConfigError(f"data_root: {path} could not be read as an image ({str(err)[:80]}); "
                              f"remove or replace the file") from None
        if expect is not None and arr.shape[:2] != expect:
            raise ConfigError(f"data_root: {path} is {arr.shape[1]}x{arr.shape[0]} pixels; expected "
                              f"{expect[1]}x{expect[0]} like the other images (set image_size to resize)")
        return arr.reshape(arr.shape[0], arr.shape[1], -1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(one, paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _list_tinyimagenet(where: Path) -> tuple[list[str], dict]:
    classes = sorted(p.name for p in (where / "train").iterdir() if p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    train = [(f, index[c]) for c in classes for f in _image_files(where / "train" / c / "images")]
    ann = where / "val" / "val_annotations.txt"
    test = []
    for lineno, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2 or cols[1] not in index:
            raise ConfigError(f"data_root: {ann} line {lineno} is {line[:60]!r}; expected '<file>\\t<wnid>\\t...' "
                              f"with a wnid that has a folder in {where / 'train'}")
        test.append((where / "val" / "images" / cols[0], index[cols[1]]))
    for f, _ in test:
        if not f.is_file():
            raise ConfigError(f"data_root: {f} is listed in {ann} but missing; unzip tiny-imagenet-200.zip again")
    if not train:
        raise ConfigError(f"data_root: {where / 'train'} holds no images in <wnid>/images/; unzip tiny-imagenet-200.zip again")
    return classes, {"train": train, "test": test}


def _list_imagefolder(root: Path) -> tuple[list[str], dict]:
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    extra = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in index)
    if extra:
        raise ConfigError(f"data_root: {root / 'test'} has class folders {extra[:5]} that {root / 'train'} lacks; "
                          f"every test class needs training images")
    files = {split: [(f, index[c]) for c in classes if (root / split / c).is_dir()
                     for f in _image_files(root / split / c)] for split in ("train", "test")}
    for split in ("train", "test"):
        if not files[split]:
            raise ConfigError(f"data_root: {root / split} has class folders but no image files in them")
    return classes, files


def _read_folders(classes: list[str], files: dict, mode: str, size: int, expect: tuple | None) -> dict:
    out = {"classes": classes}
    if expect is None and size == 0:  # all images must share the first image's size
        from PIL import Image

        with Image.open(files["train"][0][0]) as im:
            expect = (im.size[1], im.size[0])
    for split in ("train", "test"):
        paths, labels = zip(*files[split])
        out[f"x_{split}"] = _decode(list(paths), mode, size, expect)
        out[f"y_{split}"] = torch.tensor(labels, dtype=torch.int64)
    return out


def _imagefolder_mode(files: dict) -> str:
    """Grayscale when every training image is grayscale, RGB otherwise."""
    from PIL import Image

    for f, _ in files["train"]:
        with Image.open(f) as im:
            if im.mode not in ("L", "1", "I", "I;16", "F"):
                return "RGB"
    return "L"


# ---------------------------------------------------------------- load (cached)

def _download(cfg) -> None:
    """torchvision's downloader, only when the preset asks for it (download: true)."""
    if cfg.dataset not in CIFAR:
        raise ConfigError(f"download: only cifar10 and cifar100 can be downloaded; place {cfg.dataset} "
                          f"under data_root yourself")
    import torchvision

    cls = torchvision.datasets.CIFAR10 if cfg.dataset == "cifar10" else torchvision.datasets.CIFAR100
    Path(cfg.data_root).mkdir(parents=True, exist_ok=True)
    cls(cfg.data_root, train=True, download=True)


def _read_all(cfg):
    """(a function that reads the raw dataset, the cache job keyed by the files' fingerprint)."""
    root = Path(cfg.data_root).expanduser()
    if cfg.dataset in CIFAR:
        spec = CIFAR[cfg.dataset]
        where = _dataset_dir(root, spec["folder"])
        files = [where / f for f in spec["train"] + spec["test"]]
        params = {"dataset": cfg.dataset, "files": _fingerprint(files, where)}
        return (lambda: _read_cifar(where, spec)), Job("dataset", params)
    if cfg.dataset == "tinyimagenet":
        where = _dataset_dir(root, TINY_FOLDER)
        classes, files = _list_tinyimagenet(where)
        params = {"dataset": cfg.dataset, "files": _fingerprint([f for s in files.values() for f, _ in s], where)}
        return (lambda: _read_folders(classes, files, "RGB", 0, (64, 64))), Job("dataset", params)
    classes, files = _list_imagefolder(root)
    params = {"dataset": cfg.dataset, "image_size": cfg.image_size, "classes": classes,
              "files": _fingerprint([f for s in files.values() for f, _ in s], root)}
    return (lambda: _read_folders(classes, files, _imagefolder_mode(files), cfg.image_size, None)), Job("dataset", params)


def _round_robin(labels: torch.Tensor) -> torch.Tensor:
    """An order that takes one example of each class in turn (stable within a class)."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank_in_class = torch.arange(len(labels)) - starts
    return order[torch.argsort(rank_in_class * (int(labels.max()) + 1) + sorted_labels, stable=True)]


def _first(x: torch.Tensor, y: torch.Tensor, n: int, interleave: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if n <= 0 or n >= len(y):
        return x, y
    pick = _round_robin(y)[:n] if interleave else torch.arange(n)
    return x[pick], y[pick]


def load(cfg) -> ImageData:
    """The dataset a config names, as uint8 tensors with per-dataset mean/std (see module doc)."""
    if cfg.download:
        _download(cfg)
    check_available(cfg)
    read, job = _read_all(cfg)
    store = Store(cfg.store)

    def compute(out: Path) -> dict:
        raw = read()
        torch.save(raw, out / "images.pt")
        return {"train_examples": len(raw["y_train"]), "test_examples": len(raw["y_test"]),
                "shape": list(raw["x_train"].shape[1:])}

    path = store.run(job, compute)
    raw = torch.load(path / "images.pt", weights_only=True)
    interleave = cfg.dataset not in CIFAR
    x_train, y_train = _first(raw["x_train"], raw["y_train"], cfg.train_subset, interleave)
    x_test, y_test = _first(raw["x_test"], raw["y_test"], cfg.test_subset, interleave)
    mean, std = channel_stats(x_train)
    return ImageData(cfg.dataset, x_train, y_train, x_test, y_test, len(raw["classes"]), mean, std)
