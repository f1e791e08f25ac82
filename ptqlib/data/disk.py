"""Real datasets read from a local folder in their standard on-disk layouts, as uint8 tensors.

- cifar10 / cifar100: torchvision's python layout (`cifar-10-batches-py/`, `cifar-100-python/`),
  read by `torchvision.datasets.CIFAR10` / `CIFAR100` after torchvision's MD5 check of every file.
  CIFAR-100 uses the 100 fine labels.
- tinyimagenet: `tiny-imagenet-200/` with `train/<wnid>/images/*.JPEG` and `val/images/*.JPEG`
  labelled by `val/val_annotations.txt` (the layout torchvision lacks); classes sorted by wnid for
  both splits; `val` is the test split.
- imagefolder: `root/train/<class>/*` and `root/test/<class>/*`, classes and files found by
  torchvision's ImageFolder helpers, resized to `image_size` only when it is > 0.

`root` may be the folder that holds the dataset's folder or that folder itself. Validation
(`check_available`) reads every file once into the store (`<store>/dataset/<key>/images.pt`), so a
corrupt image or pickle stops a run before any training, and JPEGs are decoded only once. Nothing
is ever downloaded unless `download` is true.

This module does I/O only; `ptqlib.data.images.load_dataset` turns what it reads into an `ImageData`.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ptqlib.errors import ConfigError
from ptqlib.runtime.store import Job, Store

CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "classes": 10, "title": "CIFAR-10",
                "archive": "cifar-10-python.tar.gz", "files": "data_batch_1..5, test_batch, batches.meta"},
    "cifar100": {"folder": "cifar-100-python", "classes": 100, "title": "CIFAR-100",
                 "archive": "cifar-100-python.tar.gz", "files": "train, test, meta"},
}
TINY_FOLDER = "tiny-imagenet-200"
DISK_DATASETS = (*CIFAR, "tinyimagenet", "imagefolder")
VERIFY_ENV = "PTQLIB_VERIFY_CHECKSUMS"  # "0" skips CIFAR's MD5 check: for tests' fake pickles only


# ---------------------------------------------------------------- where the data lies

def _tv():
    """torchvision, imported on first use: about 2.5 s (most of it torch._dynamo, through torchvision.ops)
    that the digits study and the job planner need not pay. Its functions are looked up at call time
    (the tests stub `torchvision.datasets.utils.check_integrity`)."""
    import torchvision.datasets.folder
    import torchvision.datasets.utils

    return torchvision


def _dataset_dir(root: Path, folder: str) -> Path:
    """`root/folder`, or `root` itself when it already is that folder."""
    return root if root.name == folder and not (root / folder).exists() else root / folder


def _cifar_class(dataset: str):
    datasets = _tv().datasets
    return datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100


def _check_cifar(dataset: str, root: Path, verify: bool) -> Path:
    spec, cls = CIFAR[dataset], _cifar_class(dataset)
    where = _dataset_dir(root, spec["folder"])
    expected = f"expected torchvision's {spec['title']} python layout ({spec['files']})"
    how = (f"download {spec['archive']} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
           f"into {root}, or set download: true on a machine with a network")
    if not where.is_dir():
        raise ConfigError(f"data_root: {where} not found; {expected}; {how}")
    data_files = cls.train_list + cls.test_list
    missing = [name for name, _ in data_files if not (where / name).is_file()]
    if missing:
        raise ConfigError(f"data_root: {where} lacks {', '.join(missing)}; {expected}; {how}")
    if not verify:
        return where
    for name, md5 in data_files:
        if not _tv().datasets.utils.check_integrity(str(where / name), md5):
            raise ConfigError(f"data_root: {where / name} is not a readable CIFAR pickle: it fails "
                              f"torchvision's MD5 check (a partial, damaged or different file); {how}")
    meta = where / cls.meta["filename"]
    if not meta.is_file() or not _tv().datasets.utils.check_integrity(str(meta), cls.meta["md5"]):
        raise ConfigError(f"data_root: {meta} is missing or fails torchvision's MD5 check; {expected}; {how}")
    return where


def _check_tinyimagenet(root: Path) -> Path:
    where = _dataset_dir(root, TINY_FOLDER)
    how = f"download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into {root}"
    expected = "train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"
    for need in (where, where / "train", where / "val" / "images", where / "val" / "val_annotations.txt"):
        if not need.exists():
            raise ConfigError(f"data_root: {need} not found; expected the {TINY_FOLDER} layout ({expected}); {how}")
    return where


def _check_imagefolder(root: Path) -> Path:
    for split in ("train", "test"):
        where = root / split
        if not where.is_dir() or not any(p.is_dir() for p in where.iterdir()):
            raise ConfigError(f"data_root: {where} not found or has no class folders; expected "
                              f"{root}/train/<class>/<image> and {root}/test/<class>/<image> (any format "
                              f"Pillow reads); point data_root at the folder holding train/ and test/")
    return root


def check_available(dataset: str, root, *, store=None, image_size: int = 0, verify: bool = True) -> Path | None:
    """Validate a dataset on disk and read it once into the store; return the cache folder.

    Raises a one-line ConfigError naming the path looked at (a missing folder or file, a CIFAR file
    that fails torchvision's MD5 check, an unreadable pickle, a corrupt or odd-sized image) and
    what belongs there. Every image is decoded here (about 1.5 s per 10,000 small JPEGs on one core),
    so a bad file stops the run before any training; later loads read the decoded cache. With
    `store=None` the dataset is read and checked but not kept.
    """
    read, job = _reader(dataset, Path(root).expanduser(), image_size, verify)
    if store is None:
        read()
        return None
    store = store if isinstance(store, Store) else Store(store)  # the run's own Store when given
    if store.is_valid(job):
        return store.path(job)
    raw = read()  # every file decoded before anything is written: a bad one leaves the store untouched

    def compute(out: Path) -> dict:
        torch.save(raw, out / "images.pt")
        return {"train_examples": len(raw["y_train"]), "test_examples": len(raw["y_test"]),
                "shape": list(raw["x_train"].shape[1:])}

    return store.run(job, compute)


def read_images(dataset: str, root, *, store, image_size: int = 0, verify: bool = True,
                download: bool = False) -> dict:
    """{x_train, y_train, x_test, y_test: uint8 (N, C, H, W) / int64 (N,), classes: names}."""
    if download:
        _download(dataset, Path(root).expanduser())
    folder = check_available(dataset, root, store=store, image_size=image_size, verify=verify)
    return torch.load(folder / "images.pt", weights_only=True)


def dataset_identity(dataset: str, *, train_subset: int = 0, test_subset: int = 0, root=None,
                     image_size: int = 0) -> dict:
    """What identifies the examples a study trains on (for job keys): dataset, subsets, size.

    An imagefolder dataset is only known by its folder, so its resolved path is part of it.
    """
    spec = {"dataset": dataset, "train_subset": train_subset, "test_subset": test_subset, "image_size": image_size}
    if dataset == "imagefolder":
        spec["root"] = str(Path(root).expanduser().resolve())
    return spec


def _fingerprint(files: list[Path], base: Path) -> str:
    """A hash of every file's relative path and size: a changed dataset gets a new cache entry."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).relative_to(base).as_posix()}:{Path(f).stat().st_size}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- readers

def _read_cifar(dataset: str, where: Path, verify: bool) -> dict:
    cls = _cifar_class(dataset)
    if not verify:  # the tests' fake pickles: torchvision's reader without its MD5 checks
        cls = type(cls.__name__, (cls,), {"_check_integrity": lambda self: True,
                                          "_load_meta": lambda self: None})
    out = {"classes": [str(i) for i in range(CIFAR[dataset]["classes"])]}
    for split in ("train", "test"):
        try:
            ds = cls(str(where.parent), train=split == "train", download=False)
            x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            y = torch.tensor(ds.targets, dtype=torch.int64)
        except Exception as err:  # any failure to unpickle or reshape means the files are not CIFAR's
            raise ConfigError(f"data_root: {where} could not be read by torchvision's {cls.__name__} "
                              f"({type(err).__name__}: {str(err)[:80]}); delete the folder and extract "
                              f"the archive again") from None
        if x.dtype != torch.uint8 or len(y) != len(x) or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(out["classes"])):
            raise ConfigError(f"data_root: {where} holds {split} data of dtype {x.dtype}, {len(x)} images and "
                              f"{len(y)} labels; expected uint8 images and one label in 0..{len(out['classes']) - 1} each")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def _resized(raw: dict, size: int) -> dict:
    """CIFAR's arrays resized to size x size as an ImageFolder's files are (PIL, bilinear); 0 keeps them."""
    if size <= 0 or raw["x_train"].shape[-1] == size:
        return raw

    def resize(x: torch.Tensor) -> torch.Tensor:
        hwc = x.permute(0, 2, 3, 1).numpy()
        out = [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in hwc]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

    return {**raw, "x_train": resize(raw["x_train"]), "x_test": resize(raw["x_test"])}


