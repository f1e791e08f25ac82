"""The beyond-the-paper groups end to end on a tiny study: a group attack reproduces the main attack
on the same models, and every report table is built from the stored arrays."""
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("opacus")

from ptqlib.results import tables as analysis
from ptqlib.results import figures
from ptqlib.results import per_example
from ptqlib.study import stages as pipeline  # noqa: E402
from ptqlib.study.config import validate  # noqa: E402
from ptqlib.study.jobs import GroupAttackJob  # noqa: E402
from ptqlib.study.plan import plan_study  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    cfg = validate(dict(num_targets=2, num_shadows=4, epochs=3, methods=["rtn"], bits=[4, 2], last_layer_bits=[None],
                        act_bits=[None, 8], calib_samples=128, control_noise=True, control_epochs=[1], dp_noise=[1.0],
                        dp_epochs=1, dp_shadows=4, prune_sparsity=[0.5], executor="serial", attacks=["online"],
                        store=str(tmp_path_factory.mktemp("store"))))
    store = Store(cfg.store_path)
    pipeline.run_all(cfg, store)
    beyond, beyond_arrays = pipeline.run_extras(cfg, store)
    results, arrays = pipeline.load_attack_results(cfg, store)
    return cfg, store, results, arrays, beyond, beyond_arrays


def test_a_group_attack_on_the_fp32_targets_reproduces_the_main_attack(study):
    cfg, store, results, arrays, *_ = study
    p = plan_study(cfg)
    shadows, targets = p.queries[:cfg.num_shadows], [q for q in p.queries[cfg.num_shadows:] if q.label == "fp32"]
    again = GroupAttackJob(label="fp32 again", family="epochs", setting=cfg.epochs, threat_model="fp_shadows",
                           targets=tuple(targets), shadows=tuple(shadows), attacks=("online",))
    again.run(store)
    fp_rows = results[(results["label"] == "fp32") & (results["attack"] == "online")].sort_values("target")
    assert np.allclose(np.load(store.path(again) / "scores.npy"), arrays["scores"][fp_rows.index.to_numpy()])
    assert "fp32 again" in again.describe()


def test_groups_results_and_tables(study):
    cfg, store, results, arrays, beyond, beyond_arrays = study
    assert len(beyond) == len(beyond_arrays["scores"]) == 2 * len(plan_study(cfg).extras.attacks)
    assert set(beyond["method"]) == {"noise", "epochs", "dp", "prune"}
    dp = beyond[beyond["method"] == "dp"]
    assert dp["epsilon"].notna().all() and (dp["epsilon"] > 0).all()
    assert set(results["label"]) == {"fp32", "rtn 4b", "rtn 4b a8", "rtn 2b", "rtn 2b a8"}
    ctl = analysis.controls_table(results, arrays, beyond, beyond_arrays, n_boot=10)
    assert set(ctl["recipe"]) == {"rtn 4b", "rtn 2b"} and set(ctl["control_method"]) == {"noise", "epochs"}
    act = analysis.activation_table(results, arrays, n_boot=0)
    assert sorted(act["act_bits"].dropna()) == [8, 8]
    fr = analysis.frontier_table(results, arrays, beyond, beyond_arrays, n_boot=0)
    assert {"ptq", "dp", "prune"} == set(fr["family"])
    for fig in (figures.controls_plot(results, arrays, beyond, beyond_arrays),
                figures.frontier_plot(results, arrays, beyond, beyond_arrays)):
        assert fig.axes


def test_per_example_view_follows_fp32s_detected_members(study):
    cfg, store, results, arrays, *_ = study
    pool = pipeline.fp_shadow_pool(cfg, store)
    gap = per_example.atypicality(pool.scores, pool.keep)
    assert len(gap) == pool.keep.shape[1] and np.isfinite(gap["gap_z"]).all()
    view = per_example.per_example_scores(results, arrays, gap, fpr=0.05, top=10)
    fp = view[view["label"] == "fp32"]
    assert fp["detected"].all() and (fp["score"] == fp["fp32_score"]).all()
    summary = per_example.per_example_summary(view)
    assert summary.set_index("label").loc["fp32", "still_detected"] == 1.0
    figures.per_example_plot(view)


def test_vulnerable_members_and_threshold_against_a_brute_force_reference():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=400)
    members = rng.random(400) < 0.5
    scores[members] += 0.7
    for fpr in (0.0, 0.01, 0.05, 0.2):
        t = per_example.threshold_at_fpr(scores, members, fpr)
        out = scores[~members]
        # the lowest threshold among the scores themselves whose FPR stays within fpr
        candidates = [c for c in np.sort(np.r_[scores, -np.inf]) if (out > c).mean() <= fpr]
        assert t == min(candidates)
        picked = per_example.vulnerable_members(scores, members, fpr)
        expected = [i for i in np.argsort(-scores, kind="stable") if members[i] and scores[i] > t]
        assert list(picked) == expected


@pytest.mark.slow
def test_extras_report_renders_every_section_through_papermill(tmp_path):
    """06_extras as a user runs it, on a tiny digits preset with every extra on: controls, activation bits,
    DP-SGD, pruning, the per-example view, canaries and the both-models attacker; each section renders."""
    import yaml
    from conftest import notebook_outputs, run_notebook
    keys = dict(name="all_extras", store=str(tmp_path / "store"), reports=str(tmp_path / "reports"), num_targets=2,
                num_shadows=4, epochs=2, methods=["rtn"], bits=[2], last_layer_bits=[None], act_bits=[None, 8],
                calib_samples=128, control_noise=True, control_epochs=[1], dp_noise=[1.0], dp_epochs=1, dp_shadows=4,
                prune_sparsity=[0.5], canaries=8, threat_models=["fp_shadows", "both_models"], attacks=["online"],
                executor="serial", bootstrap=20)
    preset = tmp_path / "all_extras.yaml"
    preset.write_text(yaml.safe_dump(keys))
    cfg = validate(keys)
    assert pipeline.extras_shown(cfg)
    pipeline.run_all(cfg, Store(cfg.store_path))  # the main stages, in this process; the notebook runs the extras
    cfg.report_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "extras.ipynb"
    proc = run_notebook("06_extras.ipynb", out, preset, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = notebook_outputs(out)
    for heading in ("### Is it the lost accuracy or the quantization?", "### Weights x activations",
                    "### PTQ vs DP-SGD and pruning", "### Per-example view", "### Canary audit", "### Both models"):
        assert heading in text, heading
    assert "Model scale" not in text and "Traceback" not in text  # scale_widths off: no section
    assert (cfg.report_dir / "canaries.csv").is_file() and (cfg.report_dir / "both_models.csv").is_file()
