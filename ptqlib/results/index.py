"""The report's index page: the finding first, then the headline figure, the tables, the stages.

The analysis notebook writes what the page shows into the report folder (see reports/README.md):
finding.txt, leakage_by_bits.png, headline.csv, privacy_utility.png, roc_panels.png. The page
shows whichever of them exist, so a run that failed half-way still gets an index.

The main table is a grid, one row per method and a column pair (leak, accuracy) per bit width,
at the lowest FPR the pooled non-members resolve; recipes with an 8-bit last layer get a grid of
their own; ⚠ marks only a leak not resolved from FP32's (one footnote says what that means).
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ptqlib.attacks.lira import ATTACK_LABELS
from ptqlib.results.finding import headline_fpr
from ptqlib.results.metrics import LOW_FPRS
from ptqlib.results.tables import DISPLAY_NAMES, METHOD_ORDER, THREAT_LABELS

WARNINGS = "warnings.txt"  # one line per warning a stage raised about the whole study
FIGURES = [("leakage_by_bits.png", "Leakage and accuracy against bit width"),
           ("privacy_utility.png", "Privacy vs. utility, recipe by recipe"),
           ("roc_panels.png", "ROC curves, one panel per method")]
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:92%;margin:.5em 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}tr.fp32 td{background:#f4f4f4}
.warning{font-size:115%;background:#fdecea;border-left:5px solid #b00;padding:.6em 1em}
.finding{font-size:118%;background:#f3f6fa;border-left:5px solid #3a6ea5;padding:.7em 1em}
.failed{color:#b00;font-weight:bold}.done{color:#070}img{max-width:100%}.note{color:#555;font-size:90%}
details{margin:1em 0}summary{cursor:pointer;font-weight:bold}"""
FLAG = "⚠"


def _stage_rows(status: dict[str, tuple[str, float]], pages: dict[str, str]) -> str:
    return "".join(
        f"<tr><td><a href='{html.escape(pages[s])}'>{html.escape(s)}</a></td>"
        f"<td class='{st}'>{html.escape(st)}</td><td>{secs:.0f} s</td></tr>" for s, (st, secs) in status.items())


def headline_fpr_of(head: pd.DataFrame) -> float:
    """`finding.headline_fpr` of a headline.csv table (its 'non-members' column)."""
    return headline_fpr(head.rename(columns={"non-members": "n_nonmembers"}))[0]


def _unresolved(row: pd.Series, fpr: float) -> bool:
    """A leak figure the page must flag: not resolved from FP32's, or too few non-members for the FPR."""
    status = row.get(f"vs FP32 @{100 * fpr:g}%", "")
    return not bool(row.get(f"TPR@{100 * fpr:g}%FPR resolves", True)) or status != "resolved"


def _interval(row: pd.Series, name: str) -> str:
    low = row.get(f"{name} low")
    return "" if low is None or pd.isna(low) else f" [{low:.2f}, {row[f'{name} high']:.2f}]"


def grid(head: pd.DataFrame, fpr: float, last_layer: float | None = None) -> str:
    """One HTML table: FP32 on top, a row per method, a (leak %, accuracy %) column pair per bit width.

    `last_layer` None shows the plain recipes, 8 those with an 8-bit last layer. '' when none exist.
    """
    name = f"TPR@{100 * fpr:g}%FPR"
    plain = head["last layer bits"].isna()
    rows = head[(head["method"] != "fp32") & (plain if last_layer is None else head["last layer bits"] == last_layer)]
    fp = head[head["method"] == "fp32"]
    if rows.empty or fp.empty:
        return ""
    fp = fp.iloc[0]
    bits = sorted(rows["bits"].unique(), reverse=True)
    methods = [m for m in METHOD_ORDER if m in set(rows["method"])] + sorted(set(rows["method"]) - set(METHOD_ORDER))
    out = ["<table><tr><th rowspan='2'>method</th>"
           + "".join(f"<th colspan='2' style='text-align:center'>{b:g}-bit</th>" for b in bits) + "</tr><tr>"
           + "<th>leak %</th><th>accuracy %</th>" * len(bits) + "</tr>",
           f"<tr class='fp32'><td>FP32</td><td colspan='{2 * len(bits)}' style='text-align:left'>leak "
           f"{fp[f'{name} %']:.2f}%{_interval(fp, name)}, accuracy {fp['test acc %']:.2f}% ± {fp['test acc std']:.2f}"
           f" over {int(fp['models'])} models: the reference for every cell below</td></tr>"]
    for method in methods:
        cells = []
        for b in bits:
            r = rows[(rows["method"] == method) & (rows["bits"] == b)]
            if r.empty:
                cells.append("<td>–</td><td>–</td>")
                continue
            r = r.iloc[0]
            flag = f" {FLAG}" if _unresolved(r, fpr) else ""
            cells.append(f"<td>{r[f'{name} %']:.2f}{flag}</td><td>{r['test acc %']:.1f}</td>")
        out.append(f"<tr><td>{html.escape(DISPLAY_NAMES.get(method, method))}</td>{''.join(cells)}</tr>")
    return "".join(out) + "</table>"


