"""The report's index page: the finding first, then the headline figure, the table, the stages.

The analysis notebook writes what the page shows into the report folder (see reports/README.md):
finding.txt, leakage_by_bits.png, headline.csv, privacy_utility.png, roc_panels.png. The page
shows whichever of them exist, so a run that failed half-way still gets an index.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

WARNINGS = "warnings.txt"  # one line per warning a stage raised about the whole study
FIGURES = [("leakage_by_bits.png", "Leakage and accuracy against bit width"),
           ("privacy_utility.png", "Privacy vs. utility, recipe by recipe"),
           ("roc_panels.png", "ROC curves, one panel per method")]
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:90%}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
.warning{font-size:115%;background:#fdecea;border-left:5px solid #b00;padding:.6em 1em}
.finding{font-size:125%;background:#f3f6fa;border-left:5px solid #3a6ea5;padding:.7em 1em}
.failed{color:#b00;font-weight:bold}.done{color:#070}img{max-width:100%}.note{color:#666;font-size:90%}"""


def _stage_rows(status: dict[str, tuple[str, float]], pages: dict[str, str]) -> str:
    return "".join(
        f"<tr><td><a href='{html.escape(pages[s])}'>{html.escape(s)}</a></td>"
        f"<td class='{st}'>{html.escape(st)}</td><td>{secs:.1f} s</td></tr>" for s, (st, secs) in status.items())


def index_page(cfg, report_dir: Path, status: dict[str, tuple[str, float]], pages: dict[str, str]) -> str:
    """The HTML of the index page from the files present in `report_dir`.

    `cfg` is the study's config (its name, dataset, arch, counts, methods and bits are shown);
    `status` maps each stage run to (done | failed, seconds); `pages` each stage to its HTML file.
    """
    report_dir = Path(report_dir)
    finding_file = report_dir / "finding.txt"
    finding = (f"<p class='finding'>{html.escape(finding_file.read_text(encoding='utf-8').strip())}</p>"
               if finding_file.is_file() else
               "<p class='finding'>No finding yet: the analysis stage has not written finding.txt.</p>")
    warning_file = report_dir / WARNINGS
    if warning_file.is_file():  # the train stage's fit check: shown above everything else
        finding = "".join(f"<p class='warning'>⚠ {html.escape(line)}</p>"
                          for line in warning_file.read_text(encoding="utf-8").splitlines() if line) + finding
    figures = [(f, title) for f, title in FIGURES if (report_dir / f).is_file()]
    table = ""
    if (report_dir / "headline.csv").is_file():
        table = ("<h2>The numbers behind it</h2>"
                 + pd.read_csv(report_dir / "headline.csv").to_html(index=False, border=0, classes="headline")
                 + "<p class='note'>Pooled: one ROC over all targets' scores, with a 95% interval from "
                   "resampling targets. Per target: mean ± std over targets. ⚠ marks a TPR that rests on "
                   "fewer than 10 expected false positives.</p>")
    first = "".join(f"<img src='{f}' alt='{html.escape(t)}'>" for f, t in figures[:1])
    rest = "".join(f"<h2>{html.escape(t)}</h2><img src='{f}' alt='{html.escape(t)}'>" for f, t in figures[1:])
    return f"""<!doctype html><html><head><meta charset='utf-8'>
<title>{html.escape(cfg.name)}: PTQ vs membership inference</title><style>{STYLE}</style></head><body>
<h1>Does post-training quantization leak less? — preset <code>{html.escape(cfg.name)}</code></h1>
{finding}
{first}
<p class='note'>Dataset <b>{html.escape(cfg.dataset)}</b>, architecture <b>{html.escape(cfg.arch)}</b>,
{cfg.num_targets} targets, {cfg.num_shadows} shadows, methods {html.escape(', '.join(cfg.methods))},
bits {', '.join(f'{b:g}' for b in cfg.bits)}. Threat model: full-precision shadows vs. quantized target.</p>
{table}{rest}
<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time</th></tr>{_stage_rows(status, pages)}</table>
<p class='note'>Each stage links to its executed notebook; summary.csv and pooled.csv hold every
recipe, attack and threat model.</p>
</body></html>"""


def write_index(cfg, report_dir: Path, status: dict[str, tuple[str, float]], pages: dict[str, str]) -> Path:
    """reports/<preset>/index.html: the finding, the headline figure, the table, the stage links."""
    out = Path(report_dir) / "index.html"
    out.write_text(index_page(cfg, report_dir, status, pages), encoding="utf-8")
    return out
