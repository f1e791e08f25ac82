import numpy as np
import pytest

from ptqlib.data import balanced_masks, query_views, target_mask


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


def test_query_views_shift_and_mirror():
    import torch
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    views = query_views(x, "mirror_shift", 1)
    assert len(views) == 18
    assert torch.equal(views[0], x)  # identity first
    assert torch.equal(views[9], x.flip(-1))
    flat = {v.numpy().tobytes() for v in views}
    assert len(flat) == 18  # all distinct
    assert len(query_views(x, "shift", 2)) == 25 and len(query_views(x, "identity")) == 1
    # a shift by (dx=1, dy=0) moves content left by one pixel (reflect padding at the edge)
    v = query_views(x, "shift", 1)
    right = [i for i, vv in enumerate(v) if torch.equal(vv[..., :-1], x[..., 1:])]
    assert len(right) == 1


def test_paired_masks_balanced_for_every_even_m_and_nested():
    from ptqlib.data import paired_mask
    n = 101
    masks = np.stack([paired_mask(7, i, n) for i in range(12)])
    for m in (2, 4, 8, 12):
        assert (masks[:m].sum(0) == m // 2).all()
    assert np.array_equal(masks[0], ~masks[1])  # a pair splits the pool
    assert np.array_equal(paired_mask(7, 5, n), masks[5])


def test_raising_m_with_paired_masks_reuses_every_shadow():
    from ptqlib import pipeline
    from ptqlib.config import validate
    small = pipeline.shadow_jobs(validate({"shadow_masks": "paired", "num_shadows": 8}))
    large = pipeline.shadow_jobs(validate({"shadow_masks": "paired", "num_shadows": 16}))
    assert [j.key for j in small] == [j.key for j in large[:8]]
    # with the reference's argsort design every mask (so every job) changes with M
    a8 = pipeline.shadow_jobs(validate({"num_shadows": 8}))
    a16 = pipeline.shadow_jobs(validate({"num_shadows": 16}))
    assert not set(j.key for j in a8) & set(j.key for j in a16)
