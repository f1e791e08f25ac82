"""The class walkthrough runs headless top to bottom and teaches, on its own data, what its text says.

It runs on params/walkthrough.yaml, built by the notebook itself into an empty store (its
"build if absent" path, with its progress lines). That preset's target 0 and 32 shadows are
the default study's own jobs (same keys), so sections 1-4 compute exactly the numbers a class
sees on the default study; only the headline (section 5) is smaller: 2 targets, RTN only.
Building it takes ~1.5 min on 2 cores, the full default study ~5.5 min. PTQLIB_WALKTHROUGH_STORE
names a store to reuse instead (one that holds the default study needs only the headline's jobs).
"""
import json
import os
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "00_walkthrough.ipynb"

# Appended to the executed copy only: the numbers behind each lesson, read from the notebook's own
# variables after its cells ran (the same objects the class sees).
LESSONS_CELL = """
import json as _json
_table = teach.low_fpr_table(by_attack, scores["target_keep"])
_lr, _members = by_attack["LiRA online"], scores["target_keep"]
print("LESSONS " + _json.dumps({
    "table": _table.to_dict(orient="index"),
    "log_lr": {k: float(_lr[i]) for k, i in examples.items()},
    "log_lr_7": float(_lr[7]), "member_7": bool(_members[7]), "phi_7": float(scores["target_phi"][7]),
    "log_lr_6": float(_lr[6]), "member_6": bool(_members[6]),
    "member_log_lr_10_90": [float(q) for q in np.quantile(_lr[_members], [0.1, 0.9])],
    "n_nonmembers": int((~_members).sum()),
    "rtn_error": {str(b): teach.rtn_error(weights[name], b) for b in (8, 4, 3)},
}))
"""


