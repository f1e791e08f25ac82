"""Crash safety, integrity and determinism of the store on a micro study run in-process.

A subprocess runs every compute stage (`pipeline.run_all`); we SIGKILL it at random moments,
rerun, and require the final metrics to equal an uninterrupted run's, with no finished job
recomputed.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

MICRO = """name: micro
num_targets: 2
num_shadows: 4
epochs: 2
methods: [rtn]
bits: [2]
last_layer_bits: [null]
attacks: [online, online_fixed, global]
threads: 1
executor: serial
"""

DRIVER = ("import sys; from ptqlib.study.presets import load_preset; from ptqlib.study import stages as pipeline; "
          "df = pipeline.run_all(load_preset(sys.argv[1])); df.to_csv(sys.argv[2], index=False)")


def _preset(tmp_path: Path, name: str = "micro") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(MICRO + f"store: {tmp_path / 'store'}\nreports: {tmp_path / 'reports'}\n")
    return p


def _run(preset: Path, out: Path, **kw):
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(preset), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _markers(store: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in store.glob("*/*/COMPLETE")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its metrics, and how long it took."""
    tmp = tmp_path_factory.mktemp("reference")
    t0 = time.perf_counter()
    proc = _run(_preset(tmp), tmp / "metrics.csv")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return pd.read_csv(tmp / "metrics.csv"), time.perf_counter() - t0, tmp


def test_determinism_two_fresh_runs_bit_identical(reference, tmp_path):
    ref, _, ref_dir = reference
    proc = _run(_preset(tmp_path), tmp_path / "metrics.csv")
    assert proc.wait(timeout=600) == 0
    again = pd.read_csv(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(ref, again, check_exact=True)
    # identical masks and weights: every job's files have the same checksums
    for marker in (ref_dir / "store").glob("*/*/COMPLETE"):
        twin = tmp_path / "store" / marker.relative_to(ref_dir / "store")
        mine, theirs = json.loads(marker.read_text()), json.loads(twin.read_text())
        for name in mine:
            if name not in ("meta.json", "params.json"):  # meta holds wall times
                assert mine[name] == theirs[name], (marker.parent.name, name)


def test_sigkill_at_random_moments_then_resume(reference, tmp_path):
    ref, duration, _ = reference
    preset, out = _preset(tmp_path), tmp_path / "metrics.csv"
    rng = random.Random(0)
    for kill in range(3):
        before = _markers(tmp_path / "store")
        proc = _run(preset, out)
        time.sleep(rng.uniform(0.15, 0.85) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = _markers(tmp_path / "store")
        # nothing that had finished was recomputed or rewritten
        assert {p: after[p] for p in before} == before
    proc = _run(preset, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    pd.testing.assert_frame_equal(ref, pd.read_csv(out), check_exact=True)
    assert not list((tmp_path / "store").glob("*/.tmp-*"))  # no leftovers


def test_corrupt_checkpoint_and_logits_are_reported_and_recomputed(reference, tmp_path):
    import shutil
    ref, _, ref_dir = reference
    shutil.copytree(ref_dir / "store", tmp_path / "store")
    model = next((tmp_path / "store" / "train").glob("*/model.pt"))
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncate
    logits = next((tmp_path / "store" / "query").glob("*/logits.npy"))
    data = bytearray(logits.read_bytes())
    data[-20:] = bytes(b ^ 0xFF for b in data[-20:])  # flip bytes
    logits.write_bytes(bytes(data))
    proc = _run(_preset(tmp_path), tmp_path / "metrics.csv")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"corrupt artifact: {model}" in err and f"corrupt artifact: {logits}" in err
    pd.testing.assert_frame_equal(ref, pd.read_csv(tmp_path / "metrics.csv"), check_exact=True)


def test_two_concurrent_runs_end_with_one_consistent_store(reference, tmp_path):
    ref, _, _ = reference
    preset = _preset(tmp_path)
    procs = [_run(preset, tmp_path / f"m{i}.csv") for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    for i in range(2):
        pd.testing.assert_frame_equal(ref, pd.read_csv(tmp_path / f"m{i}.csv"), check_exact=True)
    # every job exists exactly once and is intact
    from ptqlib.runtime.store import Store, file_sha256
    for marker in (tmp_path / "store").glob("*/*/COMPLETE"):
        for name, digest in json.loads(marker.read_text()).items():
            assert file_sha256(marker.parent / name) == digest
    assert not list((tmp_path / "store").glob("*/.tmp-*"))
