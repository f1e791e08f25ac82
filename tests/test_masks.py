import numpy as np
import pytest

from ptqlib.data.views import augment_batch, query_views, shift_flip, view_seed
from ptqlib.data.masks import balanced_masks, target_mask


@pytest.mark.parametrize("m,n", [(4, 7), (32, 1347), (64, 500)])
def test_balanced_every_example_in_exactly_half(m, n):
    keep = balanced_masks(0, m, n)
    assert keep.shape == (m, n) and keep.dtype == bool
    assert (keep.sum(0) == m // 2).all()


def test_masks_deterministic_and_depend_only_on_seed_m_n():
    a = balanced_masks(3, 16, 200)
    # computing other masks in between (a different job order) changes nothing
    balanced_masks(4, 16, 200), balanced_masks(3, 8, 200)
    assert np.array_equal(a, balanced_masks(3, 16, 200))
    assert not np.array_equal(a, balanced_masks(4, 16, 200))
    # models are not all identical, and each sees about half the data
    assert len({row.tobytes() for row in a}) == 16
    assert np.allclose(a.mean(1), 0.5, atol=0.15)


def test_odd_model_count_rejected():
    with pytest.raises(ValueError):
        balanced_masks(0, 5, 10)


def test_target_masks_exact_half_and_distinct():
    masks = [target_mask(0, i, 101) for i in range(4)]
    assert all(m.sum() == 50 for m in masks)
    assert len({m.tobytes() for m in masks}) == 4
    assert np.array_equal(masks[2], target_mask(0, 2, 101))
    # target and shadow masks come from different streams
    assert not np.array_equal(target_mask(0, 0, 100), balanced_masks(0, 4, 100)[0])


def _normalize(x):
    return (x.float() / 255.0 - 0.5) / 0.25


def test_query_views_shift_and_mirror():
    import torch
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).view(2, 1, 5, 5)
    xn = _normalize(x)
    views = query_views(x, _normalize, "mirror_shift", shift=1)
    assert len(views) == 18
    assert torch.equal(views[0], xn)  # identity first
    assert torch.equal(views[9], xn.flip(-1))
    flat = {v.numpy().tobytes() for v in views}
    assert len(flat) == 18  # all distinct
    assert len(query_views(x, _normalize, "shift", shift=2)) == 25
    assert len(query_views(x, _normalize, "identity")) == 1
    # a shift by (dx=1, dy=0) moves content left by one pixel (reflect padding at the edge)
    v = query_views(x, _normalize, "shift", shift=1)
    right = [i for i, vv in enumerate(v) if torch.equal(vv[..., :-1], xn[..., 1:])]
    assert len(right) == 1


