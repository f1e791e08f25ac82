"""Controls and pruning: the requested relative weight error and sparsity are reached, accuracy
matching picks the closest control, and pruned weights stay zero through quantization."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from ptqlib.study.config import validate
from ptqlib.study.jobs.extras import ControlJob, PruneJob
from ptqlib.models.degrade import add_weight_noise, prune_global, sparsity_of
from ptqlib.results.tables import match_controls
from ptqlib.models.zoo import DigitsCNN, quantizable_layers
from ptqlib.study.plan import plan_study, quantize_job
from ptqlib.runtime.store import Store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = validate({"num_targets": 1, "num_shadows": 4, "epochs": 5, "methods": ["rtn"], "bits": [2],
                    "last_layer_bits": [None]})
    store = Store(tmp_path_factory.mktemp("store"))
    p = plan_study(cfg)
    p.targets[0].run(store)
    return cfg, store, p


def _relative_errors(before, after) -> dict:
    a, b = dict(quantizable_layers(before)), dict(quantizable_layers(after))
    return {n: float((b[n].weight - a[n].weight).detach().double().norm() / a[n].weight.detach().double().norm())
            for n in a}


def test_weight_noise_reaches_the_requested_relative_error_per_layer():
    torch.manual_seed(0)
    model = DigitsCNN()
    requested = {"features.0": 0.05, "features.3": 0.3, "features.7": 1.2, "classifier": 0.01}
    noisy = DigitsCNN()
    noisy.load_state_dict(model.state_dict())
    reached = add_weight_noise(noisy, requested, seed=3)
    measured = _relative_errors(model, noisy)
    for name, err in requested.items():
        assert measured[name] == pytest.approx(err, rel=0.01) and reached[name] == pytest.approx(err, rel=0.01)
    # seeded: the same seed gives the same noise, another seed another
    again = DigitsCNN()
    again.load_state_dict(model.state_dict())
    add_weight_noise(again, requested, seed=3)
    assert torch.equal(again.classifier.weight, noisy.classifier.weight)
    other = DigitsCNN()
    other.load_state_dict(model.state_dict())
    add_weight_noise(other, requested, seed=4)
    assert not torch.equal(other.classifier.weight, noisy.classifier.weight)
    with pytest.raises(KeyError, match="unknown layers"):
        add_weight_noise(other, {"fc9": 0.1}, seed=0)


def test_control_job_matches_the_quantized_recipes_relative_error(trained):
    cfg, store, p = trained
    q = p.quantized_targets[0]
    q.run(store)
    control = ControlJob(source=p.targets[0], matched=q)
    control.run(store)
    wanted = store.meta(q)["relative_weight_error"]
    measured = _relative_errors(p.targets[0].load(store), control.load(store))
    assert set(measured) == set(wanted)
    for name in wanted:
        assert measured[name] == pytest.approx(wanted[name], rel=0.01)
    assert control.label == "noise ~ rtn 2b" and control.key != ControlJob(source=p.targets[0], relative_error=0.1).key
    requested = ControlJob(source=p.targets[0], relative_error=0.2)
    requested.run(store)
    assert all(v == pytest.approx(0.2, rel=0.01)
               for v in _relative_errors(p.targets[0].load(store), requested.load(store)).values())


def test_accuracy_matching_picks_the_closest_control_of_each_kind():
    recipes = pd.DataFrame({"label": ["rtn 2b", "rtn 1.58b"], "test_acc": [0.90, 0.60]})
    controls = pd.DataFrame({"label": ["noise a", "noise b", "noise c", "2 epochs", "5 epochs", "10 epochs"],
                             "method": ["noise"] * 3 + ["epochs"] * 3,
                             "test_acc": [0.95, 0.88, 0.58, 0.50, 0.68, 0.93]})
    m = match_controls(recipes, controls).set_index(["recipe", "control_method"])["control"]
    assert m[("rtn 2b", "noise")] == "noise b" and m[("rtn 2b", "epochs")] == "10 epochs"
    assert m[("rtn 1.58b", "noise")] == "noise c" and m[("rtn 1.58b", "epochs")] == "5 epochs"
    # against a brute-force reference on random accuracies
    rng = np.random.default_rng(0)
    recipes = pd.DataFrame({"label": [f"r{i}" for i in range(7)], "test_acc": rng.random(7)})
    controls = pd.DataFrame({"label": [f"c{i}" for i in range(9)], "method": ["noise"] * 9, "test_acc": rng.random(9)})
    picked = match_controls(recipes, controls)
    for _, row in picked.iterrows():
        gaps = (controls["test_acc"] - row["recipe_acc"]).abs()
        assert gaps[controls["label"] == row["control"]].iloc[0] == gaps.min()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_pruning_reaches_the_requested_sparsity_exactly(sparsity):
    torch.manual_seed(1)
    model = DigitsCNN()
    total = sum(m.weight.numel() for _, m in quantizable_layers(model))
    prune_global(model, sparsity)
    zeros = sum(int((m.weight == 0).sum()) for _, m in quantizable_layers(model))
    assert zeros == round(sparsity * total)
    assert sparsity_of(model) == pytest.approx(round(sparsity * total) / total)
    assert not any("weight_orig" in k or "mask" in k for k in model.state_dict())  # made permanent


@pytest.mark.parametrize("method", ["rtn", "obc"])
def test_pruned_weights_stay_zero_after_quantization(trained, method):
    cfg, store, p = trained
    pruned = PruneJob(source=p.targets[0], sparsity=0.6)
    pruned.run(store)
    assert store.meta(pruned)["sparsity"] == pytest.approx(0.6, abs=1e-4)
    zero_before = {n: m.weight == 0 for n, m in quantizable_layers(pruned.load(store))}
    for bits in (4, 2, 1.58):
        q = dataclasses.replace(quantize_job(cfg, p.targets[0], {"method": method, "bits": bits,
                                                                 "last_layer_bits": None}), source=pruned)
        q.run(store)
        after = dict(quantizable_layers(q.load(store)))
        for name, zero in zero_before.items():
            assert (after[name].weight[zero] == 0).all(), (bits, name)
        assert q.keep(store).sum() > 0 and store.meta(q)["source"]["index"] == 0
        grid = torch.load(store.path(q) / "grid.pt", weights_only=True)  # the stored codes agree
        for name, zero in zero_before.items():
            g = grid[name]
            assert torch.equal(g["codes"].float()[zero.flatten(1)],
                               g["zero"].expand_as(g["codes"]).float()[zero.flatten(1)]), (bits, name)
