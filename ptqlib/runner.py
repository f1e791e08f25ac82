"""Run the stage notebooks of a preset in order with Papermill, and render the HTML report.

Each stage's executed notebook is kept as reports/<preset>/<stage>.ipynb and rendered to
HTML with code hidden; reports/<preset>/index.html links them and shows the headline table
and figure. A failing stage still renders its HTML (with the error) and stops the run.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from .config import STAGES, ConfigError, load_preset, read_preset, resolve_path
from .report import NOTEBOOKS, write_index

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def parse_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
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


def collapse_carriage_returns(text: str) -> str:
    """What a terminal shows of a stream: each line's text after its last carriage return.

    A progress bar redraws its line with '\r' hundreds of times; a browser would print every redraw.
    """
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def render_html(notebook: Path) -> Path:
    """The executed notebook as HTML with code cells hidden (outputs and markdown only)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        merged = []  # consecutive writes to one stream are one text, as a terminal shows them
        for output in cell.get("outputs", []):
            if (output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                    and merged[-1]["name"] == output["name"]):
                merged[-1]["text"] += output["text"]
            else:
                merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream":
                output["text"] = collapse_carriage_returns(output["text"])
        if "outputs" in cell:
            cell["outputs"] = merged
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    out = notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


class StageProgress:
    """One terminal line per stage: jobs done/total, elapsed and ETA, read from the store.

    The stage's jobs run inside a notebook kernel (and its workers), so the line counts
    completion markers in the store every second: it works for every executor, and a resumed
    run counts its finished jobs at once.
    """

    def __init__(self, store, jobs: list, desc: str, interval: float = 1.0):
        from .progress import progress

        self.store, self.jobs, self.interval = store, jobs, interval
        self.bar = progress(desc=desc, total=len(jobs), initial=self._count(), file=sys.stdout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _count(self) -> int:
        return sum(self.store.is_complete(j) for j in self.jobs)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def _refresh(self) -> None:
        done = self._count()
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._refresh()
        self.bar.close()


def _check_fit(cfg, store, report_dir: Path) -> None:
    """The train stage's fit check, in the terminal and on the report's index page."""
    from .pipeline import fit_check
    from .report import WARNINGS

    warning = fit_check(cfg, store)
    (report_dir / WARNINGS).unlink(missing_ok=True)
    if warning:
        print(f"    warning: {warning}", flush=True)
        (report_dir / WARNINGS).write_text(warning + "\n", encoding="utf-8")


def run(preset: str | Path, stages: list[str] | None = None, verbose: bool = False) -> int:
    """Validate the preset, then execute its stages. Returns a process exit code.

    The terminal shows one progress line per stage; `verbose` adds Papermill's cell bar and
    the kernels' own log lines.
    """
    import papermill as pm

    from .plan import plan
    from .store import Store

    cfg = load_preset(preset)  # raises ConfigError before anything is written
    check_places(cfg)
    params = {**read_preset(preset), "name": cfg.name}
    stages = stages or list(STAGES)
    report_dir = cfg.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.store_path)
    jobs = plan(cfg).stages
    quiet = {} if verbose else {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
    if not verbose:  # the notebooks read every key through `preset` and config, so papermill's
        logging.getLogger("papermill").setLevel(logging.ERROR)  # "unknown parameter" notes are noise
    status: dict[str, tuple[str, float]] = {}
    code = 0
    for i, stage in enumerate(stages, start=1):
        out_nb = report_dir / NOTEBOOKS[stage]
        t0 = time.perf_counter()
        try:
            with StageProgress(store, jobs[stage], f"[{i}/{len(stages)}] {stage}"):
                pm.execute_notebook(NOTEBOOK_DIR / NOTEBOOKS[stage], out_nb, parameters=params,
                                    kernel_name="python3", progress_bar=verbose, cwd=str(Path.cwd()), **quiet)
            status[stage] = ("done", time.perf_counter() - t0)
        except pm.PapermillExecutionError as err:
            status[stage] = ("failed", time.perf_counter() - t0)
            print(f"stage '{stage}' failed: {err.ename}: {err.evalue}", flush=True)
            code = 1
        if out_nb.is_file():
            render_html(out_nb)
        if stage == "train" and status[stage][0] == "done":
            _check_fit(cfg, store, report_dir)
        print(f"    {status[stage][0]} in {status[stage][1]:.1f} s -> {out_nb.with_suffix('.html')}", flush=True)
        if code:
            break
    index = write_index(cfg, report_dir, status)
    print(f"report: {index}" if code == 0 else f"run failed; partial report: {index}", flush=True)
    return code
