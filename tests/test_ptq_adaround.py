"""AdaRound: the rounding parameterisation, the schedule, and the method's invariants."""
import pytest
import torch
from torch import nn

from ptqlib.models.zoo import DigitsCNN, quantizable_layers
from ptqlib.ptq import fit_grid, quantize_model, round_to_nearest
from ptqlib.ptq.reconstruction import (Adam, Rounding, autograd_loss_and_grads, beta_at, initial_logits,
                                       layer_forward, layer_loss_and_grads, reconstruct, rectified_sigmoid,
                                       rounding_regularizer)

torch.set_num_threads(1)
OPTS = dict(adaround_iters=200, adaround_lambda=0.01, adaround_batch=16, adaround_lr=0.02)


def small_model(seed=0):
    torch.manual_seed(seed)
    model = DigitsCNN(width=8).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def plan_for(model, levels):
    return {n: levels for n, _ in quantizable_layers(model)}


def test_initial_h_is_the_fractional_part():
    frac = torch.rand(10000, dtype=torch.float64) * 0.999
    assert torch.allclose(rectified_sigmoid(initial_logits(frac)), frac, atol=1e-6)
    w = torch.randn(16, 50)
    grid = fit_grid(w, 4)
    r = Rounding(w, grid)
    x = w / grid.scale
    assert torch.allclose(rectified_sigmoid(r.v), x - torch.floor(x), atol=1e-5)
    # the soft weight starts equal to W wherever W lies inside the grid's range
    inside = (r.base >= 0) & (r.base <= grid.levels - 2)
    soft = r.soft_weight(rectified_sigmoid(r.v.detach()))
    assert torch.allclose(soft[inside], w[inside], atol=1e-5)


def test_regularizer_values():
    h = torch.tensor([0.0, 1.0, 0.5, 0.25])
    for beta in (2.0, 20.0):
        assert rounding_regularizer(h[:2], beta) == 0
        assert rounding_regularizer(h[2:3], beta) == 1
    assert torch.isclose(rounding_regularizer(h[3:], 2.0), torch.tensor(0.75))


def test_beta_schedule():
    assert beta_at(0, 100, 0.2, 20, 2) is None and beta_at(19, 100, 0.2, 20, 2) is None
    assert beta_at(20, 100, 0.2, 20, 2) == 20
    assert beta_at(60, 100, 0.2, 20, 2) == pytest.approx(11)
    assert beta_at(99, 100, 0.2, 20, 2) == pytest.approx(2 + 18 / 80)
    assert beta_at(10, 1000, 0.2, 20, 2) is None  # the warm-up scales with the iteration count
    assert beta_at(600, 1000, 0.2, 20, 2) == pytest.approx(11)


@pytest.mark.parametrize("beta", [7.0, 2.0, 1.5])
def test_manual_gradient_matches_autograd(beta):
    torch.manual_seed(1)
    w = torch.randn(6, 20)
    grid = fit_grid(w, 3)
    r = Rounding(w, grid)
    with torch.no_grad():
        r.v.add_(torch.randn_like(r.v) * 2)  # some saturated, some not
    x = torch.randn(5, 20)
    target = torch.randn(5, 6)
    lam = 0.3
    ws = r.soft_step()
    (dw,) = torch.autograd.grad((x @ ws.T - target).square().sum(1).mean(), [ws])
    manual = r.grad_v(dw, lam, beta)
    v = r.v.clone().requires_grad_(True)
    h = rectified_sigmoid(v)
    inside = ((r.base >= 0) & (r.base <= grid.levels - 2)).float()
    soft = ((r.base + h * inside + (1 - inside) * h.detach()).clamp(0, grid.levels - 1) - grid.zero) * grid.scale
    loss = (x @ soft.T - target).square().sum(1).mean() + lam * rounding_regularizer(h, beta)
    loss.backward()
    assert torch.allclose(manual, v.grad, atol=1e-5, rtol=1e-4)


def test_soft_step_is_the_clamped_code_formula():
    torch.manual_seed(3)
    w = torch.randn(7, 30) * 3
    grid = fit_grid(w, 3, norm=1.0)  # a tight grid: many weights are clipped
    r = Rounding(w, grid)
    with torch.no_grad():
        r.v.add_(torch.randn_like(r.v) * 3)
    h = rectified_sigmoid(r.v)
    reference = ((r.base + h).clamp(0, grid.levels - 1) - grid.zero) * grid.scale
    assert torch.allclose(r.soft_step(), reference, atol=1e-6)
    assert bool(((r.base < 0) | (r.base > grid.levels - 2)).any())  # the clipped case is exercised


@pytest.mark.parametrize("fused", [True, False])
def test_adam_is_torch_adam(fused):
    torch.manual_seed(4)
    p0 = [torch.randn(5, 3), torch.randn(8)]
    grads = [[torch.randn_like(p) for p in p0] for _ in range(30)]
    mine = [p.clone() for p in p0]
    ref = [p.clone().requires_grad_(True) for p in p0]
    adam = Adam(mine, lr=0.05)
    adam.fused = fused and adam.fused
    opt = torch.optim.Adam(ref, lr=0.05, fused=fused)
    for g in grads:
        adam.step(g)
        for p, gi in zip(ref, g):
            p.grad = gi.clone()
        opt.step()
    for a, b in zip(mine, ref):
        assert torch.allclose(a, b.detach(), atol=1e-6, rtol=1e-6)
        if fused:  # the very kernel torch.optim.Adam(fused=True) runs: bit-identical
            assert torch.equal(a, b.detach())


