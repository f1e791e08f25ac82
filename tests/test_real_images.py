"""A small slice of the real-image preset end to end, on the real CIFAR-10 photographs when present."""
import pytest

from ptqlib.study import config, presets
from ptqlib.study import stages as pipeline
from ptqlib.runtime.store import Store

PRESET = config.REPO_ROOT / "params" / "cifar10-10k.yaml"


def test_real_image_slice_runs_end_to_end(tmp_path):
    raw = presets.read_preset(PRESET)
    if not config.resolve_path(raw["data_root"]).is_dir():
        pytest.skip(f"{raw['data_root']} (resolved from the repository root) is absent: the real images are "
                    "optional, see ../shared/data/README.md")
    cfg = config.validate({**raw, "store": str(tmp_path / "store"), "train_subset": 400, "test_subset": 200,
                           "num_targets": 1, "num_shadows": 4, "epochs": 2, "methods": ["rtn"], "bits": [2],
                           "last_layer_bits": [None], "attacks": ["online"], "executor": "serial"})
    df = pipeline.run_all(cfg, Store(cfg.store_path))
    assert set(df["threat_model"]) == {"leave_one_out_fp", "leave_one_out"}  # the preset's: one pool, every model a target
    assert set(df["label"]) == {"fp32", "rtn 2b"}
    data = pipeline.dataset(cfg, Store(cfg.store_path))
    assert data.num_classes == 10 and tuple(data.shape) == (3, 16, 16) and len(data.y_train) == 400
    assert sorted(df["target"].unique()) == [0, 1, 2, 3]  # the 4 pool models, each the target once
    assert df["n_nonmembers"].sum() > 0 and df["auc"].between(0, 1).all()
