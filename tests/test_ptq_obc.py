"""OBQ and GPTQ: exact identities first, then a brute-force comparison on tiny layers."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ptqlib.models.zoo import DigitsCNN, unit_of
from ptqlib.ptq import Grid, fit_grid, quantize_model
from ptqlib.ptq.obc import HessianAccumulator, fp_hessians, gptq_layer, inverse, layer_samples, obq_layer, obq_rows
from reference_obq import obq_reference

torch.set_num_threads(1)
D64 = torch.float64


def random_problem(gen, rows, d, samples=None, levels=4):
    x = torch.randn(samples or 3 * d, d, generator=gen, dtype=D64)
    x = x @ torch.randn(d, d, generator=gen, dtype=D64)  # correlated inputs
    h = 2 * x.T @ x / len(x)
    w = torch.randn(rows, d, generator=gen, dtype=D64)
    grid = fit_grid(w.float(), levels)
    grid = Grid(grid.scale.double(), grid.zero.double(), levels)
    return w, h, grid


def layer_loss(w, q, h):
    """1/2 (w - q)^T H (w - q) per row."""
    e = w - q
    return 0.5 * ((e @ h) * e).sum(1)


def test_step_losses_sum_to_the_final_error():
    gen = torch.Generator().manual_seed(0)
    for levels in (3, 4, 16):
        w, h, grid = random_problem(gen, 6, 20, levels=levels)
        res = obq_rows(w, inverse(h), grid)
        q = grid.dequantize(res["codes"])
        assert torch.allclose(res["losses"].sum(1), layer_loss(w, q, h), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block", [1, 5, 24, 64])
def test_fast_obq_is_the_textbook_algorithm(block):
    """The batched OBQ with delayed (blocked) downdates makes the same choices as the plain
    one-row reference (float64 both; dead inputs and dampening included), with rows split over
    several batches and blocks that do and do not divide D = 24."""
    gen = torch.Generator().manual_seed(6)
    for levels in (3, 4, 16):
        w, h, grid = random_problem(gen, 7, 24, levels=levels)
        h[5, :] = h[:, 5] = 0.0  # a dead input
        codes, losses = obq_layer(w, h, grid, damp=0.01, budget=3 * 24 * 24 * 8, dtype=D64, block=block)
        ref_codes, ref_losses = obq_reference(w, h, grid, damp=0.01)
        assert torch.equal(codes, ref_codes)
        assert torch.allclose(losses, ref_losses, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block", [1, 3, 64])
def test_downdated_inverse_is_the_inverse_without_the_eliminated_columns(block):
    gen = torch.Generator().manual_seed(1)
    w, h, grid = random_problem(gen, 4, 12)
    for k in (1, 5, 11):
        res = obq_rows(w, inverse(h), grid, max_steps=k, block=block)
        for row in range(len(w)):
            act = res["active"][row]
            assert len(act) == 12 - k
            expected = torch.linalg.inv(h[act][:, act])
            assert torch.allclose(res["hinv"][row], expected, rtol=1e-8, atol=1e-10)


def test_diagonal_hessian_gives_rtn_for_obq_and_gptq():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(8, 30, generator=gen)
    h = 3.7 * torch.eye(30, dtype=D64)
    for levels in (3, 4, 16):
        grid = fit_grid(w, levels)
        rtn = grid.codes(w)
        assert torch.equal(obq_layer(w, h, grid, damp=0.0)[0], rtn)
        assert torch.equal(obq_layer(w, h, grid, damp=0.01)[0], rtn)
        assert torch.equal(gptq_layer(w, h, grid, damp=0.0)[0], rtn)


def test_gptq_block_size_does_not_change_the_result():
    gen = torch.Generator().manual_seed(3)
    w, h, grid = random_problem(gen, 10, 300, samples=2000)
    c1, l1 = gptq_layer(w, h, grid, damp=0.01, block=1, dtype=D64)
    c128, l128 = gptq_layer(w, h, grid, damp=0.01, block=128, dtype=D64)
    assert torch.equal(c1, c128)
    assert torch.allclose(l1, l128, rtol=1e-10)


def test_gptq_losses_are_the_layer_error():
    gen = torch.Generator().manual_seed(4)
    w, h, grid = random_problem(gen, 5, 40)
    codes, losses = gptq_layer(w, h, grid, damp=0.0, block=16, dtype=D64)
    assert torch.allclose(losses, layer_loss(w, grid.dequantize(codes), h), rtol=1e-8)


def test_brute_force_bounds_obq_which_beats_rtn_in_most_cases():
    """On random tiny layers (d <= 6, 3-4 levels, correlated inputs), the best grid assignment
    found by brute force bounds OBQ from below (OBQ's codes are a valid assignment and its
    recorded loss is their true loss).

    OBQ <= RTN is not a theorem: greedy elimination can walk into a worse corner than plain
    rounding, most often when H is ill-conditioned (as here). Measured on 480 rows for seeds
    0, 4, 5: OBQ <= RTN in 94.4-97.3% of rows, total loss OBQ/RTN 0.60-0.70. The test requires
    90% and a ratio <= 0.8: about three binomial standard deviations below the worst seed, so a
    correct implementation passes anywhere, while a wrong compensation (sign flipped: 72%,
    ratio 1.7-2.2) fails. (Greedy is a heuristic: on problems this small, other elimination
    orders reach similar or lower totals, so the test does not single out the order.)
    """
    gen = torch.Generator().manual_seed(5)
    rows = not_worse = 0
    total_obq = total_rtn = 0.0
    for d, levels in itertools.product((3, 4, 5, 6), (3, 4)):
        combos = torch.tensor(list(itertools.product(range(levels), repeat=d)), dtype=D64)  # (K, d)
        for _ in range(15):
            w, h, grid = random_problem(gen, 4, d, samples=2 * d, levels=levels)
            res = obq_rows(w, inverse(h), grid)
            l_obq = layer_loss(w, grid.dequantize(res["codes"]), h)
            assert torch.allclose(res["losses"].sum(1), l_obq, rtol=1e-8, atol=1e-12)
            l_rtn = layer_loss(w, grid.round(w), h)
            for r in range(len(w)):
                qs = (combos - grid.zero[r]) * grid.scale[r]  # every assignment of row r
                best = layer_loss(w[r].expand_as(qs), qs, h).min()
                assert best <= l_obq[r] * (1 + 1e-9) + 1e-12
                rows += 1
                not_worse += bool(l_obq[r] <= l_rtn[r] * (1 + 1e-9) + 1e-12)
            total_obq += float(l_obq.sum())
            total_rtn += float(l_rtn.sum())
    assert not_worse / rows >= 0.90, (not_worse, rows)
    assert total_obq / total_rtn <= 0.8, (total_obq, total_rtn)


def test_hessian_of_a_conv_matches_the_unfolded_definition():
    gen = torch.Generator().manual_seed(6)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2, bias=False)
    x = torch.randn(5, 3, 7, 7, generator=gen)
    acc = HessianAccumulator(conv)
    conv.register_forward_hook(acc)
    conv(x)
    s = layer_samples(conv, x).double()
    assert s.shape == (5 * 4 * 4, 27)
    # the samples reproduce the conv: W s == conv output at every position
    y = (s.float() @ conv.weight.detach().flatten(1).T).view(5, 16, 4).permute(0, 2, 1).reshape(5, 4, 4, 4)
    assert torch.allclose(y, conv(x), atol=1e-5)
    assert torch.allclose(acc.hessian(), 2 * s.T @ s / len(s))


@pytest.mark.parametrize("method", ["obc", "gptq"])
def test_methods_on_a_model_stay_on_the_grid(method):
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    calib = torch.randn(64, 1, 8, 8)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    plan = {n: 1.58 for n in names}
    plan[names[-1]] = 2
    qmodel, qw = quantize_model(model, method, plan, calib, obc_damp=0.01)
    layers = dict(qmodel.named_modules())
    for n, q in qw.items():
        assert q.algorithm == ("obq" if method == "obc" else "gptq")
        w = layers[n].weight.detach().flatten(1)
        codes = w / q.grid.scale + q.grid.zero
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        assert codes.round().min() >= 0 and codes.round().max() <= q.grid.levels - 1
        assert max(len(torch.unique(row)) for row in w) <= q.grid.levels


# ---------------------------------------------------------------- Hessians from the full-precision model

class TinyConvNet(nn.Sequential):
    def reconstruction_units(self):  # one unit: the sequential driver carries nothing between layers
        return [unit_of(self, "all", self)]


def tiny_conv_net(seed=0):
    torch.manual_seed(seed)
    return TinyConvNet(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 5, 3), nn.ReLU(), nn.Flatten(1), nn.Linear(20, 3)).eval()


def plain_fp_hessians(model, images):
    """2 X^T X / n of every layer's FP inputs in float64: conv inputs unfolded, every position a sample."""
    inputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: inputs.__setitem__(n, inp[0].detach()))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            cols = F.unfold(inputs[n].double(), m.kernel_size, m.dilation, m.padding, m.stride)  # (N, D, P)
            x = cols.permute(0, 2, 1).reshape(-1, cols.shape[1])
        elif isinstance(m, nn.Linear):
            x = inputs[n].double()
        else:
            continue
        out[n] = 2 * x.T @ x / len(x)
    return out


