"""Run the stage notebooks of a preset in order with Papermill, and render the HTML report.

Each stage's executed notebook is kept as reports/<preset>/<stage>.ipynb and rendered to
HTML with code hidden; reports/<preset>/index.html links them and shows the headline table
and figure. A failing stage still renders its HTML (with the error) and stops the run.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ptqlib.errors import ConfigError
from ptqlib.results.index import WARNINGS, write_index
from ptqlib.runtime import notebooks
from ptqlib.runtime.progress import StageProgress
from ptqlib.runtime.store import Store
from ptqlib.study.config import STAGES, resolve_path
from ptqlib.study.plan import plan_study
from ptqlib.study.presets import load_preset, read_preset
from ptqlib.study.stages import extras_shown, fit_check, model_fit_warnings

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = {stage: f"{i:02d}_{stage}.ipynb" for i, stage in enumerate(STAGES, start=1)}
PAGES = {stage: Path(name).with_suffix(".html").name for stage, name in NOTEBOOKS.items()}


def parse_stages(text: str | None) -> list[str] | None:
    """--stages as a list in pipeline order; None without it (run() then picks the preset's stages)."""
    if not text:
        return None
    stages = [s.strip() for s in text.split(",") if s.strip()]
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"--stages: unknown stage {s!r}; valid stages are {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]  # always in pipeline order


def _check_writable_folder(key: str, path: Path) -> None:
    """`path` is a folder this process can write, or one it can create: else a one-line ConfigError.

    Nothing is left behind: a probe file in the nearest existing folder is removed at once.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = f"{path} is a file" if existing == path else f"{path} cannot be created: {existing} is a file"
        raise ConfigError(f"{key}: {where}, not a folder; point {key} at a folder (created if missing)")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".ptqlib-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{key}: {path} cannot be written ({err.strerror} in {existing}); point {key} at a "
                          "folder you can write") from None


def check_places(cfg) -> None:
    """Before any work: store and reports are writable folders (or can be made), data_root is no file."""
    _check_writable_folder("store", cfg.store_path)
    _check_writable_folder("reports", resolve_path(cfg.reports))
    if cfg.dataset != "digits" and cfg.data_path.exists() and not cfg.data_path.is_dir():
        raise ConfigError(f"data_root: {cfg.data_path} is a file, not a folder; point data_root at the folder "
                          f"holding the {cfg.dataset} files")


def _check_fit(cfg, store, report_dir: Path) -> None:
    """The fit checks after the train and shadows stages, in the terminal and on the report's index page:
    the targets' means, then one line per model (target or shadow) that did not fit on its own."""
    warning = fit_check(cfg, store)
    lines = ([warning] if warning else []) + model_fit_warnings(cfg, store)
    (report_dir / WARNINGS).unlink(missing_ok=True)
    for line in lines:
        print(f"    warning: {line}", flush=True)
    if lines:
        (report_dir / WARNINGS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(preset: str | Path, stages: list[str] | None = None, verbose: bool = False) -> int:
    """Validate the preset, then execute its stages. Returns a process exit code.

    The terminal shows one progress line per stage; `verbose` adds Papermill's cell bar and
    the kernels' own log lines.
    """
    cfg = load_preset(preset)  # raises ConfigError before anything is written
    check_places(cfg)
    params = {**read_preset(preset), "name": cfg.name}
    stages = stages or [s for s in STAGES if s != "extras" or extras_shown(cfg)]  # extras only when turned on
    report_dir = cfg.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.store_path)
    jobs = plan_study(cfg).stages
    status: dict[str, tuple[str, float]] = {}
    code = 0
    for i, stage in enumerate(stages, start=1):
        out_nb = report_dir / NOTEBOOKS[stage]
        t0 = time.perf_counter()
        try:
            with StageProgress(store, jobs[stage], f"[{i}/{len(stages)}] {stage}"):
                notebooks.execute(NOTEBOOK_DIR / NOTEBOOKS[stage], out_nb, params, verbose)
            status[stage] = ("done", time.perf_counter() - t0)
        except notebooks.ExecutionError as err:
            status[stage] = ("failed", time.perf_counter() - t0)
            print(f"stage '{stage}' failed: {err.ename}: {err.evalue}", flush=True)
            code = 1
        if out_nb.is_file():
            notebooks.render_html(out_nb)
        if stage in ("train", "shadows") and status[stage][0] == "done":
            _check_fit(cfg, store, report_dir)
        print(f"    {status[stage][0]} in {status[stage][1]:.1f} s -> {out_nb.with_suffix('.html')}", flush=True)
        if code:
            break
    index = write_index(cfg, report_dir, status, PAGES)
    finding = report_dir / "finding.txt"
    if status.get("analysis", ("",))[0] == "done" and finding.is_file():  # the answer, last, above the path
        print(f"\n{finding.read_text(encoding='utf-8').strip()}\n", flush=True)
    print(f"report: {index}" if code == 0 else f"run failed; partial report: {index}", flush=True)
    return code