def test_zero_iterations_is_rtn():
    model = small_model()
    calib = torch.randn(64, 1, 8, 8)
    for levels_bits in (1.58, 2, 4):
        plan = {n: levels_bits for n, _ in quantizable_layers(model)}
        _, qa = quantize_model(model, "adaround", plan, calib, **{**OPTS, "adaround_iters": 0})
        _, qr = quantize_model(model, "rtn", plan)
        for n in qa:
            assert torch.equal(qa[n].grid.scale, qr[n].grid.scale)
            # identical codes except at exact .5 ties (round-half-even vs. V >= 0)
            assert (qa[n].codes != qr[n].codes).float().mean() < 1e-3


def test_weights_end_on_a_neighbouring_grid_point():
    model = small_model()
    calib = torch.randn(96, 1, 8, 8)
    plan = {n: 1.58 if i % 2 else 2 for i, (n, _) in enumerate(quantizable_layers(model))}
    qmodel, qw = quantize_model(model, "adaround", plan, calib, **OPTS)
    fp_layers, q_layers = dict(quantizable_layers(model)), dict(quantizable_layers(qmodel))
    for n, q in qw.items():
        w = fp_layers[n].weight.detach().flatten(1)
        g = q.grid
        below = torch.floor(w / g.scale) + g.zero
        lo, hi = below.clamp(0, g.levels - 1), (below + 1).clamp(0, g.levels - 1)
        assert bool(((q.codes == lo) | (q.codes == hi)).all())
        wq = q_layers[n].weight.detach().flatten(1)
        assert torch.allclose(wq, g.dequantize(q.codes))
        assert max(len(torch.unique(row)) for row in wq) <= g.levels


def test_reconstruction_lowers_the_layer_error_and_stops_exactly():
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    x = torch.randn(256, 4, 6, 6) + 2 * torch.randn(256, 1, 6, 6)  # correlated channels: RTN is not optimal
    y = conv(x).detach()
    grid = fit_grid(conv.weight.detach().flatten(1), 3)

    def err(codes):
        with torch.no_grad():
            return float((layer_forward(conv, x, grid.dequantize(codes).view_as(conv.weight)) - y).square().mean())
    rtn = err(grid.codes(conv.weight.detach().flatten(1)))
    r = Rounding(conv.weight, grid)
    opts = dict(batch=32, lr=0.05, lam=0.1, warmup=0.2, beta_start=20, beta_end=2)  # lam 0.1: all h saturate
    stats = reconstruct(lambda xb, ws: layer_forward(conv, xb, ws[0]), [r], x, y, iters=2000, **opts)
    assert err(r.hard_codes()) < 0.8 * rtn
    assert stats["early_stop"] and stats["iters_run"] < 2000
    # the early stop is exact: running the remaining iterations changes no code
    r2 = Rounding(conv.weight, grid)
    reconstruct(lambda xb, ws: layer_forward(conv, xb, ws[0]), [r2], x, y, iters=2000, **opts,
                early_stop=False)
    assert torch.equal(r.hard_codes(), r2.hard_codes())


def test_unplanned_layers_stay_fp_and_grids_are_the_cores():
    model = small_model()
    calib = torch.randn(64, 1, 8, 8)
    names = [n for n, _ in quantizable_layers(model)]
    plan = {n: 2 for n in names[1:]}
    qmodel, qw = quantize_model(model, "adaround", plan, calib, **OPTS)
    assert names[0] not in qw
    assert torch.equal(dict(quantizable_layers(qmodel))[names[0]].weight, dict(quantizable_layers(model))[names[0]].weight)
    rtn = round_to_nearest(model, {n: 4 for n in plan})  # 2 bits = 4 levels
    assert all(torch.equal(qw[n].grid.scale, rtn[n].grid.scale) for n in plan)


@pytest.mark.parametrize("make_layer,shape", [
    (lambda: nn.Linear(20, 6), (16, 20)),
    (lambda: nn.Linear(20, 6, bias=False), (16, 20)),
    (lambda: nn.Conv2d(4, 8, 3, padding=1), (16, 4, 6, 6)),
    (lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1, bias=False), (16, 4, 7, 7)),
    (lambda: nn.Conv2d(4, 8, 3, dilation=2, groups=2), (16, 4, 9, 9)),
    (lambda: nn.Conv2d(4, 6, 1), (16, 4, 5, 5)),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_closed_form_layer_gradient_is_autograds(make_layer, shape, weighted):
    torch.manual_seed(5)
    layer = make_layer()
    x = torch.randn(*shape)
    with torch.no_grad():
        y = layer(x) + 0.1 * torch.randn_like(layer(x))
    wb = torch.rand_like(y) if weighted else None
    w = (layer.weight.detach() + 0.05 * torch.randn_like(layer.weight)).requires_grad_(True)
    ref_loss, (ref_grad,) = autograd_loss_and_grads(lambda xb, ws: layer_forward(layer, xb, ws[0]))(x, y, [w], wb)
    loss, (grad,) = layer_loss_and_grads(layer)(x, y, [w], wb)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
