"""Datasets as whole uint8 tensors, membership masks, and batch-level augmentation.

Every dataset is held as `ImageData`: uint8 images (N, C, H, W) and int64 labels for the
training pool (whose examples are members or non-members) and the test split (used only for
accuracy). Normalisation and augmentation work on whole batches as tensor operations.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from . import datasets_disk


@dataclass
class ImageData:
    name: str
    x_train: torch.Tensor  # uint8 (N, C, H, W): the membership pool
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # float32 (C,), on the 0..1 scale
    std: torch.Tensor

    @property
    def shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32, standardised per channel."""
        x = x_uint8.float().div_(255.0)
        return (x - self.mean.view(1, -1, 1, 1).to(x.device)) / self.std.view(1, -1, 1, 1).to(x.device)


def channel_stats(x_uint8: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (unbiased) on the 0..1 scale.

    Sums are accumulated in float64 over chunks of images, so a whole TinyImageNet pool never
    needs a float copy (which would take 5 GB).
    """
    c = x_uint8.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x_uint8), chunk):
        x = x_uint8[i:i + chunk].double()
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    n = x_uint8.numel() // c
    mean = total / n
    var = (total_sq - n * mean.square()) / max(n - 1, 1)
    return (mean / 255.0).float(), (var.clamp_min(0).sqrt() / 255.0).float().clamp_min(1e-3)


NORMALIZATIONS = ("pool", "fixed")
# The authors' fixed constants (Quant-MIA Utils/utils.py): CIFAR's own; ImageNet's for TinyImageNet.
FIXED_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def normalization_stats(dataset: str, x_train: torch.Tensor, normalization: str = "pool") -> tuple:
    """Per-channel (mean, std) on the 0..1 scale: the training pool's (`channel_stats`) or, with
    "fixed", the dataset's published constants (`FIXED_STATS`)."""
    if normalization == "pool":
        return channel_stats(x_train)
    if normalization != "fixed":
        raise ValueError(f"normalization: {normalization!r} is not one of {list(NORMALIZATIONS)}")
    if dataset not in FIXED_STATS:
        raise ValueError(f"normalization: 'fixed' has constants only for {list(FIXED_STATS)}, not {dataset!r}; "
                         "use 'pool'")
    mean, std = FIXED_STATS[dataset]
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def load_digits_data(test_fraction: float = 0.25, split_seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), split stratified.

    The split uses a fixed seed independent of the study's seed, so every preset on digits
    shares one membership pool and one test set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                           random_state=split_seed, stratify=labels)
    x_train = torch.from_numpy(images[idx_train])
    mean, std = channel_stats(x_train)
    return ImageData("digits", x_train, torch.from_numpy(labels[idx_train]),
                     torch.from_numpy(images[idx_test]), torch.from_numpy(labels[idx_test]),
                     10, mean, std)


def load_dataset(dataset="digits", *, root="data", store="artifacts", test_fraction: float = 0.25,
                 image_size: int = 0, train_subset: int = 0, test_subset: int = 0, download: bool = False,
                 verify: bool = True, normalization: str = "pool") -> ImageData:
    """A dataset as `ImageData`: digits from scikit-learn, the others read from `root` (see
    `ptqlib.datasets_disk`), decoded once into `store`.

    test_fraction: digits only. train_subset / test_subset: keep the first n examples (0 = all),
    in file order for CIFAR (already shuffled), in class round-robin order for the class-sorted
    folder layouts (so a subset keeps every class); digits ignores them. download: let
    torchvision fetch CIFAR. verify: torchvision's MD5 check of CIFAR's files. Mean and std are
    those of the training pool in use, or with normalization "fixed" the dataset's published
    constants (`normalization_stats`). `dataset` may also be a study config.
    """
    if not isinstance(dataset, str):
        return load_dataset(**datasets_disk.dataset_options(dataset))
    if dataset == "digits":
        if normalization != "pool":
            normalization_stats(dataset, torch.zeros(0, 1, 1, 1, dtype=torch.uint8), normalization)  # names the key
        return load_digits_data(test_fraction)
    raw = datasets_disk.read_images(dataset, root, store=store, image_size=image_size, verify=verify,
                                    download=download)
    interleave = dataset not in datasets_disk.CIFAR
    x_train, y_train = first_examples(raw["x_train"], raw["y_train"], train_subset, interleave)
    x_test, y_test = first_examples(raw["x_test"], raw["y_test"], test_subset, interleave)
    mean, std = normalization_stats(dataset, x_train, normalization)
    return ImageData(dataset, x_train, y_train, x_test, y_test, len(raw["classes"]), mean, std)


def _round_robin(labels: torch.Tensor) -> torch.Tensor:
    """An order that takes one example of each class in turn (stable within a class)."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank_in_class = torch.arange(len(labels)) - starts
    return order[torch.argsort(rank_in_class * (int(labels.max()) + 1) + sorted_labels, stable=True)]


def first_examples(x: torch.Tensor, y: torch.Tensor, n: int, interleave: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n examples (all when n is 0), in class round-robin order when `interleave`."""
    if n <= 0 or n >= len(y):
        return x, y
    pick = _round_robin(y)[:n] if interleave else torch.arange(n)
    return x[pick], y[pick]


# ---------------------------------------------------------------- membership masks