def _footnote(head: pd.DataFrame, fpr: float) -> str:
    attack = ATTACK_LABELS.get(head["attack"].iloc[0], head["attack"].iloc[0]) if "attack" in head else "LiRA online"
    threat = THREAT_LABELS.get(head["threat model"].iloc[0], "") if "threat model" in head else ""
    has_status = f"vs FP32 @{100 * fpr:g}%" in head
    flag = (f"{FLAG} = not resolved from FP32: the two 95% intervals overlap, so the difference is indicative."
            if has_status else f"{FLAG} on every leak: no intervals were computed (bootstrap 0), nothing is resolved.")
    models = "" if head["models"].nunique() == 1 else (
        f" Recipes pooled over fewer models than FP32: {', '.join(head.loc[head['models'] != head['models'].max(), 'recipe'])}"
        f" ({int(head['models'].min())} models).")
    return (f"<p class='note'><b>Leak</b> = the share of training members that {html.escape(attack)} finds when it "
            f"may wrongly accuse {100 * fpr:g}% of non-members (a random guess finds {100 * fpr:g}%), pooled over "
            f"models ({html.escape(threat)}). <b>Accuracy</b> = test accuracy, mean over models. {flag}"
            f"{html.escape(models)}</p>")


def _every_number(head: pd.DataFrame) -> str:
    """headline.csv in full, formatted, folded away: the intervals and both FPRs of every recipe."""
    table = pd.DataFrame({"recipe": head["recipe"], "models": head["models"],
                          "accuracy %": [f"{a:.2f} ± {s:.2f}" for a, s in zip(head["test acc %"], head["test acc std"])]})
    for x in sorted(LOW_FPRS, reverse=True):
        name = f"TPR@{100 * x:g}%FPR"
        table[f"{name} %"] = [f"{r[f'{name} %']:.2f}{_interval(r, name)}" for _, r in head.iterrows()]
        if f"vs FP32 @{100 * x:g}%" in head:
            table[f"vs FP32 @{100 * x:g}%"] = head[f"vs FP32 @{100 * x:g}%"].replace("", "–")
    table["AUC %"] = [f"{v:.1f}" for v in head["AUC %"]]
    return ("<details><summary>Every recipe with its 95% intervals, at both FPRs (headline.csv)</summary>"
            + table.to_html(index=False, border=0) + "</details>")


def tables_html(head: pd.DataFrame) -> str:
    fpr = headline_fpr_of(head)
    plain, decoupled = grid(head, fpr), grid(head, fpr, last_layer=8)
    out = f"<h2>The numbers behind it: leak at {100 * fpr:g}% FPR and accuracy</h2>{plain}"
    if decoupled:
        out += f"<h3>With an 8-bit last layer</h3>{decoupled}"
    return out + _footnote(head, fpr) + _every_number(head)


def index_page(cfg, report_dir: Path, status: dict[str, tuple[str, float]], pages: dict[str, str]) -> str:
    """The HTML of the index page from the files present in `report_dir`.

    `cfg` is the study's config (its name, dataset, arch, methods and bits are shown);
    `status` maps each stage run to (done | failed, seconds); `pages` each stage to its HTML file.
    """
    report_dir = Path(report_dir)
    finding_file = report_dir / "finding.txt"
    finding = (f"<p class='finding'>{html.escape(finding_file.read_text(encoding='utf-8').strip())}</p>"
               if finding_file.is_file() else
               "<p class='finding'>No finding yet: the analysis stage has not written finding.txt.</p>")
    warning_file = report_dir / WARNINGS
    if warning_file.is_file():  # the train stage's fit check: shown above everything else
        finding = "".join(f"<p class='warning'>{FLAG} {html.escape(line)}</p>"
                          for line in warning_file.read_text(encoding="utf-8").splitlines() if line) + finding
    figures = [(f, title) for f, title in FIGURES if (report_dir / f).is_file()]
    head = pd.read_csv(report_dir / "headline.csv") if (report_dir / "headline.csv").is_file() else None
    table = tables_html(head) if head is not None and len(head) else ""
    models = (f"{int(head['models'].max())} models pooled" if head is not None and len(head)
              else f"{cfg.num_targets} targets, {cfg.num_shadows} shadows")
    first = "".join(f"<img src='{f}' alt='{html.escape(t)}'>" for f, t in figures[:1])
    rest = "".join(f"<h2>{html.escape(t)}</h2><img src='{f}' alt='{html.escape(t)}'>" for f, t in figures[1:])
    threats = "; ".join(THREAT_LABELS.get(t, t) for t in cfg.threat_models)
    return f"""<!doctype html><html><head><meta charset='utf-8'>
<title>{html.escape(cfg.name)}: PTQ vs membership inference</title><style>{STYLE}</style></head><body>
<h1>Does post-training quantization leak less? — preset <code>{html.escape(cfg.name)}</code></h1>
{finding}
{first}
<p class='note'>Dataset <b>{html.escape(cfg.dataset)}</b>, architecture <b>{html.escape(cfg.arch)}</b>,
{models}; methods {html.escape(', '.join(DISPLAY_NAMES.get(m, m) for m in cfg.methods))},
bits {', '.join(f'{b:g}' for b in cfg.bits)}; threat models: {html.escape(threats)}.</p>
{table}{rest}
<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time</th></tr>{_stage_rows(status, pages)}</table>
<p class='note'>Each stage links to its executed notebook; summary.csv and pooled.csv hold every
recipe, attack and threat model.</p>
</body></html>"""


def write_index(cfg, report_dir: Path, status: dict[str, tuple[str, float]], pages: dict[str, str]) -> Path:
    """reports/<preset>/index.html: the finding, the headline figure, the tables, the stage links."""
    out = Path(report_dir) / "index.html"
    out.write_text(index_page(cfg, report_dir, status, pages), encoding="utf-8")
    return out