@pytest.mark.parametrize("bits", [2, 1.58])
def test_fp_hessians_are_the_full_precision_inputs_and_obc_solves_on_them(bits):
    """obc_hessian="fp": every layer's H is 2 X^T X / n of the FP model's inputs over all the
    calibration rounds, and the codes are the textbook OBQ's on those Hessians, undamped
    (input channel 1 is always 0: dead inputs in the first conv)."""
    model = tiny_conv_net()
    gen = torch.Generator().manual_seed(7)
    rounds = [torch.randn(40, 2, 8, 8, generator=gen), torch.randn(30, 2, 8, 8, generator=gen)]
    for r in rounds:
        r[:, 1] = 0.0
    reference = plain_fp_hessians(model, torch.cat(rounds))
    accs = fp_hessians(model, list(reference), rounds, chunk=16)
    for n, h in reference.items():
        assert torch.allclose(accs[n].hessian(), h, rtol=1e-10, atol=1e-12), n
    assert torch.diagonal(reference["0"]).eq(0).sum() == 9  # the dead channel's 3 x 3 inputs
    plan = {n: bits for n in reference}
    qmodel, qw = quantize_model(model, "obc", plan, rounds, obc_hessian="fp", obc_damp=0.0)
    layers = dict(model.named_modules())
    for n, h in reference.items():
        w = layers[n].weight.detach().flatten(1)
        grid = fit_grid(w, qw[n].grid.levels)
        ref_codes, ref_losses = obq_reference(w, h, grid, damp=0.0)
        assert torch.equal(qw[n].codes, ref_codes), n
        assert qw[n].stats["hessian"] == "fp"
        assert qw[n].stats["loss"] == pytest.approx(float(ref_losses.sum()), rel=1e-4)
    assert not torch.equal(dict(qmodel.named_modules())["4"].weight, layers["4"].weight)


def test_sequential_hessians_differ_and_rounds_are_concatenated():
    """Sequential H comes from the quantized prefix (so later layers differ from "fp"), and a
    list of calibration rounds is the same as their concatenation."""
    model = tiny_conv_net(1)
    gen = torch.Generator().manual_seed(8)
    rounds = [torch.randn(24, 2, 8, 8, generator=gen), torch.randn(24, 2, 8, 8, generator=gen)]
    plan = {n: 2 for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    _, listed = quantize_model(model, "gptq", plan, rounds, obc_hessian="sequential")
    _, joined = quantize_model(model, "gptq", plan, torch.cat(rounds), obc_hessian="sequential")
    _, fp = quantize_model(model, "gptq", plan, rounds, obc_hessian="fp")
    assert all(torch.equal(listed[n].codes, joined[n].codes) for n in plan)
    assert torch.equal(listed["0"].codes, fp["0"].codes)  # the first layer sees the same input
    assert listed["7"].stats["loss"] != fp["7"].stats["loss"]
    with pytest.raises(ValueError, match="obc_hessian"):
        quantize_model(model, "obc", plan, rounds, obc_hessian="quantized")
