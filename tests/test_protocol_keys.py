"""The paper-protocol keys: each authors' value against a slow reference of the authors' step.

Grid search, OBC's Hessian inversion, the stem's initialisation, the learning-rate schedule, the
normalisation constants and the sampling of batches (see the keys' docs in ptqlib/config.py).
"""
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ptqlib.data.images import FIXED_STATS, ImageData, channel_stats, load_dataset
from ptqlib.ptq import fit_grid, quantize_model
from ptqlib.ptq.bn import retune_indices
from ptqlib.ptq.obc import NotPositiveDefinite, obq_layer
from ptqlib.ptq.reconstruction import batch_indices
from ptqlib.models.training import cosine_schedule, train_model
from ptqlib.models.zoo import DigitsCNN
from ptqlib.models.zoo import build_model as build


# ---------------------------------------------------------------- 1. grid search candidates

def authors_adaround_grid(w2d: torch.Tensor, levels: int):
    """The authors' AdaRound/BRECQ MSE search written out slowly: channel by channel, 80 shrinks
    1 - 0.01 i of the raw [min, max], score mean |w - q|^2.4, the first best kept."""
    scales, zeros = [], []
    for row in w2d:
        x_max, x_min = row.max(), row.min()
        best, pick = 1e10, None
        for i in range(80):
            new_max, new_min = x_max * (1.0 - i * 0.01), x_min * (1.0 - i * 0.01)
            delta = (new_max - new_min) / (levels - 1)
            zero = (-new_min / delta).round()
            q = (torch.clamp(torch.round(row / delta) + zero, 0, levels - 1) - zero) * delta
            score = (row - q).abs().pow(2.4).mean()
            if score < best:
                best, pick = score, (delta, zero)
        scales.append(pick[0])
        zeros.append(pick[1])
    return torch.stack(scales).view(-1, 1), torch.stack(zeros).view(-1, 1)


def authors_obc_grid(w2d: torch.Tensor, levels: int):
    """The authors' OBC quantizer (asymmetric, MSE) slowly: the range widened to include 0, shrinks
    p = 1 - i / 100 for i < 80, score sum |w - q|^2.4, strictly better replaces."""
    scales, zeros = [], []
    maxq = levels - 1
    for row in w2d:
        xmin, xmax = torch.clamp(row.min(), max=0.0), torch.clamp(row.max(), min=0.0)
        best, pick = float("inf"), None
        for i in range(80):
            p = 1 - i / 100
            scale = (p * xmax - p * xmin) / maxq
            zero = torch.round(-(p * xmin) / scale)
            q = scale * (torch.clamp(torch.round(row / scale) + zero, 0, maxq) - zero)
            err = float((q - row).abs().pow(2.4).sum())
            if err < best:
                best, pick = err, (scale, zero)
        scales.append(pick[0])
        zeros.append(pick[1])
    return torch.stack(scales).view(-1, 1), torch.stack(zeros).view(-1, 1)


@pytest.mark.parametrize("levels", [16, 4, 3])
def test_authors_grid_search_is_the_authors_on_random_weights(levels):
    torch.manual_seed(levels)
    w = torch.randn(24, 72) * 0.1
    w[:4] = w[:4].abs() + 0.3  # channels of one sign: only the raw range (AdaRound's) excludes 0
    ada = fit_grid(w, levels, search="authors", raw_range=True)
    ref_scale, ref_zero = authors_adaround_grid(w, levels)
    assert torch.equal(ada.scale, ref_scale) and torch.equal(ada.zero, ref_zero)
    assert (ada.zero[:4] < 0).all()  # one-sign channels: the grid starts above 0
    obc = fit_grid(w, levels, search="authors")
    ref_scale, ref_zero = authors_obc_grid(w, levels)
    assert torch.equal(obc.scale, ref_scale) and torch.equal(obc.zero, ref_zero)
    fine = fit_grid(w, levels)  # ptqlib's default tries other shrinks: the reference tells them apart
    assert not torch.equal(fine.scale, obc.scale)


