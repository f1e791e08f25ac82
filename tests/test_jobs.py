"""Jobs are functions of their own fields: every result-changing key reaches a job key, no other key does."""
import dataclasses

import pytest
import torch

from ptqlib.study import config
from ptqlib.study.config import validate
from ptqlib.study.plan import plan_study
from ptqlib.runtime.store import Store

# Keys that say where or how fast the study runs, or only shape the report: never part of a job's key.
NOT_A_RESULT = {"name", "store", "reports", "device", "threads", "executor", "workers", "worker_threads",
                "gpus_per_job", "ray_address", "bootstrap",
                "download",  # download: fetches CIFAR once; the examples are the same either way
                "scale_widths"}  # runs the whole study again at other widths: their jobs carry `width`
# The smallest setting in which a key can matter (e.g. BN re-tuning keys only once re-tuning is on).
CONTEXT = {
    "bn_retune_source": {"bn_retune": ["obc"]}, "bn_retune_samples": {"bn_retune": ["obc"]},
    "bn_retune_steps": {"bn_retune": ["obc"]}, "bn_retune_augment": {"bn_retune": ["obc"]},
    "bn_retune_momentum": {"bn_retune": ["obc"]},
    "query_shift": {"queries": "shift"}, "query_count": {"queries": "random_per_model"},
    "data_root": {"dataset": "imagefolder", "arch": "resnet18"},
    "image_size": {"dataset": "imagefolder", "arch": "resnet18"},
    "train_subset": {"dataset": "imagefolder", "arch": "resnet18"},
    "test_subset": {"dataset": "imagefolder", "arch": "resnet18"},
    "obc_calib_samples": {"calib_samples": 100}, "calib_source": {"calib_samples": 400},
    "arch": {"dataset": "imagefolder", "arch": "resnet18"},
    "dataset": {"dataset": "cifar10", "arch": "resnet18"},
    "gpus_per_job": {"executor": "ray"}, "ray_address": {"executor": "ray"},
    "act_range": {"act_bits": [None, 8]}, "dp_clip": {"dp_noise": [1.0]}, "dp_epochs": {"dp_noise": [1.0]},
    "dp_shadows": {"dp_noise": [1.0]}, "canary_kind": {"canaries": 8},
    "stem_init": {"dataset": "imagefolder", "arch": "resnet18"}, "width": {"dataset": "imagefolder", "arch": "airbench_small"}, "normalization": {"dataset": "cifar10", "arch": "resnet18"},
    "obc_models": {"num_targets": 2, "methods": ["rtn", "obc"], "bits": [2]},
    "quantize_models": {"num_targets": 2, "bits": [2]},
    "scale_widths": {"dataset": "imagefolder", "arch": "airbench_small"},
}
OTHER = {"bits": [4, 2], "last_layer_bits": [None], "layer_bits": {"conv1": 8}, "methods": ["rtn", "obc"],
         "attacks": ["online"], "threat_models": ["fp_shadows", "matched_shadows"], "bn_retune": ["obc"],
         "num_shadows": 34, "data_root": "/elsewhere", "arch": "resnet50", "dataset": "cifar100",
         "bn_retune_momentum": None, "query_shift": 2, "name": "other", "test_fraction": 0.3,
         "obc_calib_samples": 200, "act_bits": [None, 8], "control_epochs": [2], "dp_noise": [1.0],
         "prune_sparsity": [0.5], "dp_shadows": 6, "obc_bits": [4], "scale_widths": [0.5, 1]}


def _other_value(name: str, value):
    if name in OTHER:
        return OTHER[name]
    rule = config.RULES[name]
    if rule["choices"]:
        return next(c for c in rule["choices"] if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.01 * (value == 0)
    if isinstance(value, str):
        return value + "-x"
    raise AssertionError(f"no alternative value for {name}")


def _keys(cfg) -> dict[str, list[str]]:
    return {stage: [j.key for j in jobs] for stage, jobs in plan_study(cfg).stages.items()}


@pytest.mark.parametrize("name", config.FIELD_NAMES)
def test_every_key_reaches_a_job_key_or_is_declared_not_a_result(name):
    context = {"num_targets": 1, "num_shadows": 4, **CONTEXT.get(name, {})}  # small plans, same rules
    base = validate(context)
    changed = validate({**context, name: _other_value(name, getattr(base, name))})
    differs = _keys(base) != _keys(changed)
    assert differs == (name not in NOT_A_RESULT), (name, "reaches a job key" if differs else "reaches no job key")


def test_jobs_ignore_keys_they_do_not_read():
    base = validate({})
    p = plan_study(base)
    # training does not read quantization or attack keys; RTN reads no calibration keys; a query in
    # identity mode reads neither shift nor count
    other = plan_study(validate({"adaround_iters": 5, "calib_samples": 100, "obc_damp": 0.0, "query_shift": 3,
                           "query_count": 4, "attacks": ["online"], "brecq_lambda": 0.5}))
    assert [j.key for j in p.targets + p.shadows] == [j.key for j in other.targets + other.shadows]
    rtn = [j.key for j in p.quantized_targets if j.method == "rtn"]
    assert rtn == [j.key for j in other.quantized_targets if j.method == "rtn"]
    identity = [q.key for q in p.queries if q.model.kind == "train"]
    assert identity == [q.key for q in other.queries if q.model.kind == "train"]
    # AdaRound reads its own lambda, BRECQ its own
    ada = plan_study(validate({"adaround_lambda": 0.001}))
    by_method = lambda pl, m: [j.key for j in pl.quantized_targets if j.method == m]  # noqa: E731
    assert by_method(ada, "adaround") != by_method(p, "adaround") and by_method(ada, "brecq") == by_method(p, "brecq")
    assert by_method(ada, "obc") == by_method(p, "obc")


def test_same_job_from_two_configs_gives_the_same_result(tmp_path):
    """A train job and an RTN job built from configs that differ only in keys they do not read:
    one key, and running each in its own store gives bit-identical files."""
    small = dict(num_targets=1, num_shadows=4, epochs=2, methods=["rtn"], bits=[2], last_layer_bits=[None],
                 threads=1)
    a = plan_study(validate({**small, "adaround_iters": 7, "queries": "shift", "attacks": ["online"]}))
    b = plan_study(validate({**small, "obc_damp": 0.5, "calib_samples": 64, "executor": "serial", "workers": 1}))
    for ja, jb in ((a.targets[0], b.targets[0]), (a.quantized_targets[0], b.quantized_targets[0])):
        assert ja == jb and ja.key == jb.key
    sa, sb = Store(tmp_path / "a"), Store(tmp_path / "b")
    for job, store in ((a.quantized_targets[0], sa), (b.quantized_targets[0], sb)):
        job.source.run(store)
        job.run(store)
    for kind, job in (("train", a.targets[0]), ("quantize", a.quantized_targets[0])):
        wa = torch.load(sa.path(job) / "model.pt", weights_only=True)
        wb = torch.load(sb.path(job) / "model.pt", weights_only=True)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), kind


