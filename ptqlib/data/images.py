"""Datasets as whole uint8 tensors: the training pool and the test split, with their normalisation.

Every dataset is held as `ImageData`: uint8 images (N, C, H, W) and int64 labels for the
training pool (whose examples are members or non-members) and the test split (used only for
accuracy). Normalisation works on whole batches; membership masks are in `data.masks`, the
augmentation and query views in `data.views`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


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
    canaries: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # pool indices

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
    from sklearn.datasets import load_digits  # scikit-learn (~1.2 s to import) only where digits are read
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


def load_dataset(dataset: str = "digits", *, root="data", store="artifacts", test_fraction: float = 0.25,
                 image_size: int = 0, train_subset: int = 0, test_subset: int = 0, download: bool = False,
                 verify: bool = True, normalization: str = "pool") -> ImageData:
    """A dataset as `ImageData`: digits from scikit-learn, the others read from `root` (see
    `ptqlib.data.disk`), decoded once into `store`.

    test_fraction: digits only. train_subset / test_subset: keep the first n examples (0 = all),
    in file order for CIFAR (already shuffled), in class round-robin order for the class-sorted
    folder layouts (so a subset keeps every class); digits ignores them. download: let
    torchvision fetch CIFAR. verify: torchvision's MD5 check of CIFAR's files. Mean and std are
    those of the training pool in use, or with normalization "fixed" the dataset's published
    constants (`normalization_stats`).
    """
    if dataset == "digits":
        if normalization != "pool":
            normalization_stats(dataset, torch.zeros(0, 1, 1, 1, dtype=torch.uint8), normalization)  # names the key
        return load_digits_data(test_fraction)
    from ptqlib.data import disk as datasets_disk  # torchvision (~2.5 s to import) only for files on disk

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
