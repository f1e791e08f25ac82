"""serial, process and ray back-ends run the same jobs to identical artifacts; failures surface."""
import json
from pathlib import Path

import numpy as np
import pytest

from ptqlib import pipeline
from ptqlib.config import validate
from ptqlib.executor import JobError, failure_record, run_jobs
from ptqlib.store import Store

BASE = dict(num_targets=1, num_shadows=4, epochs=2, bits=[2], last_layer_bits=[None],
            attacks=["online", "global"], threads=1, worker_threads=1, workers=2)


def _checksums(store: Path) -> dict:
    out = {}
    for marker in store.glob("*/*/COMPLETE"):
        for name, digest in json.loads(marker.read_text()).items():
            if name not in ("meta.json", "params.json", "log.txt"):
                out[(marker.parent.parent.name, marker.parent.name, name)] = digest
    return out


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    cfg = validate({**BASE, "store": str(root / "store")})
    return pipeline.run_all(cfg), root / "store"


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_backends_give_identical_artifacts_and_metrics(serial_run, tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    ref, ref_store = serial_run
    cfg = validate({**BASE, "store": str(tmp_path / "store"), "executor": executor})
    df = pipeline.run_all(cfg)
    assert df.equals(ref)
    assert _checksums(tmp_path / "store") == _checksums(ref_store)  # masks, weights, logits


def test_failing_job_surfaces_with_key_and_traceback_and_only_it_reruns(tmp_path, monkeypatch):
    cfg = validate({**BASE, "store": str(tmp_path / "store")})
    jobs = pipeline.shadow_jobs(cfg)
    bad = jobs[2]
    real = pipeline._RUNNERS["train"]

    def flaky(cfg_, store, data, job, out):
        if job.key == bad.key:
            raise RuntimeError("simulated out-of-memory")
        return real(cfg_, store, data, job, out)

    monkeypatch.setitem(pipeline._RUNNERS, "train", flaky)
    with pytest.raises(JobError) as err:
        run_jobs(cfg, jobs)
    assert bad.key in str(err.value) and "simulated out-of-memory" in str(err.value)
    assert "Traceback" in str(err.value)
    store = Store(cfg.store)
    assert not store.is_complete(bad) and failure_record(store, bad).is_file()
    done = {j.key: (store.path(j) / "COMPLETE").stat().st_mtime_ns for j in jobs if j is not bad}
    monkeypatch.setitem(pipeline._RUNNERS, "train", real)
    run_jobs(cfg, jobs)  # the rerun only runs the failed job
    assert store.is_complete(bad) and not failure_record(store, bad).exists()
    assert {k: (store.root / "train" / k / "COMPLETE").stat().st_mtime_ns for k in done} == done