def target_mask(seed: int, index: int, n: int) -> np.ndarray:
    """Members of target `index`: a uniformly random half of the pool (exactly n // 2)."""
    rng = np.random.default_rng([seed, 1, index])
    keep = np.zeros(n, dtype=bool)
    keep[rng.permutation(n)[: n // 2]] = True
    return keep


def balanced_masks(seed: int, num_models: int, n: int) -> np.ndarray:
    """(M, N) shadow membership: every example IN for exactly M/2 models.

    Draw U ~ uniform(M, N) from the seed, rank models per example, keep rank < M/2. The
    result depends only on (seed, M, N), so independently launched jobs agree on it.
    """
    if num_models % 2:
        raise ValueError(f"num_models must be even for balanced masks, got {num_models}")
    rng = np.random.default_rng([seed, 2, num_models, n])
    u = rng.random((num_models, n))
    rank = u.argsort(axis=0).argsort(axis=0)
    return rank < num_models // 2


def paired_mask(seed: int, index: int, n: int) -> np.ndarray:
    """Members of shadow `index` under the paired design: models 2p and 2p+1 split one random
    permutation of the pool into complementary halves.

    Every example is then IN for exactly M/2 of any even number M of shadows, and a model's mask
    does not depend on M: raising M keeps every existing shadow (and its trained weights).
    """
    pair, side = divmod(index, 2)
    perm = np.random.default_rng([seed, 3, pair, n]).permutation(n)
    keep = np.zeros(n, dtype=bool)
    keep[perm[: n // 2] if side == 0 else perm[n // 2:]] = True
    return keep


# ---------------------------------------------------------------- augmentation

def shift_batch(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """Translate each image of a batch by its own (dx, dy) within +-pad pixels.

    Pads once, then gathers every image's crop with one indexing operation.
    """
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x.float() if mode == "reflect" else x, (pad, pad, pad, pad), mode=mode)
    rows = (torch.arange(h, device=x.device).view(1, h) + pad + dy.view(n, 1)).view(n, 1, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + pad + dx.view(n, 1)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[batch, chan, rows, cols].to(x.dtype)


def shift_flip(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor | None, pad: int) -> torch.Tensor:
    """Each image translated by its own (dx, dy) with zero padding (black for uint8 images, as
    torchvision's RandomCrop(padding=pad)), then mirrored where `flip` is True."""
    out = shift_batch(x, dx, dy, pad, mode="constant")
    if flip is None:
        return out
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), out.flip(-1), out)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation applied to a whole batch (float or uint8 images).

    crop_flip: a random translation within +-4 pixels (zero padding) and a random mirror, as
    torchvision's RandomCrop(padding=4) + RandomHorizontalFlip; shift: within +-1 pixel, no mirror.
    """
    if kind == "none":
        return x
    n = x.shape[0]
    pad = 4 if kind == "crop_flip" else 1
    dx = torch.randint(-pad, pad + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(-pad, pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5) if kind == "crop_flip" else None
    return shift_flip(x, dx, dy, flip, pad)


QUERY_MODES = ("identity", "shift", "mirror_shift", "random_per_model")


def view_seed(model_key: str, seed: int = 0) -> int:
    """The seed of one model's random query views, derived from its job key (and the study seed):
    the same for every query of that model, different between models."""
    digest = hashlib.sha256(f"{seed}:{model_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: torch.Generator takes any int64


def query_views(images: torch.Tensor, normalize, mode: str, *, shift: int = 1, count: int = 2,
                seed: int = 0) -> list[torch.Tensor]:
    """Normalised query views of a batch of uint8 images, as a list of float tensors.

    identity: [x]; shift: every translation within +-shift (reflect padding), identity first;
    mirror_shift: the same for x and its mirror image (2 * (2s+1)^2 views, the original LiRA).
    These are computed after `normalize`, so every model sees exactly the same views.
    random_per_model: `count` views of the training augmentation (crop with black padding 4 +
    mirror, drawn per image on the uint8 images, then normalised) from a generator seeded by
    `seed`; the caller passes a seed derived from the queried model (`view_seed`), so the views
    are reproducible for one model and drawn afresh for every model, as in the paper's code.
    """
    if mode == "random_per_model":
        gen = torch.Generator().manual_seed(int(seed))
        return [normalize(augment_batch(images, "crop_flip", gen)) for _ in range(count)]
    if mode not in QUERY_MODES:
        raise ValueError(f"queries: {mode!r} is not a query mode; valid: {', '.join(QUERY_MODES)}")
    return _fixed_views(normalize(images), mode, shift)


def _fixed_views(x: torch.Tensor, mode: str, shift: int) -> list[torch.Tensor]:
    if mode == "identity":
        return [x]
    bases = [x] if mode == "shift" else [x, x.flip(-1)]
    offsets = [(0, 0)] + [(dx, dy) for dy in range(-shift, shift + 1)
                          for dx in range(-shift, shift + 1) if (dx, dy) != (0, 0)]
    n = x.shape[0]
    views = []
    for base in bases:
        for dx, dy in offsets:
            if (dx, dy) == (0, 0):
                views.append(base)
                continue
            views.append(shift_batch(base, torch.full((n,), dx), torch.full((n,), dy), shift, "reflect"))
    return views
