"""Model scale (`scale_widths`): the study repeated at several widths, and the paired leakage reduction."""
import numpy as np
import pytest
from PIL import Image

from ptqlib.models.zoo import build_model
from ptqlib.results import scale
from ptqlib.runtime.store import Store
from ptqlib.study import config, stages


def _separable(rng, k: int, n: int, gap: float):
    """k models' scores: n examples each, half members, members shifted up by `gap`."""
    members = np.zeros((k, n), dtype=bool)
    members[:, : n // 2] = True
    return rng.normal(size=(k, n)) + gap * members, members


def test_reduction_known_answers():
    rng = np.random.default_rng(0)
    fp_scores, members = _separable(rng, 6, 4000, 3.0)
    same = scale.reduction(fp_scores, members, fp_scores, members, n_boot=50)
    for x in scale.FPRS:  # a recipe that leaks exactly like FP32: no cut, and every paired draw agrees
        assert same[f"cut@{x:g}"] == 0 and same[f"cut@{x:g}_low"] == 0 and same[f"cut@{x:g}_high"] == 0
    blind = scale.reduction(rng.normal(size=members.shape), members, fp_scores, members, n_boot=50)
    # no signal left: TPR falls to about the FPR, from FP32's ~60% (1% FPR) and ~30% (0.1%)
    assert blind["cut@0.01"] > 0.9 and blind["cut@0.01_low"] > 0.9 and blind["cut@0.001"] > 0.9
    half, _ = _separable(rng, 6, 4000, 1.5)  # a real but partial cut: resolved, strictly between 0 and 1
    part = scale.reduction(half, members, fp_scores, members, n_boot=50)
    assert 0 < part["cut@0.01_low"] <= part["cut@0.01"] <= part["cut@0.01_high"] < 1


def _noise_folder(root, classes=4, train=24, test=6, size=8):
    rng = np.random.default_rng(1)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for j in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                pixels[..., c % 3] = 60 * c  # a class signal the net can pick up
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{j}.png")
    return root


def test_run_scale_repeats_the_study_at_every_width(tmp_path):
    data = _noise_folder(tmp_path / "folder")
    cfg = config.validate({"dataset": "imagefolder", "data_root": str(data), "arch": "airbench_small",
                           "store": str(tmp_path / "store"), "num_targets": 1, "num_shadows": 4, "epochs": 1,
                           "methods": ["rtn"], "bits": [2], "last_layer_bits": [None], "attacks": ["online"],
                           "threat_models": ["leave_one_out_fp"], "executor": "serial", "bootstrap": 20,
                           "scale_widths": [0.25, 0.5]})
    assert stages.extras_shown(cfg)  # the extras report renders the section
    table = stages.run_scale(cfg, Store(cfg.store_path))
    assert list(dict.fromkeys(table["width"])) == [0.25, 0.5]
    assert set(table["label"]) == {"fp32", "rtn 2b"} and len(table) == 4
    for w, group in table.groupby("width"):
        weights = sum(p.numel() for p in build_model("airbench_small", 4, 3, 8, width=w).parameters())
        assert (group["weights"] == weights).all() and (group["models"] == 4).all()  # the 4 pool models
    assert table.groupby("width")["weights"].first().is_monotonic_increasing
    fp = table[table["label"] == "fp32"].set_index("width")
    for _, r in table[table["label"] == "rtn 2b"].iterrows():  # the cut is defined exactly where FP32 leaks at all
        for x in ("0.01", "0.001"):
            leaks = fp.loc[r["width"], f"tpr@{x}"] > 0
            assert np.isfinite(r[f"cut@{x}"]) == leaks
            if leaks:
                assert r[f"cut@{x}"] == pytest.approx(1 - r[f"tpr@{x}"] / fp.loc[r["width"], f"tpr@{x}"])
    assert fp["cut@0.01"].isna().all()
    shown = scale.display_table(table)
    assert list(shown["width"]) == ["0.25", "0.25", "0.5", "0.5"] and shown.loc[0, "cut@1%FPR %"] == ""
    assert scale.figure(table) is not None


def test_scale_widths_only_with_airbench():
    with pytest.raises(Exception, match="scale_widths: applies only to arch airbench_small"):
        config.validate({"scale_widths": [0.5]})


@pytest.mark.slow
def test_extras_report_renders_the_scale_section(tmp_path):
    """06_extras through Papermill on a preset with scale_widths: the section, its table and figure files."""
    import yaml
    from conftest import notebook_outputs, run_notebook
    data = _noise_folder(tmp_path / "folder")
    keys = {"name": "tiny_scale", "dataset": "imagefolder", "data_root": str(data), "arch": "airbench_small",
            "store": str(tmp_path / "store"), "reports": str(tmp_path / "reports"), "num_targets": 1, "num_shadows": 4,
            "epochs": 1, "methods": ["rtn"], "bits": [2], "last_layer_bits": [None], "attacks": ["online"],
            "threat_models": ["leave_one_out_fp"], "executor": "serial", "bootstrap": 20, "scale_widths": [0.25, 0.5]}
    preset = tmp_path / "tiny_scale.yaml"
    preset.write_text(yaml.safe_dump(keys))
    cfg = config.validate(keys)
    stages.run_all(cfg, Store(cfg.store_path))  # the main stages, in this process
    cfg.report_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "extras.ipynb"
    proc = run_notebook("06_extras.ipynb", out, preset, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = notebook_outputs(out)
    assert "### Model scale" in text and "widths 0.25, 0.5" in text and "cut@1%FPR %" in text
    assert (cfg.report_dir / "scale.csv").is_file() and (cfg.report_dir / "scale.png").is_file()
