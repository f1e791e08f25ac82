import copy

import pytest
import torch

from ptqlib.models.zoo import DigitsCNN, quantizable_layers
from ptqlib.ptq import (QUANTIZERS, Grid, fit_grid, layer_bits_plan, n_levels, quantize_model,
                        recipe_label)


def test_levels():
    assert [n_levels(b) for b in (1.58, 2, 4, 8)] == [3, 4, 16, 256]
    with pytest.raises(ValueError):
        n_levels(1.5)


def _on_grid(w_hat, grid: Grid):
    c = w_hat / grid.scale + grid.zero
    return torch.allclose(c, torch.round(c), atol=1e-4) and c.min() >= -1e-4 and c.max() <= grid.levels - 1 + 1e-4


@pytest.mark.parametrize("bits", [8, 4, 3, 2, 1.58])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_at_most_L_values_per_channel_all_on_grid(bits, symmetric):
    torch.manual_seed(0)
    w = torch.randn(16, 72) * torch.rand(16, 1) + 0.1 * torch.randn(16, 1)
    grid = fit_grid(w, n_levels(bits), symmetric=symmetric)
    w_hat = grid.round(w)
    assert _on_grid(w_hat, grid)
    for row in w_hat:
        assert len(torch.unique(row)) <= n_levels(bits)


def test_error_shrinks_with_bits_and_8bit_far_below_2bit():
    torch.manual_seed(1)
    w = torch.randn(32, 144)
    err = {b: (fit_grid(w, n_levels(b)).round(w) - w).norm() / w.norm() for b in (8, 4, 2, 1.58)}
    assert err[8] < err[4] < err[2] < err[1.58]
    assert err[8] < err[2] / 20


def test_ternary_straddling_channel_contains_zero():
    torch.manual_seed(2)
    w = torch.randn(8, 50)  # every row straddles zero
    grid = fit_grid(w, 3)
    assert torch.all(grid.zero == 1)
    values = grid.round(w)
    for row in values:
        assert (row == 0).any()
        assert len(torch.unique(row)) == 3


def test_clipping_search_beats_plain_minmax():
    torch.manual_seed(3)
    w = torch.randn(4, 1000)
    w[:, 0] = 12.0  # an outlier stretches the min-max range
    searched = fit_grid(w, 4)
    minmax = fit_grid(w, 4, candidates=1)
    err = lambda g: (g.round(w) - w).abs().pow(2.4).sum()  # noqa: E731
    assert err(searched) < err(minmax)
    # and the search agrees with a slow per-channel, per-candidate loop
    for c in range(4):
        wc = w[c:c + 1]
        errors = {a: (_range_grid(wc, a).round(wc) - wc).abs().pow(2.4).sum().item()
                  for a in (1 - i * 0.008 for i in range(100))}
        best = min(errors, key=errors.get)
        assert torch.allclose(searched.scale[c], _range_grid(wc, best).scale[0], rtol=1e-5)


def _range_grid(w, a):
    lo, hi = min(w.min().item(), 0.0) * a, max(w.max().item(), 0.0) * a
    scale = torch.tensor([[(hi - lo) / 3]])
    return Grid(scale, torch.round(-torch.tensor([[lo]]) / scale), 4)


def test_layer_plan_last_first_and_overrides():
    names = ["a", "b", "c", "d"]
    assert layer_bits_plan(names, 2) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert layer_bits_plan(names, 1.58, last_layer_bits=8) == {"a": 1.58, "b": 1.58, "c": 1.58, "d": 8}
    assert layer_bits_plan(names, 2, overrides={"a": 8, "b": 4}) == {"a": 8, "b": 4, "c": 2, "d": 2}
    with pytest.raises(KeyError, match="unknown layer 'x'"):
        layer_bits_plan(names, 2, overrides={"x": 4})


def test_quantize_model_last_layer_only_and_fp_untouched():
    torch.manual_seed(4)
    model = DigitsCNN().eval()
    before = copy.deepcopy(model.state_dict())
    names = [n for n, _ in quantizable_layers(model)]
    plan = layer_bits_plan(names, 1.58, last_layer_bits=8)
    qmodel, qweights = quantize_model(model, "rtn", plan)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the FP model is untouched
    layers = dict(quantizable_layers(qmodel))
    for name in names:
        w = layers[name].weight.detach().flatten(1)
        distinct = max(len(torch.unique(row)) for row in w)
        if name == names[-1]:
            assert qweights[name].grid.levels == 256 and distinct > 3
        else:
            assert qweights[name].grid.levels == 3 and distinct <= 3
    assert "rtn" in QUANTIZERS
    assert recipe_label("rtn", 1.58, 8) == "rtn 1.58b + 8b last" and recipe_label("fp32", 32) == "fp32"


def test_option_table_is_what_each_method_accepts():
    """method_option_names(m) lists exactly the keyword options m's function takes (its **rounding
    catch-all stands for the shared rounding options), and quantize_model rejects a misspelt one."""
    import inspect

    from ptqlib.ptq import method_option_names
    from ptqlib.ptq.reconstruction import ROUNDING_OPTIONS

    assert tuple(QUANTIZERS) == ("rtn", "adaround", "brecq", "obc", "gptq")
    from ptqlib.study.config import METHODS
    assert METHODS == tuple(QUANTIZERS)  # the config names the same methods, without importing torch
    for method in QUANTIZERS:
        params = inspect.signature(QUANTIZERS[method]).parameters.values()
        accepted = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        if any(p.kind is p.VAR_KEYWORD for p in params):
            accepted |= set(ROUNDING_OPTIONS)
        assert set(method_option_names(method)) == accepted, method
        assert len(method_option_names(method)) == len(accepted)
    assert "brecq_lambda" in method_option_names("brecq") and "adaround_lambda" not in method_option_names("brecq")
    assert "obc_hessian" in method_option_names("gptq")
    model = DigitsCNN().eval()
    plan = {n: 2 for n, _ in quantizable_layers(model)}
    with pytest.raises(TypeError, match="adaround_lamda"):
        quantize_model(model, "rtn", plan, adaround_lamda=0.1)
    with pytest.raises(KeyError, match="'obq'"):
        method_option_names("obq")
