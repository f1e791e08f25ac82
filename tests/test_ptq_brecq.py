"""BRECQ: BatchNorm folding, units, and the unfolded statement of the folded result."""
import copy

import torch
from torch import nn

from ptqlib.models.zoo import quantizable_layers, reconstruction_units
from ptqlib.ptq.bn import conv_bn_pairs, fold_batchnorm, reestimate_batchnorm
from ptqlib.ptq.brecq import soft_weights
from ptqlib.ptq import quantize_model

from test_ptq_adaround import small_model

torch.set_num_threads(1)
OPTS = dict(adaround_iters=100, adaround_lambda=0.01, adaround_batch=16, adaround_lr=0.02)


def test_folding_leaves_the_fp_model_unchanged():
    model = small_model()
    x = torch.randn(32, 1, 8, 8)
    folded = copy.deepcopy(model)
    folds = fold_batchnorm(folded, x)
    assert [f.conv for f in folds] == ["features.0", "features.3", "features.7"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_pre_activation_bn_is_not_folded():
    net = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    assert conv_bn_pairs(net, torch.randn(1, 3, 5, 5)) == [("2", "3")]


def test_unit_with_quantization_off_reproduces_the_fp_unit():
    model = small_model()
    x = torch.randn(16, 1, 8, 8)
    fold_batchnorm(model, x)
    h = x
    for unit in reconstruction_units(model):
        layers = [dict(model.named_modules())[n] for n in unit.layers]
        with torch.no_grad():
            expected = unit.module(h)
            originals = [layer.weight.detach().clone() for layer in layers]
            with soft_weights(layers):
                for layer, w in zip(layers, originals):
                    layer.weight = w
                got = unit.module(h)
        assert torch.allclose(got, expected, atol=1e-6)
        assert all(isinstance(layer.weight, nn.Parameter) for layer in layers)  # restored
        h = expected


def test_stored_model_is_the_folded_quantized_network():
    model = small_model()
    calib = torch.randn(96, 1, 8, 8)
    for bits, levels in ((1.58, 3), (2, 4)):
        plan = {n: bits for n, _ in quantizable_layers(model)}
        for loss in ("mse", "fisher"):
            qmodel, qw = quantize_model(model, "brecq", plan, calib, brecq_loss=loss, **OPTS)
            assert any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules())  # BN kept
            layers = dict(quantizable_layers(qmodel))
            for n, q in qw.items():  # stored weights: on the (unfolded) grid
                w = layers[n].weight.detach().flatten(1)
                assert torch.allclose(w, q.grid.dequantize(q.codes))
                assert q.codes.min() >= 0 and q.codes.max() <= levels - 1
                assert max(len(torch.unique(row)) for row in w) <= levels
            folded = copy.deepcopy(qmodel)
            fold_batchnorm(folded, calib)
            for n, layer in quantizable_layers(folded):  # folded weights: <= L values per channel
                assert max(len(torch.unique(row)) for row in layer.weight.detach().flatten(1)) <= levels
            with torch.no_grad():
                assert torch.allclose(folded(calib), qmodel(calib), atol=1e-4)


def test_negative_bn_scale_is_handled():
    model = small_model()
    with torch.no_grad():
        model.features[1].weight[::2] *= -1
    calib = torch.randn(64, 1, 8, 8)
    plan = {n: 2 for n, _ in quantizable_layers(model)}
    _, qw = quantize_model(model, "brecq", plan, calib, **{**OPTS, "adaround_iters": 0})
    _, rtn = quantize_model(model, "rtn", plan)
    q = qw["features.0"]
    assert bool((q.grid.scale > 0).all())
    # with 0 iterations BRECQ is RTN on the folded weights, which per channel is RTN up to a
    # rescaling of the grid search: the relative error stays that of RTN
    w = dict(quantizable_layers(model))["features.0"].weight.detach().flatten(1)
    err_b = (q.grid.dequantize(q.codes) - w).norm() / w.norm()
    err_r = (rtn["features.0"].grid.dequantize(rtn["features.0"].codes) - w).norm() / w.norm()
    assert err_b < 1.2 * err_r


def test_bn_reestimation_recovers_the_data_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    x = torch.randn(512, 1, 6, 6) * 3 + 1
    reestimate_batchnorm(net, x, batch_size=128)
    with torch.no_grad():
        y = net[0](x)
    assert torch.allclose(net[1].running_mean, y.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(net[1].running_var, y.var((0, 2, 3)), rtol=2e-2)
    assert not net.training


def test_brecq_reads_brecq_lambda_and_adaround_reads_adaround_lambda():
    model = small_model(3)
    calib = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    plan = {n: 2 for n, _ in quantizable_layers(model)}
    opts = dict(adaround_iters=60, adaround_batch=16, adaround_lr=0.05)

    def codes(method, **extra):
        _, q = quantize_model(model, method, plan, calib, **opts, **extra)
        return torch.cat([q[n].codes.flatten() for n in plan])
    base = codes("brecq")
    assert torch.equal(codes("brecq", adaround_lambda=1e4), base)
    assert not torch.equal(codes("brecq", brecq_lambda=1e4), base)
    ada = codes("adaround")
    assert torch.equal(codes("adaround", brecq_lambda=1e4), ada)
    assert not torch.equal(codes("adaround", adaround_lambda=1e4), ada)
