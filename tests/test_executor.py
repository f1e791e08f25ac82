"""serial, process and ray back-ends run the same jobs to identical artifacts; failures surface."""
import json
from pathlib import Path

import numpy as np
import pytest

from ptqlib.study import stages as pipeline
from ptqlib.study.config import validate
from ptqlib.runtime.executor import JobError, run_jobs
from ptqlib.study.jobs import TrainJob
from ptqlib.study.plan import executor_options, plan_study
from ptqlib.runtime.store import Store

BASE = dict(num_targets=1, num_shadows=4, epochs=2, methods=["rtn"], bits=[2], last_layer_bits=[None],
            attacks=["online", "global"], threads=1, worker_threads=1, workers=2, executor="serial")


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
    jobs = list(plan_study(cfg).shadows)
    bad = jobs[2]
    real = TrainJob.compute

    def flaky(job, store, out):
        if job.key == bad.key:
            raise RuntimeError("simulated out-of-memory")
        return real(job, store, out)

    monkeypatch.setattr(TrainJob, "compute", flaky)
    store = Store(cfg.store_path)
    with pytest.raises(JobError) as err:
        run_jobs(jobs, store, executor_options(cfg))
    assert bad.key in str(err.value) and "simulated out-of-memory" in str(err.value)
    assert "Traceback" in str(err.value) and "train shadow 2" in str(err.value)
    assert not store.is_complete(bad) and store.failure_record(bad).is_file()
    done = {j.key: (store.path(j) / "COMPLETE").stat().st_mtime_ns for j in jobs if j is not bad}
    monkeypatch.setattr(TrainJob, "compute", real)
    finished = []
    run_jobs(jobs, store, executor_options(cfg), on_done=lambda: finished.append(1))
    assert len(finished) == 1  # the rerun only runs the failed job
    assert store.is_complete(bad) and not store.failure_record(bad).exists()
    assert {k: (store.root / "train" / k / "COMPLETE").stat().st_mtime_ns for k in done} == done
