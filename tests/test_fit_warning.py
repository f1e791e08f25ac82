"""The under-fitting guard: fires on an untrained model, silent on a memorising one."""
import pytest
import torch

from ptqlib.data.images import load_digits_data
from ptqlib.data.masks import target_mask
from ptqlib.models.zoo import DigitsCNN
from ptqlib.models.training import accuracy, fit_warning, train_model

torch.set_num_threads(1)
DATA = load_digits_data()
KEEP = target_mask(0, 0, len(DATA.y_train))


def trained(epochs: int, max_steps_batch: int = 64) -> tuple[float, float]:
    torch.manual_seed(0)
    model = DigitsCNN(width=16)
    keep = KEEP
    if epochs == 0:  # one SGD step: a batch as large as the member set, one epoch
        max_steps_batch, epochs = int(KEEP.sum()), 1
    train_model(model, DATA, keep, epochs=epochs, batch_size=max_steps_batch, lr=0.1, momentum=0.9,
                weight_decay=5e-4, augment="none", seed=0, device=torch.device("cpu"))
    return accuracy(model, DATA, "train", keep), accuracy(model, DATA)


def test_fires_after_one_step():
    train_acc, test_acc = trained(0)
    msg = fit_warning(train_acc, test_acc, 10)
    assert msg is not None and "did not learn/memorise" in msg and "chance 10.0%" in msg
    assert "\n" not in msg


def test_silent_on_a_memorising_model():
    train_acc, test_acc = trained(30)
    assert train_acc > 0.99  # digits' members are memorised ...
    assert fit_warning(train_acc, test_acc, 10) is None  # ... so the guard stays silent


@pytest.mark.parametrize("train_acc, test_acc, classes, fires", [
    (0.128, 0.120, 10, True),   # the old cifar10-cpu targets: near chance
    (0.220, 0.204, 10, True),   # above chance + 10 points, but no gap to attack
    (0.85, 0.80, 10, True),     # learnt, not memorised (members not fitted, gap 5 points)
    (1.00, 0.989, 10, False),   # digits: members fitted, leaks through confidence
    (0.85, 0.60, 10, False),    # members not fitted, but a 25-point gap
    (1.00, 0.465, 10, False),   # the cifar10-10k preset
    (0.30, 0.05, 100, False),   # CIFAR-100: far above chance 1%, big gap
    (0.05, 0.01, 100, True),    # CIFAR-100 within 10 points of chance
])
def test_thresholds(train_acc, test_acc, classes, fires):
    assert (fit_warning(train_acc, test_acc, classes) is not None) == fires
    if fires:
        assert f"train {100 * train_acc:.1f}%" in fit_warning(train_acc, test_acc, classes)


def test_model_fit_warnings_name_every_misfit_target_and_shadow():
    from ptqlib.study.config import validate
    from ptqlib.study.plan import plan_study
    from ptqlib.study.stages import model_fit_warnings

    cfg = validate({"num_targets": 1, "num_shadows": 4})
    p = plan_study(cfg)
    accs = {p.targets[0].key: (1.0, 0.95), p.shadows[0].key: (1.0, 0.9), p.shadows[1].key: (0.15, 0.12),
            p.shadows[2].key: (0.85, 0.83)}  # shadow 3: not trained yet

    class FakeStore:
        def is_complete(self, job):
            return job.key in accs

        def meta(self, job):
            train, test = accs[job.key]
            return {"train_acc": train, "test_acc": test, "num_classes": 10}

    assert model_fit_warnings(cfg, FakeStore()) == [
        "shadow 1 did not fit: train 15.0%, test 12.0% (chance 10.0%)",
        "shadow 2 did not fit: train 85.0%, test 83.0% (chance 10.0%)"]


def test_a_model_far_below_its_pool_is_flagged_and_one_within_it_is_not():
    from ptqlib.models.training import pool_outliers
    pool = {f"shadow {i}": acc for i, acc in enumerate([0.98, 0.97, 0.96, 0.5724, 0.95, 0.99])}
    assert pool_outliers(pool) == {"shadow 3": 0.5724}  # the measured real-image misfit: 57% vs a 96.5% median
    assert pool_outliers({**pool, "shadow 3": 0.78}) == {"shadow 3": 0.78}  # CIFAR-10's own images: 78%
    assert pool_outliers({**pool, "shadow 3": 0.85}) == {}  # 11.5 points below the median: within the margin
    assert pool_outliers({"a": 0.2, "b": 0.9}) == {}  # too few models for a median to mean anything
