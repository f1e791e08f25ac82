"""DP-SGD through Opacus: the privacy engine is attached (per-example gradients, clipping, noise),
epsilon grows with the epochs, and huge noise leaves a model near chance."""
import dataclasses

import pytest
import torch

pytest.importorskip("opacus")

from ptqlib.study.config import validate  # noqa: E402
from ptqlib.study.jobs import DPTrainJob  # noqa: E402
from ptqlib.models.dpsgd import private_architecture, train_private
from ptqlib.study.jobs import load_data  # noqa: E402
from ptqlib.models.zoo import DigitsCNN  # noqa: E402
from ptqlib.study.plan import dp_train_job, plan_study  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402
from ptqlib.models.training import accuracy  # noqa: E402


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = validate({"num_targets": 1, "num_shadows": 4, "dp_noise": [1.0], "dp_epochs": 4, "dp_shadows": 4})
    return cfg, Store(tmp_path_factory.mktemp("store"))


def test_private_architecture_has_no_batchnorm():
    fixed = private_architecture(DigitsCNN())
    kinds = {type(m).__name__ for m in fixed.modules()}
    assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)
    assert all(not getattr(m, "inplace", False) for m in fixed.modules())
    assert any("BatchNorm" in type(m).__name__ for m in DigitsCNN().modules())  # the study's model is untouched


def test_privacy_engine_attached_and_epsilon_grows_with_epochs(setting):
    cfg, store = setting
    job = plan_study(cfg).extras.trains[0]
    assert isinstance(job, DPTrainJob) and job.role == "target"
    data = load_data(job.data, store)
    model = job.new_model(data)
    seen = []
    from opacus import GradSampleModule
    original_forward = GradSampleModule.forward

    def spy(self, *args, **kwargs):  # every training forward goes through Opacus's per-example wrapper
        seen.append(type(self).__name__)
        return original_forward(self, *args, **kwargs)

    GradSampleModule.forward = spy
    try:
        stats = train_private(model, data, job.members(len(data.y_train)), epochs=3, batch_size=64, lr=0.1,
                              momentum=0.9, weight_decay=5e-4, augment="none", seed=0, noise_multiplier=1.0,
                              max_grad_norm=1.0, device=torch.device("cpu"))
    finally:
        GradSampleModule.forward = original_forward
    assert seen and all(name == "GradSampleModule" for name in seen)
    eps = stats["epsilon_by_epoch"]
    assert len(eps) == 3 and all(0 < a < b for a, b in zip(eps, eps[1:]))
    assert stats["delta"] == pytest.approx(1 / stats["train_examples"]) and stats["accountant"] == "prv"
    # more noise, less epsilon for the same epochs
    quieter = train_private(job.new_model(data), data, job.members(len(data.y_train)), epochs=1, batch_size=64,
                            lr=0.1, momentum=0.9, weight_decay=5e-4, augment="none", seed=0, noise_multiplier=4.0,
                            max_grad_norm=1.0, device=torch.device("cpu"))
    assert quieter["epsilon"] < eps[0]


def test_huge_noise_is_near_chance_and_the_job_stores_epsilon(setting):
    cfg, store = setting
    target = plan_study(cfg).targets[0]
    loud = dataclasses.replace(dp_train_job(cfg, target, 1000.0), epochs=3)
    loud.run(store)
    meta = store.meta(loud)
    assert meta["test_acc"] < 0.35  # 10 classes: chance is 0.1
    assert meta["epsilon"] < 0.05 and len(meta["epsilon_by_epoch"]) == 3
    moderate = dp_train_job(cfg, target, 1.0)  # 4 epochs at sigma 1
    moderate.run(store)
    assert store.meta(moderate)["test_acc"] > meta["test_acc"] + 0.3
    assert store.meta(moderate)["epsilon"] > 10 * meta["epsilon"]
    model = moderate.load(store)  # loads back into the GroupNorm architecture
    assert accuracy(model, load_data(moderate.data, store)) == pytest.approx(store.meta(moderate)["test_acc"])
    assert moderate.label == "dp-sgd sigma 1" and moderate.key != target.key
