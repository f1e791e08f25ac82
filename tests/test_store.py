import json

import pytest

from ptqlib.runtime.store import MARKER, Job, Store


def test_key_depends_on_params_and_inputs_only():
    a = Job("train", {"x": 1, "y": [1, 2]})
    assert a.key == Job("train", {"y": [1, 2], "x": 1}).key  # order-free
    assert a.key != Job("train", {"x": 2, "y": [1, 2]}).key
    assert a.key != Job("train", {"x": 1, "y": [1, 2]}, ("abc",)).key
    assert a.key != Job("query", {"x": 1, "y": [1, 2]}).key


def test_run_writes_marker_last_and_skips_when_complete(tmp_path):
    store, job, calls = Store(tmp_path), Job("train", {"i": 0}), []

    def compute(out):
        calls.append(1)
        (out / "result.txt").write_text("42")
        return {"acc": 0.5}

    path = store.run(job, compute)
    assert (path / "result.txt").read_text() == "42"
    checksums = json.loads((path / MARKER).read_text())
    assert set(checksums) == {"result.txt", "params.json", "meta.json"}
    meta = store.meta(job)
    assert meta["acc"] == 0.5 and "torch" in meta and "wall_s" in meta
    store.run(job, compute)
    assert len(calls) == 1  # finished jobs are skipped


def test_failed_job_leaves_nothing_and_incomplete_dir_is_redone(tmp_path):
    store, job = Store(tmp_path), Job("train", {"i": 1})

    def boom(out):
        (out / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.run(job, boom)
    assert not store.path(job).exists()
    assert list((tmp_path / "train").iterdir()) == []  # no temporary leftovers
    # a directory without marker (e.g. copied by hand, or from an older crash) is recomputed
    store.path(job).mkdir(parents=True)
    (store.path(job) / "result.txt").write_text("stale")
    store.run(job, lambda out: (out / "result.txt").write_text("fresh") and None)
    assert (store.path(job) / "result.txt").read_text() == "fresh"


def test_require_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the 'shadows' stage first"):
        Store(tmp_path).require(Job("train", {"i": 9}), "shadow model 9", "shadows")
