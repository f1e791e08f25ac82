"""Every PTQ method quantizes the CPU-sized CIFAR net: codes on the grid, dequantized weights in the model."""
import pytest
import torch

from ptqlib.models.zoo import build_model, quantizable_layers
from ptqlib.ptq import layer_bits_plan, n_levels, quantize_model

torch.set_num_threads(1)
OPTIONS = {"rtn": {}, "adaround": {"adaround_iters": 20, "adaround_batch": 8},
           "brecq": {"adaround_iters": 20, "adaround_batch": 8}, "obc": {}, "gptq": {}}


@pytest.mark.parametrize("method", list(OPTIONS))
def test_round_trip_every_method(method):
    torch.manual_seed(0)
    model = build_model("airbench_small", 10, 3, 8).eval()
    names = [n for n, _ in quantizable_layers(model)]
    plan = layer_bits_plan(names, 2, last_layer_bits=8)
    calib = torch.randn(32, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel, qweights = quantize_model(model, method, plan, calib, **OPTIONS[method])
    assert sorted(qweights) == sorted(names)  # every layer quantized, the fc included
    layers = dict(quantizable_layers(qmodel))
    for name, q in qweights.items():
        assert q.grid.levels == n_levels(plan[name])
        assert int(q.codes.min()) >= 0 and int(q.codes.max()) < q.grid.levels
        w = layers[name].weight
        assert torch.equal(q.weight(w.shape), w.detach())  # the model holds exactly the dequantized codes
        per_channel = w.detach().reshape(w.shape[0], -1)
        assert all(len(row.unique()) <= q.grid.levels for row in per_channel)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # FP model untouched
    with torch.no_grad():
        assert torch.isfinite(qmodel(torch.randn(2, 3, 8, 8))).all()
