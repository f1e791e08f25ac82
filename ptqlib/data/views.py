"""Batch-level image views: the training augmentation and the attack's query views.

Every view is a tensor operation over a whole batch (uint8 or float images): a translation with
padding, a mirror, or the training augmentation drawn from a generator.
"""
from __future__ import annotations

import hashlib

import torch


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
