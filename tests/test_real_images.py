"""A small slice of the real-image preset end to end, on the real CIFAR-10 photographs when present."""
import pytest

from ptqlib.study import config, plan, presets
from ptqlib.study import stages as pipeline
from ptqlib.runtime.store import Store

PRESET = config.REPO_ROOT / "params" / "cifar10-10k.yaml"


def test_real_image_slice_runs_end_to_end(tmp_path):
    """The preset's own protocol on 400 real photographs: RTN, BRECQ, and exact OBC with BatchNorm re-tuned on
    the pool (the authors' protocol, as in the preset), on the real-image architecture at a quarter of its width
    (OBC's cost grows with the cube of a layer's input width: the full width costs ~23 s per model and recipe).
    Two epochs on 400 images leave dead channels, so OBC takes the authors' fallback (1*I) where a Hessian is
    singular."""
    raw = presets.read_preset(PRESET)
    if not config.resolve_path(raw["data_root"]).is_dir():
        pytest.skip(f"{raw['data_root']} (resolved from the repository root) is absent: the real images are "
                    "optional, see ../shared/data/README.md")
    cfg = config.validate({**raw, "store": str(tmp_path / "store"), "train_subset": 400, "test_subset": 200,
                           "num_targets": 1, "num_shadows": 4, "epochs": 2, "width": 0.25,
                           "methods": ["rtn", "brecq", "obc"], "bits": [2], "obc_bits": [2],
                           "calib_samples": 128, "obc_calib_samples": 128, "obc_cholesky": "authors", "adaround_iters": 20,
                           "last_layer_bits": [None], "attacks": ["online"], "executor": "serial"})
    assert cfg.bn_retune == ("obc",) and cfg.bn_retune_source == "pool" and cfg.obc_hessian == "fp"
    store = Store(cfg.store_path)
    df = pipeline.run_all(cfg, store)
    assert set(df["threat_model"]) == {"leave_one_out_fp", "leave_one_out"}  # the preset's: one pool, every model a target
    assert set(df["label"]) == {"fp32", "rtn 2b", "brecq 2b", "obc 2b"}
    data = pipeline.dataset(cfg, store)
    assert data.num_classes == 10 and tuple(data.shape) == (3, 16, 16) and len(data.y_train) == 400
    assert sorted(df["target"].unique()) == [0, 1, 2, 3]  # the 4 pool models, each the target once
    for tm in ("leave_one_out_fp", "leave_one_out"):  # obc_models 0: OBC on every pool model, both threat models
        assert sorted(df.loc[(df["label"] == "obc 2b") & (df["threat_model"] == tm), "target"].unique()) == [0, 1, 2, 3]
    assert df["n_nonmembers"].sum() > 0 and df["auc"].between(0, 1).all()
    metas = {(q.method, q.train_job.index): store.meta(q) for q in plan.plan_study(cfg).quantized_shadows}
    assert set(metas) == {(m, i) for m in ("rtn", "brecq", "obc") for i in range(4)}
    obc = metas[("obc", 0)]
    assert obc["bn_retuned"] and not any(m["bn_retuned"] for k, m in metas.items() if k[0] != "obc")
    assert set(obc["algorithm"].values()) == {"obq"} and 0 < obc["test_acc"] <= 1  # exact OBQ on every layer
    assert {a for k, m in metas.items() if k[0] == "brecq" for a in m["algorithm"].values()} == {"brecq"}
