"""The smoke preset through the real runner: all five notebooks, HTML reports, resume."""
import subprocess
import time
from pathlib import Path

import pytest

from ptqlib.runner import NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent


def smoke_preset(work: Path) -> Path:
    """params/smoke.yaml with its store and reports in `work` (relative paths resolve from the repository root)."""
    preset = work / "smoke.yaml"
    preset.write_text((ROOT / "params/smoke.yaml").read_text() + f"\nstore: {work / 'artifacts'}\nreports: {work / 'reports'}\n")
    return preset


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from conftest import run_cli
    work = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    proc = run_cli("run", str(smoke_preset(work)), cwd=work)
    return work, proc, time.perf_counter() - t0


@pytest.mark.slow
def test_smoke_runs_all_stages_and_renders_reports(smoke_run):
    work, proc, _ = smoke_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = work / "reports" / "smoke"
    assert proc.stdout.strip().endswith(f"report: {report / 'index.html'}")
    assert "[3/5] quantize" in proc.stdout and "4/4" in proc.stdout  # one progress line per stage, jobs counted
    for stage, nb in NOTEBOOKS.items():
        html = (report / nb).with_suffix(".html")
        if stage == "extras":  # smoke turns no extra on: the stage does not run
            assert not html.exists() and "/5] extras" not in proc.stdout and "[6/" not in proc.stdout
            continue
        assert html.is_file(), html
        assert "Traceback" not in html.read_text()
    index = (report / "index.html").read_text()
    assert "TPR@0.1%FPR" in index and "rtn 1.58b + 8b last" in index and "fp32" in index
    assert (report / "privacy_utility.png").stat().st_size > 10_000
    analysis = (report / "05_analysis.html").read_text()
    assert "non-members per target" in analysis  # the n * FPR < 10 warning is visible
    # every job directory is complete (marker) and carries provenance
    for job_dir in (work / "artifacts").glob("[!.]*/[!.]*"):  # skip .locks and temporaries
        assert (job_dir / "COMPLETE").is_file() and (job_dir / "meta.json").is_file()
        assert (job_dir / "log.txt").stat().st_size > 0  # every job keeps its own log


@pytest.mark.slow
def test_rerun_skips_finished_jobs(smoke_run):
    work, proc, _ = smoke_run
    before = {p: p.stat().st_mtime_ns for p in (work / "artifacts").glob("*/*/COMPLETE")}
    from conftest import run_cli
    proc2 = run_cli("run", str(smoke_preset(work)), "--stages", "train,shadows,quantize,attack", cwd=work)
    assert proc2.returncode == 0, proc2.stderr
    after = {p: p.stat().st_mtime_ns for p in (work / "artifacts").glob("*/*/COMPLETE")}
    assert after == before  # nothing recomputed or rewritten


def papermill_stage(work: Path, stage: str, out: Path) -> subprocess.CompletedProcess:
    """One stage notebook run on its own with Papermill on the smoke preset (as a user would)."""
    from conftest import run_notebook
    return run_notebook(NOTEBOOKS[stage], out, smoke_preset(work), work)


@pytest.mark.slow
def test_notebook_runs_standalone_with_papermill(smoke_run, tmp_path):
    work, _, _ = smoke_run
    proc = papermill_stage(work, "analysis", tmp_path / "out.ipynb")
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_failing_stage_renders_error_and_exits_nonzero(tmp_path):
    from conftest import run_cli
    preset = tmp_path / "p.yaml"
    preset.write_text(f"name: nothing_trained\nnum_targets: 1\nnum_shadows: 4\nepochs: 1\nmethods: [rtn]\n"
                      f"store: {tmp_path / 'artifacts'}\nreports: {tmp_path / 'reports'}\n")
    proc = run_cli("run", str(preset), "--stages", "quantize", cwd=tmp_path)
    assert proc.returncode == 1
    html = tmp_path / "reports" / "nothing_trained" / "03_quantize.html"
    assert html.is_file() and "run the 'train' stage first" in html.read_text()
    assert "failed" in (tmp_path / "reports" / "nothing_trained" / "index.html").read_text()


@pytest.mark.slow
def test_extras_notebook_runs_on_a_study_without_extras_and_says_so(smoke_run, tmp_path):
    work, _, _ = smoke_run
    out = tmp_path / "extras.ipynb"
    proc = papermill_stage(work, "extras", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "off in this preset" in out.read_text()