def test_methods_take_the_authors_grid_as_an_option():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    with torch.no_grad():
        model[1].weight[:2] = model[1].weight[:2].abs()
    plan = {"1": 4}
    _, q = quantize_model(model, "rtn", plan, grid_search="authors")
    scale, zero = authors_adaround_grid(model[1].weight.detach(), 16)
    assert torch.equal(q["1"].grid.scale, scale) and torch.equal(q["1"].grid.zero, zero)
    _, q = quantize_model(model, "obc", plan, torch.randn(64, 12), grid_search="authors", obc_hessian="fp")
    scale, zero = authors_obc_grid(model[1].weight.detach(), 16)
    assert torch.equal(q["1"].grid.scale, scale) and torch.equal(q["1"].grid.zero, zero)
    with pytest.raises(ValueError, match="grid_search: 'coarse' is not one of"):
        fit_grid(model[1].weight, 16, search="coarse")


# ---------------------------------------------------------------- 2. OBC without damping

def indefinite_hessian(d: int = 12) -> torch.Tensor:
    """A symmetric H with a positive diagonal and one negative eigenvalue (float64)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(d, 4 * d, generator=g, dtype=torch.float64)
    h = a @ a.T / (4 * d)
    vals, vecs = torch.linalg.eigh(h)
    return h - (vals[0] + 0.05) * torch.outer(vecs[:, 0], vecs[:, 0])


def test_a_hessian_that_is_not_positive_definite_fails_strict_and_passes_the_authors_way():
    h = indefinite_hessian()
    assert torch.linalg.eigvalsh(h)[0] < 0 and (h.diagonal() > 0).all()
    w = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))
    grid = fit_grid(w, 4)
    with pytest.raises(NotPositiveDefinite) as err:
        obq_layer(w, h, grid, damp=0.0)
    assert "\n" not in str(err.value) and "obc_damp" in str(err.value) and "obc_cholesky" in str(err.value)
    info = {}
    codes, losses = obq_layer(w, h, grid, damp=0.0, cholesky="authors", info=info)
    assert info == {"identity_added": 1.0}
    # the same as quantizing against H + 1*I, the authors' fallback
    ref_codes, _ = obq_layer(w, (h.float() + torch.eye(12)).double(), grid, damp=0.0)
    assert torch.equal(codes, ref_codes) and torch.isfinite(losses).all()
    info = {}
    obq_layer(w, h + torch.eye(12, dtype=torch.float64), grid, damp=0.0, cholesky="authors", info=info)
    assert info == {}  # a positive definite H gets nothing added


def test_obc_method_reports_the_layer_and_records_the_fallback():
    """Three calibration samples for a layer of 8 inputs: H has rank 3, and no damping."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 4))
    calib = torch.randn(3, 8)
    with pytest.raises(NotPositiveDefinite, match=r"^obc_cholesky: layer 1: the layer Hessian is not positive"):
        quantize_model(model, "obc", {"1": 2}, calib, obc_damp=0.0, obc_hessian="fp")
    _, q = quantize_model(model, "obc", {"1": 2}, calib, obc_damp=0.0, obc_hessian="fp",
                          obc_cholesky="authors")
    assert q["1"].stats["identity_added"] == 1.0
    _, q = quantize_model(model, "obc", {"1": 2}, calib, obc_hessian="fp")  # the default damping makes H positive definite
    assert "identity_added" not in q["1"].stats


# ---------------------------------------------------------------- 3. the stem's initialisation

def moments(w: torch.Tensor) -> tuple[float, float, float]:
    w = w.detach().double().flatten()
    var = float(w.var())
    kurtosis = float(((w - w.mean()) ** 4).mean() / var ** 2)
    return float(w.mean()), var, kurtosis


@pytest.mark.parametrize("arch,stem", [("resnet18", "conv1"), ("densenet121", "features.conv0")])
def test_stem_keeps_pytorchs_default_initialisation_when_asked(arch, stem):
    torch.manual_seed(0)
    w = build(arch, 10, 3, 32, stem_init="pytorch_default").get_submodule(stem).weight
    fan_in, fan_out = 27, w.shape[0] * 9
    bound = 1 / math.sqrt(fan_in)  # nn.Conv2d's kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), +)
    mean, var, kurt = moments(w)
    assert w.abs().max() <= bound and abs(mean) < 0.01
    assert var == pytest.approx(bound ** 2 / 3, rel=0.1) and kurt == pytest.approx(1.8, abs=0.15)
    torch.manual_seed(0)
    w = build(arch, 10, 3, 32).get_submodule(stem).weight  # the default: a normal distribution
    _, var, kurt = moments(w)
    expected = 2 / fan_out if arch == "resnet18" else 2 / fan_in  # kaiming_normal_ fan_out / fan_in
    assert var == pytest.approx(expected, rel=0.1) and kurt == pytest.approx(3.0, abs=0.4)