def _decode(paths: list[Path], mode: str, size: int, expect: tuple | None) -> torch.Tensor:
    """Decode image files into one uint8 (N, C, H, W) tensor, several files at a time."""
    def one(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)  # a full decode: a truncated file fails here
                if size > 0 and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
            raise ConfigError(f"data_root: {path} could not be read as an image ({str(err)[:80]}); "
                              f"remove or replace the file") from None
        if expect is not None and arr.shape[:2] != expect:
            raise ConfigError(f"data_root: {path} is {arr.shape[1]}x{arr.shape[0]} pixels; expected "
                              f"{expect[1]}x{expect[0]} like the other images (set image_size to resize)")
        return arr.reshape(arr.shape[0], arr.shape[1], -1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        arrays = list(pool.map(one, paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _class_files(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """torchvision's ImageFolder discovery: sorted class folders, their image files (any depth)."""
    tv_folder = _tv().datasets.folder
    classes, index = tv_folder.find_classes(str(folder))
    return classes, tv_folder.make_dataset(str(folder), index, extensions=tv_folder.IMG_EXTENSIONS, allow_empty=True)


def _list_tinyimagenet(where: Path) -> tuple[list[str], dict]:
    classes, train = _class_files(where / "train")
    index = {c: i for i, c in enumerate(classes)}
    ann = where / "val" / "val_annotations.txt"
    test = []
    for lineno, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2 or cols[1] not in index:
            raise ConfigError(f"data_root: {ann} line {lineno} is {line[:60]!r}; expected '<file>\\t<wnid>\\t...' "
                              f"with a wnid that has a folder in {where / 'train'}")
        test.append((str(where / "val" / "images" / cols[0]), index[cols[1]]))
    for f, _ in test:
        if not Path(f).is_file():
            raise ConfigError(f"data_root: {f} is listed in {ann} but missing; unzip tiny-imagenet-200.zip again")
    if not train:
        raise ConfigError(f"data_root: {where / 'train'} holds no images in <wnid>/images/; unzip tiny-imagenet-200.zip again")
    return classes, {"train": train, "test": test}


def _list_imagefolder(root: Path) -> tuple[list[str], dict]:
    classes, train = _class_files(root / "train")
    index = {c: i for i, c in enumerate(classes)}
    extra = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in index)
    if extra:
        raise ConfigError(f"data_root: {root / 'test'} has class folders {extra[:5]} that {root / 'train'} lacks; "
                          f"every test class needs training images")
    tv_folder = _tv().datasets.folder
    test = tv_folder.make_dataset(str(root / "test"), index, extensions=tv_folder.IMG_EXTENSIONS, allow_empty=True)
    files = {"train": train, "test": test}
    for split in ("train", "test"):
        if not files[split]:
            raise ConfigError(f"data_root: {root / split} has class folders but no image files in them "
                              f"(extensions {', '.join(tv_folder.IMG_EXTENSIONS)})")
    return classes, files


def _read_folders(classes: list[str], files: dict, mode: str, size: int, expect: tuple | None) -> dict:
    out = {"classes": classes}
    if expect is None and size == 0:  # all images must share the first image's size
        first = files["train"][0][0]
        try:
            with Image.open(first) as im:
                expect = (im.size[1], im.size[0])
        except (OSError, ValueError, SyntaxError) as err:
            raise ConfigError(f"data_root: {first} could not be read as an image ({str(err)[:80]}); "
                              f"remove or replace the file") from None
    for split in ("train", "test"):
        paths, labels = zip(*files[split])
        out[f"x_{split}"] = _decode(list(paths), mode, size, expect)
        out[f"y_{split}"] = torch.tensor(labels, dtype=torch.int64)
    return out


def _imagefolder_mode(files: dict) -> str:
    """Grayscale when every training image is grayscale, RGB otherwise (unreadable files: RGB, and
    the decode names them)."""
    for f, _ in files["train"]:
        try:
            with Image.open(f) as im:
                if im.mode not in ("L", "1", "I", "I;16", "F"):
                    return "RGB"
        except (OSError, ValueError, SyntaxError):
            return "RGB"
    return "L"


def _reader(dataset: str, root: Path, image_size: int, verify: bool):
    """(a function that reads the raw dataset, the cache job keyed by the files' fingerprint)."""
    if dataset in CIFAR:
        where = _check_cifar(dataset, root, verify)
        cls = _cifar_class(dataset)
        files = [where / name for name, _ in cls.train_list + cls.test_list]
        params = {"dataset": dataset, "image_size": image_size, "files": _fingerprint(files, where)}
        return (lambda: _resized(_read_cifar(dataset, where, verify), image_size)), Job("dataset", params)
    if dataset == "tinyimagenet":
        where = _check_tinyimagenet(root)
        classes, files = _list_tinyimagenet(where)
        params = {"dataset": dataset, "image_size": image_size,
                  "files": _fingerprint([f for s in files.values() for f, _ in s], where)}
        expect = None if image_size else (64, 64)
        return (lambda: _read_folders(classes, files, "RGB", image_size, expect)), Job("dataset", params)
    if dataset == "imagefolder":
        _check_imagefolder(root)
        classes, files = _list_imagefolder(root)
        params = {"dataset": dataset, "image_size": image_size, "classes": classes,
                  "files": _fingerprint([f for s in files.values() for f, _ in s], root)}
        return (lambda: _read_folders(classes, files, _imagefolder_mode(files), image_size, None)), Job("dataset", params)
    raise ConfigError(f"dataset: {dataset!r} is not read from disk; use {', '.join(DISK_DATASETS)}")


def _download(dataset: str, root: Path) -> None:
    """torchvision's downloader, only when asked for (download: true)."""
    if dataset not in CIFAR:
        raise ConfigError(f"download: only cifar10 and cifar100 can be downloaded; place {dataset} "
                          f"under data_root yourself")
    root.mkdir(parents=True, exist_ok=True)
    _cifar_class(dataset)(str(root), train=True, download=True)
