"""BatchNorm re-tuning after quantization: the authors' momentum loop, and its exact-average variant."""
import copy

import torch
from torch import nn

from ptqlib.ptq.bn import reestimate_batchnorm, retune_batchnorm

from test_ptq_adaround import small_model

torch.set_num_threads(1)


def bn_buffer_names(model):
    return {f"{n}.{b}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            for b in ("running_mean", "running_var", "num_batches_tracked")}


def test_retune_is_the_plain_momentum_loop_and_changes_only_bn_buffers():
    model = small_model()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.5  # the model's own momentum must neither be used nor lost
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 1, 8, 8, generator=gen) * 2 + 0.5 for _ in range(5)]
    ours = retune_batchnorm(copy.deepcopy(model), batches, momentum=0.1)
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = 0.1
    ref.train()
    with torch.no_grad():
        for b in batches:
            ref(b)
    ref.eval()
    before, got, want = model.state_dict(), ours.state_dict(), ref.state_dict()
    buffers = bn_buffer_names(model)
    for k in before:
        assert torch.equal(got[k], want[k]), k
        if k in buffers:
            assert not torch.equal(got[k], before[k]), k
        else:
            assert torch.equal(got[k], before[k]), k
    assert not any(m.training for m in ours.modules())
    assert all(m.momentum == 0.5 for m in ours.modules() if isinstance(m, nn.BatchNorm2d))


def test_momentum_none_is_the_exact_average_reestimate():
    model = small_model(1)
    x = torch.randn(96, 1, 8, 8) * 3 + 1
    a = retune_batchnorm(copy.deepcopy(model), list(x.split(32)), momentum=None)
    b = reestimate_batchnorm(copy.deepcopy(model), x, batch_size=32)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with torch.no_grad():
        y = a.features[0](x)
    assert torch.allclose(a.features[1].running_mean, y.mean((0, 2, 3)), atol=1e-5)
