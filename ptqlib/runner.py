"""Run the stage notebooks of a preset in order with Papermill, and render the HTML report.

Each stage's executed notebook is kept as reports/<preset>/<stage>.ipynb and rendered to
HTML with code hidden; reports/<preset>/index.html links them and shows the headline table
and figure. A failing stage still renders its HTML (with the error) and stops the run.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

from .config import STAGES, ConfigError, StudyConfig, load_preset, read_preset

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = {stage: f"{i:02d}_{stage}.ipynb" for i, stage in enumerate(STAGES, start=1)}


def parse_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
    stages = [s.strip() for s in text.split(",") if s.strip()]
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"--stages: unknown stage {s!r}; valid stages are {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]  # always in pipeline order


def render_html(notebook: Path) -> Path:
    """The executed notebook as HTML with code cells hidden (outputs and markdown only)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    out = notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def write_index(cfg: StudyConfig, report_dir: Path, status: dict[str, tuple[str, float]]) -> Path:
    """reports/<preset>/index.html: stage links, the headline figure and table."""
    rows = "".join(
        f"<tr><td><a href='{Path(NOTEBOOKS[s]).with_suffix('.html').name}'>{s}</a></td>"
        f"<td class='{st}'>{st}</td><td>{secs:.1f} s</td></tr>" for s, (st, secs) in status.items())
    headline = report_dir / "headline.csv"
    table_html = ""
    if headline.is_file():
        import pandas as pd

        table_html = pd.read_csv(headline).to_html(index=False, border=0, classes="headline")
    figure = "<img src='privacy_utility.png' alt='privacy vs utility'>" if (report_dir / "privacy_utility.png").is_file() else ""
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}: PTQ vs membership inference</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}}.failed{{color:#b00;font-weight:bold}}
.done{{color:#070}}img{{max-width:100%}}</style></head><body>
<h1>Does post-training quantization leak less? — preset <code>{html.escape(cfg.name)}</code></h1>
<p>Dataset <b>{cfg.dataset}</b>, architecture <b>{cfg.arch}</b>, {cfg.num_targets} targets, {cfg.num_shadows} shadows,
methods {', '.join(cfg.methods)}, bits {', '.join(f'{b:g}' for b in cfg.bits)}. Threat model: full-precision shadows vs. quantized target.</p>
<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time</th></tr>{rows}</table>
<h2>Privacy vs. utility (LiRA online)</h2>{figure}{table_html}
<p>⚠ marks a TPR at low FPR that rests on fewer than 10 expected false positives.</p>
</body></html>"""
    out = report_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


def run(preset: str | Path, stages: list[str] | None = None, progress_bar: bool = True) -> int:
    """Validate the preset, then execute its stages. Returns a process exit code."""
    import papermill as pm

    cfg = load_preset(preset)  # raises ConfigError before anything is written
    params = {**read_preset(preset), "name": cfg.name}
    stages = stages or list(STAGES)
    report_dir = cfg.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, tuple[str, float]] = {}
    code = 0
    from .manage import status_table

    for i, stage in enumerate(stages, start=1):
        row = status_table(cfg).set_index("stage")
        todo = ""
        if stage in row.index:
            r = row.loc[stage]
            left = r["est. left (s)"]
            eta = f", about {left:.0f} s left" if r["pending"] and left == left and left else ""  # NaN-safe
            todo = f" ({r['done']}/{r['jobs']} jobs done{eta})"
        print(f"[{i}/{len(stages)}] {stage}{todo} ...", flush=True)
        out_nb = report_dir / NOTEBOOKS[stage]
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(NOTEBOOK_DIR / NOTEBOOKS[stage], out_nb, parameters=params,
                                kernel_name="python3", progress_bar=progress_bar, cwd=str(Path.cwd()))
            status[stage] = ("done", time.perf_counter() - t0)
        except pm.PapermillExecutionError as err:
            status[stage] = ("failed", time.perf_counter() - t0)
            print(f"stage '{stage}' failed: {err.ename}: {err.evalue}", flush=True)
            code = 1
        if out_nb.is_file():
            render_html(out_nb)
        print(f"    {status[stage][0]} in {status[stage][1]:.1f} s -> {out_nb.with_suffix('.html')}", flush=True)
        if code:
            break
    index = write_index(cfg, report_dir, status)
    print(f"report: {index}" if code == 0 else f"run failed; partial report: {index}", flush=True)
    return code