def test_job_records_are_frozen_and_rebuildable_from_their_params():
    job = plan_study(validate({"methods": ["adaround"], "bits": [2], "last_layer_bits": [None]})).quantized_targets[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.method = "rtn"
    assert dict(job.options) == {"adaround_iters": 300, "adaround_lr": 0.03, "adaround_lambda": 0.01}
    assert job.params["method"] == "adaround" and job.inputs == (job.source.key,)
    assert dataclasses.replace(job, bits=4).key != job.key


def test_plan_passes_each_method_only_options_it_reads():
    from ptqlib.study.plan import METHOD_KEYS
    from ptqlib.ptq import QUANTIZERS, method_option_names
    assert set(METHOD_KEYS) == set(QUANTIZERS)
    for method, keys in METHOD_KEYS.items():
        assert set(keys) <= set(method_option_names(method)), method
        assert all(k in config.FIELD_NAMES for k in keys), method


def test_obc_models_and_bits_limit_obc_and_loo_skips_target_quantization():
    from ptqlib.study.config import validate
    from ptqlib.study.plan import plan_study
    base = dict(num_targets=2, num_shadows=4, methods=["rtn", "obc"], bits=[4, 2], last_layer_bits=[None])
    loo = plan_study(validate({**base, "threat_models": ["leave_one_out_fp", "leave_one_out"],
                               "obc_models": 1, "obc_bits": [2]}))
    assert loo.quantized_targets == ()  # leave-one-out attacks the pool only
    obc = [(q.train_job.index, q.bits) for q in loo.quantized_shadows if q.method == "obc"]
    assert obc == [(0, 2)]
    assert loo.quantized_shadows[0].method == "obc"  # long jobs first
    assert sum(q.method == "rtn" for q in loo.quantized_shadows) == 8
    few = plan_study(validate({**base, "threat_models": ["leave_one_out_fp"], "quantize_models": 2}))
    assert sorted({q.train_job.index for q in few.quantized_shadows}) == [0, 1] and len(few.quantized_shadows) == 8
    plain = plan_study(validate({**base, "threat_models": ["fp_shadows"]}))
    assert len(plain.quantized_targets) == 8 and plain.quantized_shadows == ()
    # the defaults keep every job key
    assert [q.key for q in plain.quantized_targets] == \
        [q.key for q in plan_study(validate({**base, "threat_models": ["fp_shadows"], "obc_bits": [],
                                             "obc_models": 0})).quantized_targets]


def test_a_method_version_changes_only_that_methods_job_keys(monkeypatch):
    """ptq.methods.METHOD_VERSIONS: a method's own code version enters only its quantize jobs' keys,
    so a change to one solver recomputes that method's stored results and keeps the others'."""
    from ptqlib.ptq import methods
    by_method = lambda pl, m: [j.key for j in pl.quantized_targets if j.method == m]  # noqa: E731
    cfg = validate({})
    plan = plan_study(cfg)
    assert all(j.params.get("method_version") == methods.METHOD_VERSIONS["obc"]
               for j in plan.quantized_targets if j.method == "obc")
    assert all("method_version" not in j.params for j in plan.quantized_targets if j.method != "obc")
    before = {m: by_method(plan, m) for m in ("rtn", "adaround", "brecq", "obc")}  # keys are computed lazily
    monkeypatch.setitem(methods.METHOD_VERSIONS, "adaround", 2)
    after = plan_study(cfg)
    for m in ("rtn", "brecq", "obc"):
        assert by_method(after, m) == before[m], m
    assert before["adaround"] and not set(by_method(after, "adaround")) & set(before["adaround"])