def answers(nb) -> list[str]:
    exercises = [k for k, c in enumerate(nb.cells) if c.source.startswith("**Exercise.**")]
    return [nb.cells[k + 1].source for k in exercises]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The walkthrough executed from the notebooks/ folder (as JupyterLab runs it) on the walkthrough
    preset; returns the executed notebook, the seconds it took and its lessons' numbers."""
    from nbclient import NotebookClient

    store = os.environ.get("PTQLIB_WALKTHROUGH_STORE") or str(tmp_path_factory.mktemp("walkthrough_store"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (params,) = [c for c in nb.cells if c.cell_type == "code" and "store = " in c.source]
    assert 'preset = "default"' in params.source  # what a class runs
    params.source = params.source.replace('preset = "default"', 'preset = "walkthrough"')
    params.source = params.source.replace('store = ""', f"store = {store!r}")
    nb.cells.append(nbformat.v4.new_code_cell("import numpy as np\n" + LESSONS_CELL))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    seconds = time.perf_counter() - t0
    lessons_out = nb.cells.pop().outputs
    (line,) = [ln for o in lessons_out for ln in o.get("text", "").splitlines() if ln.startswith("LESSONS ")]
    return nb, seconds, json.loads(line.removeprefix("LESSONS "))


def test_walkthrough_runs_builds_with_progress_and_draws_every_figure(executed):
    nb, seconds, _ = executed
    print(f"walkthrough: {seconds:.0f} s, building its study included")  # measured, not asserted
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 5  # members, RTN grids, IN/OUT, ROCs, headline
    from ptqlib.runtime.notebooks import collapse_carriage_returns

    build = collapse_carriage_returns("".join(o.get("text", "") for o in nb.cells[2].outputs))
    print(build)  # the stage lines with their times (pytest -s)
    if not os.environ.get("PTQLIB_WALKTHROUGH_STORE"):  # an empty store: built here, one line per stage
        assert "building the walkthrough study" in build
        assert all(f"{stage}: 100%" in build for stage in ("train targets", "train shadows", "query models"))
    text = "".join(o.get("text", "") for o in outputs)
    assert "of the full-precision (FP32) model's training members" in text and "a random guess" in text  # the finding


def test_lira_beats_the_threshold_where_the_text_says(executed):
    """Section 4: similar balanced accuracy, a higher AUC, and ~5x the members found at 1% FPR."""
    t = executed[2]["table"]
    lira, threshold = t["LiRA online"], t["threshold on phi"]
    assert lira["TPR@1%FPR %"] > 3 * threshold["TPR@1%FPR %"]
    assert lira["TPR@1%FPR %"] == pytest.approx(6.4, abs=1.5) and threshold["TPR@1%FPR %"] == pytest.approx(1.2, abs=1)
    assert 0 < lira["balanced accuracy %"] - threshold["balanced accuracy %"] < 5
    assert 5 < lira["AUC %"] - threshold["AUC %"] < 15


def test_memorised_member_scores_high_and_easy_member_near_zero(executed):
    """Section 3: both are members; the outlier's log LR is large and positive, the easy one's ~0."""
    log_lr = executed[2]["log_lr"]
    assert log_lr["memorised outlier"] > 10
    assert abs(log_lr["easy"]) < 0.5


def test_exercise_answers_match_what_the_code_computes(executed):
    nb, _, lessons = executed
    rtn, lr_7 = lessons["rtn_error"], lessons["log_lr_7"]
    text = answers(nb)
    # exercise 1: "about 0.5%" at 8 bits, "about 16%" at 3, "about 8%" at 4
    assert "0.5%" in text[0] and "16%" in text[0] and "8%" in text[0]
    assert 100 * rtn["8"] == pytest.approx(0.5, abs=0.15)
    assert 100 * rtn["3"] == pytest.approx(16, abs=2) and 100 * rtn["4"] == pytest.approx(8, abs=1)
    # exercise 2: #7 is a member with a weak positive log LR near +0.9; #6 a non-member far below 0
    assert "#7 is a member" in text[1] and "+0.9" in text[1]
    assert lessons["member_7"] and lr_7 == pytest.approx(0.9, abs=0.3) and lessons["phi_7"] == pytest.approx(8.2, abs=0.3)
    assert not lessons["member_6"] and lessons["log_lr_6"] < -30
    low, high = lessons["member_log_lr_10_90"]
    assert low == pytest.approx(-0.6, abs=0.3) and high == pytest.approx(1.6, abs=0.4)
    # exercise 3: the number of non-members
    assert f"{lessons['n_nonmembers']} non-members" in text[2]


def test_answers_are_collapsed_in_jupyterlab_and_in_html(executed):
    """Each answer is a closed <details> block (no folded source: JupyterLab shows its first line),
    and nbconvert's HTML keeps every answer's text inside a closed <details> element."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = answers(nb)
    assert len(text) >= 4
    for source in text:
        assert source.startswith("<details><summary><b>Answer</b></summary>\n\n") and source.endswith("\n\n</details>")
        assert source.count("<details") == 1
    assert not [c for c in nb.cells if c.metadata.get("jupyter", {}).get("source_hidden")]
    html, _ = HTMLExporter().from_notebook_node(executed[0])
    blocks = re.findall(r"<details(.*?)>(.*?)</details>", html, flags=re.S)
    assert len(blocks) == len(text)
    assert not [attrs for attrs, _ in blocks if "open" in attrs]
    outside = re.sub(r"<details.*?</details>", "", html, flags=re.S)
    for source in text:
        first_words = " ".join(source.split("\n\n")[1].split()[:5]).replace("\\#", "#")
        assert first_words not in outside and any(first_words in body for _, body in blocks)


def test_rtn_figure_draws_many_levels_as_ticks_and_quotes_the_computed_error():
    """At 8 bits 256 full-height lines would hide the weights; at <= 16 levels a line per level."""
    import matplotlib

    matplotlib.use("Agg")
    from ptqlib.results import teach

    weight = torch.randn(4, 300, generator=torch.Generator().manual_seed(0))
    fig = teach.rtn_figure(weight, (8, 4, 2))
    ax8, ax4, ax2 = fig.axes
    vertical = [len([ln for ln in ax.get_lines() if np.ptp(ln.get_xdata()) == 0 and len(ln.get_xdata()) == 2])
                for ax in (ax8, ax4, ax2)]
    assert vertical == [0, 16, 4]
    for ax, bits in ((ax8, 8), (ax4, 4), (ax2, 2)):
        assert f"error {100 * teach.rtn_error(weight, bits):.1f}%" in ax.get_title()
    assert 0.002 < teach.rtn_error(weight, 8) < 0.01 < teach.rtn_error(weight, 4)
    # 8 bits: each grey bar holds whole grid cells, so the blue outline (the rounded weights) traces it
    from matplotlib.patches import Polygon, Rectangle

    bars = [r.get_height() for r in ax8.patches if isinstance(r, Rectangle)]
    (outline,) = [p for p in ax8.patches if isinstance(p, Polygon)]
    steps = outline.get_xy()[1:-1:2, 1]  # one vertex pair per bar: (left edge, count), (right edge, count)
    assert len(bars) > 30 and np.array_equal(steps[:len(bars)], bars)
    matplotlib.pyplot.close(fig)


def test_build_if_absent_runs_the_pipeline_only_when_jobs_are_missing(tmp_path, monkeypatch, capsys):
    from ptqlib.runtime.store import Store
    from ptqlib.study import config, presets, walkthrough
    from ptqlib.study.plan import plan_study

    cfg = config.validate({**presets.read_preset(ROOT / "params" / "walkthrough.yaml"), "store": str(tmp_path)})
    stages = plan_study(cfg).stages
    calls = []
    monkeypatch.setattr(walkthrough.stages, "run_all", lambda c, s: calls.append(c))
    trained = {j.key for j in stages["train"] + stages["shadows"]}  # as if the first two stages had run
    monkeypatch.setattr(Store, "is_complete", lambda self, job: job.key in trained)
    total = sum(len(stages[s]) for s in ("train", "shadows", "quantize", "attack"))
    assert walkthrough.build_if_absent(cfg, Store(tmp_path)) == total - len(trained) and calls == [cfg]
    assert f"{total - len(trained)} of {total} jobs to run" in capsys.readouterr().out
    monkeypatch.setattr(Store, "is_complete", lambda self, job: True)
    assert walkthrough.build_if_absent(cfg, Store(tmp_path)) == 0 and calls == [cfg]  # built: nothing runs
    assert f"all {total} jobs are in" in capsys.readouterr().out
