"""Training: seeded reproducibility, and the optional torch.compile path."""
from dataclasses import replace

import numpy as np
import torch

from ptqlib.study.plan import plan_study
from ptqlib.study.config import StudyConfig
from ptqlib.data.images import load_digits_data
from ptqlib.data.masks import target_mask
from ptqlib.models.zoo import DigitsCNN
from ptqlib.models.training import train_model

torch.set_num_threads(1)
DATA = load_digits_data()
KEEP = target_mask(0, 0, len(DATA.y_train))


def train(compile_model=False, seed=3):
    torch.manual_seed(seed)
    model = DigitsCNN(width=8)
    stats = train_model(model, DATA, KEEP, epochs=1, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
                        augment="none", seed=seed, device=torch.device("cpu"), compile_model=compile_model)
    return model, stats


def test_training_is_reproducible_bit_for_bit():
    a, _ = train()
    b, _ = train()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_compiled_training_matches_eager_training():
    """Same parameters, same batches; only the kernels differ (fused, rounding differently)."""
    eager, s_eager = train()
    compiled, s_comp = train(compile_model=True)
    assert np.isclose(s_eager["final_loss"], s_comp["final_loss"], rtol=1e-3)
    for (name, pe), pc in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(pe.float(), pc.float(), rtol=1e-3, atol=1e-4), name
    assert not hasattr(compiled, "_orig_mod")  # the stored model is the plain module


def test_torch_compile_is_part_of_the_training_job_key():
    cfg = StudyConfig()
    on = replace(cfg, torch_compile=True)
    assert plan_study(cfg).targets[0].key != plan_study(on).targets[0].key
    assert plan_study(on).targets[0].params["torch_compile"] is True