def test_stem_init_only_applies_to_replaced_stems():
    with pytest.raises(ValueError, match="stem_init: 'pytorch_default' applies only to"):
        build("digits_cnn", 10, 1, 8, stem_init="pytorch_default")
    with pytest.raises(ValueError, match="stem_init: 'xavier' is not one of"):
        build("resnet18", 10, 3, 32, stem_init="xavier")


# ---------------------------------------------------------------- 4. the learning-rate schedule

def scheduled_rates(schedule: str, lr: float, epochs: int, steps: int) -> list[list[float]]:
    """The learning rate every batch trains with, driven as `train_model` drives the schedule."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched, per_step = cosine_schedule(opt, schedule, epochs, steps)
    out = []
    for _ in range(epochs):
        out.append([])
        for _ in range(steps):
            out[-1].append(opt.param_groups[0]["lr"])
            opt.step()
            if per_step:
                sched.step()
        if not per_step:
            sched.step()
    return out


def test_per_epoch_schedule_is_the_hand_written_cosine():
    lr, epochs, steps = 0.1, 5, 3
    per_epoch = scheduled_rates("per_epoch", lr, epochs, steps)
    for e in range(epochs):
        reference = lr * (1 + math.cos(math.pi * e / epochs)) / 2  # every batch of epoch e
        assert per_epoch[e] == pytest.approx([reference] * steps, rel=1e-12, abs=1e-15)
    per_step = scheduled_rates("per_step", lr, epochs, steps)
    for e in range(epochs):
        reference = [lr * (1 + math.cos(math.pi * (e * steps + s) / (epochs * steps))) / 2 for s in range(steps)]
        assert per_step[e] == pytest.approx(reference, rel=1e-12, abs=1e-15)
    assert per_step != per_epoch
    with pytest.raises(ValueError, match="lr_schedule: 'linear' is not one of"):
        cosine_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr), "linear", 1, 1)


def tiny_data(n: int = 20) -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    return ImageData("tiny", x, y, x[:4], y[:4], 10, torch.tensor([0.5]), torch.tensor([0.25]))


def test_train_model_trains_every_batch_at_the_scheduled_rate():
    data, members = tiny_data(), torch.ones(20, dtype=torch.bool).numpy()
    recorded = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: recorded.append(opt.param_groups[0]["lr"]))
    try:
        for schedule in ("per_step", "per_epoch"):
            expected = sum(scheduled_rates(schedule, 0.1, 4, 3), [])  # 20 members, batches of 8: 3 steps
            recorded.clear()
            torch.manual_seed(0)
            train_model(DigitsCNN(), data, members, epochs=4, batch_size=8, lr=0.1, momentum=0.9, weight_decay=0.0,
                        augment="none", seed=0, device=torch.device("cpu"), lr_schedule=schedule)
            assert recorded == pytest.approx(expected, rel=1e-12), schedule
    finally:
        handle.remove()


# ---------------------------------------------------------------- 5. normalisation constants

def test_fixed_normalisation_uses_the_datasets_constants(tmp_path, monkeypatch):
    from ptqlib.data import disk as datasets_disk
    from test_datasets_disk import fake_cifar10

    monkeypatch.setenv(datasets_disk.VERIFY_ENV, "0")
    root = fake_cifar10(tmp_path / "data")
    pool = load_dataset("cifar10", root=root, store=tmp_path / "store", verify=False)
    fixed = load_dataset("cifar10", root=root, store=tmp_path / "store", verify=False, normalization="fixed")
    mean, std = channel_stats(pool.x_train)
    assert torch.equal(pool.mean, mean) and torch.equal(pool.std, std)
    assert fixed.mean.tolist() == pytest.approx(FIXED_STATS["cifar10"][0]) and \
        fixed.std.tolist() == pytest.approx(FIXED_STATS["cifar10"][1])
    x = fixed.x_train[:2]
    expected = (x.float() / 255 - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) \
        / torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(fixed.normalize(x), expected, atol=1e-6)
    assert FIXED_STATS["tinyimagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's
    with pytest.raises(ValueError, match="normalization: 'fixed' has constants only for"):
        load_dataset("digits", normalization="fixed")


# ---------------------------------------------------------------- 6. sampling

def test_retuning_without_replacement_visits_every_image_once_per_pass():
    gen = torch.Generator().manual_seed(0)
    batches = list(retune_indices(10, 4, 9, gen, "without_replacement"))
    assert [len(b) for b in batches] == [4, 4, 2] * 3  # a pass = ceil(10 / 4) batches, the last one short
    for p in range(3):
        assert sorted(torch.cat(batches[3 * p:3 * p + 3]).tolist()) == list(range(10))
    # the authors' 100 batches of 128 from 1024 images: 12.5 passes, every image 12 or 13 times
    drawn = torch.cat(list(retune_indices(1024, 128, 100, gen, "without_replacement")))
    counts = torch.bincount(drawn, minlength=1024)
    assert set(counts.tolist()) == {12, 13} and int((counts == 13).sum()) == 512
    # with replacement some image repeats within a pass' worth of batches
    drawn = torch.cat(list(retune_indices(10, 4, 3, torch.Generator().manual_seed(0), "with_replacement")))
    assert len(drawn) == 12 and len(set(drawn.tolist())) < 10


def test_reconstruction_batches_without_replacement_hold_distinct_images():
    gen = torch.Generator().manual_seed(0)
    rows = batch_indices(64, 32, 500, gen, "without_replacement")
    assert rows.shape == (500, 32)
    assert all(len(set(r.tolist())) == 32 for r in rows)
    assert torch.bincount(rows.flatten(), minlength=64).min() > 0
    repeats = batch_indices(64, 32, 500, gen, "with_replacement")
    assert any(len(set(r.tolist())) < 32 for r in repeats)
    with pytest.raises(ValueError, match="batch_sampling: 'stratified' is not one of"):
        batch_indices(64, 32, 1, gen, "stratified")


# ---------------------------------------------------------------- the keys, their jobs and the presets

PROTOCOL = {"normalization": ("pool", "fixed"), "stem_init": ("kaiming_normal", "pytorch_default"),
            "lr_schedule": ("per_step", "per_epoch"), "calib_draw": ("training_order", "independent"),
            "grid_search": ("fine", "authors"), "batch_sampling": ("with_replacement", "without_replacement"),
            "obc_cholesky": ("strict", "authors")}
CIFAR = {"dataset": "cifar10", "arch": "resnet18", "num_targets": 1, "num_shadows": 4}


def test_protocol_keys_enter_jobs_only_when_set():
    from ptqlib.study.config import validate
    from ptqlib.study.plan import plan_study

    base = plan_study(validate({**CIFAR, "bn_retune": ["obc"]}))
    authors = plan_study(validate({**CIFAR, "bn_retune": ["obc"], **{k: v[1] for k, v in PROTOCOL.items()}}))
    assert "stem_init" not in base.targets[0].params and "lr_schedule" not in base.targets[0].params
    assert "normalization" not in base.targets[0].params["data"]
    t = authors.targets[0].params
    assert (t["stem_init"], t["lr_schedule"], t["data"]["normalization"]) == ("pytorch_default", "per_epoch", "fixed")
    by_method = {q.method: q for q in authors.quantized_targets}
    assert dict(by_method["rtn"].options) == {"grid_search": "authors"}
    assert dict(by_method["adaround"].options)["batch_sampling"] == "without_replacement"
    assert dict(by_method["obc"].options)["obc_cholesky"] == "authors" and "batch_sampling" not in dict(
        by_method["obc"].options)
    assert by_method["obc"].params["bn_retune"]["sampling"] == "without_replacement"
    assert by_method["brecq"].params["calib_draw"] == "independent" and "calib_draw" not in by_method["rtn"].params
    for q in base.quantized_targets:
        assert "calib_draw" not in q.params and not {"grid_search", "obc_cholesky", "batch_sampling"} & set(dict(q.options))
        assert q.bn_retune is None or "sampling" not in q.params["bn_retune"]


@pytest.mark.parametrize("preset", ["cifar10", "cifar100", "tinyimagenet"])
def test_paper_presets_hold_the_authors_values(preset):
    from ptqlib.study.config import REPO_ROOT
    from ptqlib.study.presets import load_preset

    cfg = load_preset(REPO_ROOT / "params" / f"{preset}.yaml")
    assert {k: getattr(cfg, k) for k in PROTOCOL} == {k: v[1] for k, v in PROTOCOL.items()}
    default = load_preset(REPO_ROOT / "params" / "default.yaml")
    assert {k: getattr(default, k) for k in PROTOCOL} == {k: v[0] for k, v in PROTOCOL.items()}


def test_protocol_key_rules_name_the_key():
    from ptqlib.study import config
    from ptqlib.data import images as data
    from ptqlib.models import zoo
    from ptqlib.errors import ConfigError
    from ptqlib.study.config import validate

    assert config.REPLACED_STEMS == zoo.REPLACED_STEMS and config.FIXED_STATS_DATASETS == tuple(data.FIXED_STATS)
    with pytest.raises(ConfigError, match=r"^stem_init: 'pytorch_default' applies only to .*not 'digits_cnn'"):
        validate({"stem_init": "pytorch_default"})
    with pytest.raises(ConfigError, match=r"^normalization: 'fixed' has constants only for .*not 'digits'"):
        validate({"normalization": "fixed"})
    with pytest.raises(ConfigError, match=r"^grid_search: 'coarse' is not one of \['fine', 'authors'\]"):
        validate({"grid_search": "coarse"})


def test_calibration_draw_is_epoch_ones_order_or_its_own():
    from ptqlib.study.config import validate
    from ptqlib.study.plan import plan_study

    data = load_dataset("digits")
    jobs = {d: plan_study(validate({"num_targets": 1, "num_shadows": 4, "methods": ["adaround"], "bits": [2],
                              "last_layer_bits": [None], "calib_samples": 64, "calib_draw": d})).quantized_targets[0]
            for d in ("training_order", "independent")}
    source = jobs["independent"].source
    members = source.members(len(data.y_train))
    pool = data.x_train[torch.from_numpy(members)]
    epoch_one = torch.randperm(len(pool), generator=torch.Generator().manual_seed(source.model_seed))  # train_model's
    assert torch.equal(jobs["training_order"].calibration_set(data, members), data.normalize(pool[epoch_one[:64]]))
    own = jobs["independent"].calibration_set(data, members)
    assert own.shape == (64, 1, 8, 8) and not torch.equal(own, data.normalize(pool[epoch_one[:64]]))


def test_quantize_job_logs_the_identity_added_to_a_hessian(tmp_path):
    """GPTQ (fast; the same inversion as OBC), 16 calibration images, no damping: the classifier (256 inputs) and the last conv (576 inputs at
    4x4 positions: 256 samples) get singular Hessians; the first layers do not."""
    import json

    from ptqlib.study.config import validate
    from ptqlib.study.plan import plan_study
    from ptqlib.runtime.store import Store

    keys = {"num_targets": 1, "num_shadows": 4, "epochs": 1, "methods": ["gptq"], "bits": [4],
            "last_layer_bits": [None], "calib_samples": 16, "obc_damp": 0.0, "obc_hessian": "fp",
            "layer_bits": {}}
    store = Store(tmp_path / "store")
    strict = plan_study(validate(keys)).quantized_targets[0]
    strict.source.run(store)
    with pytest.raises(NotPositiveDefinite, match=r"^obc_cholesky: layer features.7: the layer Hessian is not"):
        strict.run(store)
    assert not store.path(strict).exists()
    authors = plan_study(validate({**keys, "obc_cholesky": "authors"})).quantized_targets[0]
    path = authors.run(store)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["identity_added"] == {"features.7": 1.0, "classifier": 1.0}
    assert meta["method_stats"]["classifier"]["identity_added"] == 1.0
    assert "identity_added" not in meta["method_stats"]["features.0"]
    log = (path / "log.txt").read_text()
    assert "classifier: Hessian not positive definite in float32; added 1 * I" in log
    assert "features.0: Hessian not positive" not in log