def _fixed_input():
    import torch
    x = torch.randint(0, 256, (3, 3, 6, 5), generator=torch.Generator().manual_seed(123), dtype=torch.uint8)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    return x, lambda im: (im.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


# sha256 (first 32 hex digits) of the views' float32 bytes, captured from the implementation that
# normalised first and then shifted (query_views(normalize(x), mode, shift)), before the modes moved
FIXED_VIEW_DIGESTS = {
    ("identity", 1): (1, "503d8caf36af2faba4e26993b03d044c"),
    ("shift", 1): (9, "bd2209645fc620fdb2483539586045ff"),
    ("shift", 2): (25, "d790e9043c97a2cb5080eb5c590f3367"),
    ("mirror_shift", 1): (18, "c784ca30c2ed07de88d11dc61fb1a1b7"),
    ("mirror_shift", 0): (2, "f1767e5975490232fafc35426508f512"),
}


@pytest.mark.parametrize("mode, shift", list(FIXED_VIEW_DIGESTS))
def test_fixed_query_modes_are_bit_identical_to_the_captured_views(mode, shift):
    import hashlib
    x, normalize = _fixed_input()
    count, digest = FIXED_VIEW_DIGESTS[(mode, shift)]
    views = query_views(x, normalize, mode, shift=shift)
    assert len(views) == count
    assert hashlib.sha256(b"".join(v.numpy().tobytes() for v in views)).hexdigest()[:32] == digest


def test_random_per_model_views_reproducible_per_seed_and_fresh_across_seeds():
    import torch
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = query_views(x, _normalize, "random_per_model", count=2, seed=11)
    b = query_views(x, _normalize, "random_per_model", count=2, seed=11)
    c = query_views(x, _normalize, "random_per_model", count=2, seed=12)
    assert len(a) == 2 and all(v.dtype == torch.float32 and v.shape == x.shape for v in a)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert not torch.equal(a[0], a[1])  # two different views of one model
    # every view is the training augmentation (pad 4, mirror) of the uint8 images, then normalised
    gen = torch.Generator().manual_seed(11)
    for v in a:
        assert torch.equal(v, _normalize(augment_batch(x, "crop_flip", gen)))


def test_random_per_model_pads_with_black_before_normalising():
    import torch
    x = torch.full((200, 1, 6, 6), 255, dtype=torch.uint8)  # all white: any 0 came from the pad
    views = query_views(x, lambda im: im.float(), "random_per_model", count=2, seed=3)
    black = torch.stack(views) == 0
    assert black.any() and set(torch.stack(views).unique().tolist()) == {0.0, 255.0}
    # a shift by (dx, dy) = (2, -1) without mirror: exactly the last 2 columns and the first row are pad
    one = shift_flip(x[:1], torch.tensor([2]), torch.tensor([-1]), torch.tensor([False]), 4)[0, 0]
    expected = torch.full((6, 6), 255, dtype=torch.uint8)
    expected[:, -2:] = 0
    expected[0, :] = 0
    assert torch.equal(one, expected)


def test_shift_flip_is_identity_without_shift_or_mirror_and_mirrors_when_asked():
    import torch
    x = torch.randint(0, 256, (4, 3, 7, 5), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    zero = torch.zeros(4, dtype=torch.long)
    assert torch.equal(shift_flip(x, zero, zero, torch.zeros(4, dtype=torch.bool), 4), x)
    assert torch.equal(shift_flip(x, zero, zero, None, 4), x)
    flip = torch.tensor([True, False, True, False])
    got = shift_flip(x, zero, zero, flip, 4)
    assert torch.equal(got[0], x[0].flip(-1)) and torch.equal(got[1], x[1])


def test_view_seed_differs_between_models_and_unknown_mode_names_the_valid_ones():
    import torch
    assert view_seed("abc") == view_seed("abc") != view_seed("abd")
    assert view_seed("abc", seed=1) != view_seed("abc")
    with pytest.raises(ValueError, match="random_per_model"):
        query_views(torch.zeros((2, 1, 4, 4), dtype=torch.uint8), _normalize, "random")


def test_paired_masks_balanced_for_every_even_m_and_nested():
    from ptqlib.data.masks import paired_mask
    n = 101
    masks = np.stack([paired_mask(7, i, n) for i in range(12)])
    for m in (2, 4, 8, 12):
        assert (masks[:m].sum(0) == m // 2).all()
    assert np.array_equal(masks[0], ~masks[1])  # a pair splits the pool
    assert np.array_equal(paired_mask(7, 5, n), masks[5])


def test_raising_m_with_paired_masks_reuses_every_shadow():
    from ptqlib.study.config import validate
    from ptqlib.study.plan import plan_study
    small = plan_study(validate({"shadow_masks": "paired", "num_shadows": 8})).shadows
    large = plan_study(validate({"shadow_masks": "paired", "num_shadows": 16})).shadows
    assert [j.key for j in small] == [j.key for j in large[:8]]
    # with the reference's argsort design every mask (so every job) changes with M
    a8 = plan_study(validate({"num_shadows": 8})).shadows
    a16 = plan_study(validate({"num_shadows": 16})).shadows
    assert not set(j.key for j in a8) & set(j.key for j in a16)
