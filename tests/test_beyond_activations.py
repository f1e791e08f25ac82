"""Activation quantization: values on the grid, ranges that cover (min-max) or beat min-max (MSE),
W8A8 as accurate as FP32 on digits, and a quantized model that loads back with its ranges."""
import numpy as np
import pytest
import torch

from ptqlib.study.config import validate
from ptqlib.study.plan import plan_study, quantize_job
from ptqlib.ptq.activations import act_grid, calibrate_range, fake_quantize, quantize_activations
from ptqlib.runtime.store import Store
from ptqlib.models.training import accuracy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One default-recipe digits target (40 epochs), its config and store."""
    torch.set_num_threads(1)
    cfg = validate({"num_targets": 1, "num_shadows": 4, "methods": ["rtn"], "bits": [8], "last_layer_bits": [None]})
    store = Store(tmp_path_factory.mktemp("store"))
    target = plan_study(cfg).targets[0]
    target.run(store)
    return cfg, store, target


def test_fake_quantize_puts_values_on_the_grid_and_keeps_zero():
    x = torch.randn(4000, dtype=torch.float64) * 3 + 1
    lo, hi = float(x.min()), float(x.max())
    for levels in (4, 16, 256):
        scale, zero = act_grid(lo, hi, levels)
        q = fake_quantize(x, lo, hi, levels)
        codes = q / scale + zero
        assert torch.allclose(codes, codes.round(), atol=1e-6)  # on the grid
        assert codes.min() >= -1e-6 and codes.max() <= levels - 1 + 1e-6
        assert len(torch.unique(codes.round())) <= levels
        assert fake_quantize(torch.zeros(3, dtype=torch.float64), lo, hi, levels).abs().max() == 0  # 0 exact
    # a ReLU output: lo = 0 gives the whole grid to the positive side
    scale, zero = act_grid(0.0, 2.0, 4)
    assert zero == 0 and scale == pytest.approx(2 / 3)


def test_minmax_covers_the_calibration_activations_and_mse_is_never_worse():
    gen = torch.Generator().manual_seed(0)
    for x in (torch.randn(20000, generator=gen), torch.relu(torch.randn(20000, generator=gen)) ** 2,
              torch.distributions.StudentT(2.0).sample((20000,))):
        for bits in (8, 4, 2):
            levels = 2 ** bits
            lo, hi = calibrate_range(x, levels, "minmax")
            scale, _ = act_grid(lo, hi, levels)
            assert lo <= float(x.min()) and hi >= float(x.max())
            # every calibration value lies within half a step of its grid point: nothing is clipped
            assert float((fake_quantize(x, lo, hi, levels) - x).abs().max()) <= scale / 2 + 1e-5
            errors = {m: float((fake_quantize(x, *calibrate_range(x, levels, m), levels) - x).square().sum())
                      for m in ("minmax", "mse")}
            assert errors["mse"] <= errors["minmax"] * (1 + 1e-6), (bits, errors)
    # a bulk in [-1, 1] and ten outliers at +-5: at 4 bits, clipping the outliers must pay off
    heavy = torch.cat([torch.rand(19990, generator=gen) * 2 - 1, torch.tensor([5.0, -5.0] * 5)])
    err = {m: float((fake_quantize(heavy, *calibrate_range(heavy, 16, m), 16) - heavy).square().sum())
           for m in ("minmax", "mse")}
    assert err["mse"] < 0.5 * err["minmax"]
    # percentile: 0.01% of 20000 = 2 values at each end lie outside the range
    one_each = torch.cat([torch.rand(19998, generator=gen) * 2 - 1, torch.tensor([5.0, -5.0])])
    lo, hi = calibrate_range(one_each, 16, "percentile")
    assert -1.0 <= lo < -0.99 and 0.99 < hi <= 1.0


def test_quantize_activations_hooks_every_layer(trained):
    cfg, store, target = trained
    from ptqlib.study.jobs import load_data
    data = load_data(target.data, store)
    model = target.load(store)
    calib = data.normalize(data.x_train[:256])
    fp_logits = model(calib).detach()
    ranges = quantize_activations(model, 2, calib, "minmax")
    assert list(ranges) == ["features.0", "features.3", "features.7", "classifier"]
    assert ranges["features.3"][0] == 0.0  # after a ReLU
    assert not torch.allclose(model(calib), fp_logits, atol=1e-3)  # 2-bit activations change the output


@pytest.mark.parametrize("act_range", ["minmax", "mse"])
def test_w8a8_within_half_a_point_of_fp32_and_loads_back(trained, act_range):
    cfg, store, target = trained
    from ptqlib.study.jobs import load_data
    data = load_data(target.data, store)
    fp_acc = store.meta(target)["test_acc"]
    cfg8 = validate({**{k: getattr(cfg, k) for k in ("num_targets", "num_shadows")}, "act_range": act_range})
    job = quantize_job(cfg8, target, {"method": "rtn", "bits": 8, "last_layer_bits": None}, act_bits=8)
    job.run(store)
    meta = store.meta(job)
    assert job.label == "rtn 8b a8" and meta["act_bits"] == 8
    assert abs(meta["test_acc"] - fp_acc) <= 0.005, (meta["test_acc"], fp_acc)
    loaded = job.load(store)  # ranges re-attached from act_ranges.pt
    assert accuracy(loaded, data) == pytest.approx(meta["test_acc"])
    weights_only = quantize_job(cfg8, target, {"method": "rtn", "bits": 8, "last_layer_bits": None})
    weights_only.run(store)
    x = data.normalize(data.x_test[:64])
    diff = (loaded(x) - weights_only.load(store)(x)).abs().max()
    assert diff > 0  # the activation grid is really applied after load
    w4a4 = quantize_job(cfg8, target, {"method": "rtn", "bits": 4, "last_layer_bits": None}, act_bits=4)
    w4a4.run(store)
    assert store.meta(w4a4)["test_acc"] < fp_acc + 1e-9
    assert np.isfinite(store.meta(w4a4)["test_acc"])
