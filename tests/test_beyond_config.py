"""The beyond-the-paper keys: validated (exit 2, one line), off by default, planned into job keys."""
import pytest

from ptqlib.study.config import validate
from ptqlib.study.plan import plan_study

BAD_BEYOND = [
    ("act_bits: [8, 1.58]\n", "act_bits: 1.58 is not one of [None, 2, 3, 4, 5, 6, 7, 8]"),
    ("act_bits: [true]\n", "act_bits: True is not one of"),
    ("act_range: kl\n", "act_range: 'kl' is not one of ['minmax', 'mse', 'percentile']"),
    ("control_noise: maybe\n", "control_noise: expected true or false"),
    ("control_epochs: [5, 0]\n", "control_epochs: 0 is not a number of epochs"),
    ("control_epochs: [2.5]\n", "control_epochs: 2.5 is not a number of epochs"),
    ("dp_noise: [1.0, -0.5]\n", "dp_noise: -0.5 is not a noise multiplier"),
    ("dp_clip: 0\n", "dp_clip: 0.0 must be > 0"),
    ("dp_epochs: -1\n", "dp_epochs: -1 must be >= 0"),
    ("dp_shadows: 5\n", "dp_shadows: 5 is invalid; use 0 (= num_shadows) or an even number >= 4"),
    ("prune_sparsity: [0.5, 1.0]\n", "prune_sparsity: 1.0 is not a sparsity; use numbers in (0, 1)"),
]


@pytest.mark.parametrize("text,message", BAD_BEYOND)
def test_bad_beyond_key_exit_code_and_message(tmp_path, cli, text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text(f"store: {tmp_path / 'store'}\nreports: {tmp_path / 'reports'}\n" + text)
    proc = cli("run", str(preset))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0] and str(preset) in lines[0], proc.stderr
    assert not (tmp_path / "store").exists()


def test_default_study_plans_no_beyond_job_and_weight_only_keys_are_unchanged():
    base = plan_study(validate({}))
    assert base.extras.jobs == [] and base.stages["analysis"] == []
    # a weight-only quantize job's params carry no activation fields, so its key is the one it had
    # before activation quantization existed
    assert all("act_bits" not in q.params for q in base.quantized_targets)
    with_act = plan_study(validate({"act_bits": [None, 8]}))
    plain = [q for q in with_act.quantized_targets if q.act_bits is None]
    assert [q.key for q in plain] == [q.key for q in base.quantized_targets]


def test_act_bits_name_every_recipe_and_rtn_gets_calibration_images():
    p = plan_study(validate({"methods": ["rtn"], "bits": [4, 2], "last_layer_bits": [None], "act_bits": [None, 8, 4],
                       "num_targets": 1}))
    labels = [q.label for q in p.quantized_targets]
    assert labels == ["rtn 4b", "rtn 4b a8", "rtn 4b a4", "rtn 2b", "rtn 2b a8", "rtn 2b a4"]
    assert [q.calib_samples for q in p.quantized_targets] == [0, 512, 512, 0, 512, 512]
    assert {q.act_range for q in p.quantized_targets if q.act_bits} == {"minmax"}


def test_extras_plan_groups_and_shadows():
    cfg = validate({"num_targets": 2, "num_shadows": 6, "methods": ["rtn"], "bits": [2], "last_layer_bits": [None],
                    "control_noise": True, "control_epochs": [2, 5], "dp_noise": [0.5, 2.0], "dp_shadows": 4,
                    "dp_epochs": 3, "prune_sparsity": [0.9]})
    b = plan_study(cfg).extras
    groups = {(a.label, a.threat_model): a for a in b.attacks}
    assert set(groups) == {("noise ~ rtn 2b", "fp_shadows"), ("2 epochs", "fp_shadows"), ("5 epochs", "fp_shadows"),
                           ("dp-sgd sigma 0.5", "matched_shadows"), ("dp-sgd sigma 0.5", "fp_shadows"),
                           ("dp-sgd sigma 2", "matched_shadows"), ("dp-sgd sigma 2", "fp_shadows"),
                           ("prune 90%", "matched_shadows"), ("prune 90%", "fp_shadows")}
    fp_shadow_keys = {q.key for q in plan_study(cfg).queries[:6]}
    assert {q.key for q in groups[("2 epochs", "fp_shadows")].shadows} == fp_shadow_keys
    dp = groups[("dp-sgd sigma 2", "matched_shadows")]
    assert len(dp.shadows) == 4 and all(q.model.kind == "train_dp" and q.model.noise_multiplier == 2.0
                                        and q.model.num_models == 4 and q.model.epochs == 3 for q in dp.shadows)
    assert all(q.model.epochs == 2 for q in groups[("2 epochs", "fp_shadows")].targets)
    pruned = groups[("prune 90%", "matched_shadows")]
    assert len(pruned.shadows) == 6 and all(q.model.kind == "prune" for q in pruned.shadows)
    # every job is planned once
    keys = [j.key for j in b.jobs]
    assert len(keys) == len(set(keys))
