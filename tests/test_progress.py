"""The progress line counts jobs: every finished job once, resumed jobs at once, under each executor."""
import pytest

from ptqlib.study import stages as pipeline
from ptqlib.study.config import validate
from ptqlib.study.plan import plan_study
from ptqlib.runtime.progress import StageProgress
from ptqlib.runtime.store import Store

SMALL = dict(num_targets=1, num_shadows=4, epochs=1, methods=["rtn"], bits=[4], last_layer_bits=[None],
             threads=1, worker_threads=1, workers=2)


class Bar:
    """Records what a tqdm bar is told."""

    def __init__(self, desc="", total=None, initial=0, **_):
        self.desc, self.total, self.n, self.updates = desc, total, initial, []

    def update(self, k=1):
        self.n += k
        self.updates.append(k)

    def close(self):
        pass


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_stage_line_counts_finished_and_resumed_jobs(tmp_path, monkeypatch, executor):
    bars = []
    monkeypatch.setattr(pipeline, "progress", lambda **kw: bars.append(Bar(**kw)) or bars[-1])
    cfg = validate({**SMALL, "store": str(tmp_path / "s"), "executor": executor})
    store = Store(cfg.store_path)
    shadows = list(plan_study(cfg).shadows)
    shadows[0].run(store)  # finished before the stage starts: a resumed run
    pipeline.run_stage_jobs(cfg, store, shadows, "train shadows")
    bar = bars[-1]
    assert (bar.total, bar.n) == (4, 4)
    assert bar.updates == [1, 1, 1]  # the three pending jobs, one update each; the finished one counted at start
    pipeline.run_stage_jobs(cfg, store, shadows, "train shadows")  # all done: the line starts full
    assert (bars[-1].n, bars[-1].updates) == (4, [])


def test_terminal_line_reads_the_store(tmp_path):
    cfg = validate({**SMALL, "store": str(tmp_path / "s"), "executor": "serial"})
    store = Store(cfg.store_path)
    shadows = list(plan_study(cfg).shadows)
    shadows[1].run(store)
    with StageProgress(store, shadows, "[2/5] shadows", interval=0.05) as line:
        assert (line.bar.total, line.bar.n) == (4, 1)
        for job in shadows:
            job.run(store)
    assert line.bar.n == 4


def test_report_html_shows_a_progress_bar_once(tmp_path):
    """Papermill stores every redraw of a progress bar as its own stream output; the HTML shows the last."""
    import nbformat

    from ptqlib.runtime.notebooks import collapse_carriage_returns, render_html
    assert collapse_carriage_returns("a: 0%\ra: 50%\ra: 100%\nnext\n") == "a: 100%\nnext\n"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=f"\rjobs: {k}/3 redraw") for k in range(4)]
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text="table\n"))
    nb.cells.append(cell)
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    html = render_html(path).read_text()
    assert html.count("redraw") == 1 and "jobs: 3/3 redraw" in html and "table" in html


def test_report_html_leaves_progress_bars_out_and_keeps_other_stderr(tmp_path):
    import nbformat

    from ptqlib.runtime.notebooks import render_html
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    bar = "query models: {}%|{}| {}/309 [13:51<00:00,  2.69s/it]"
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\r" + bar.format(k, "█" * k, k)) for k in (0, 50, 100)]
    cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="\nUserWarning: a real warning\n"))
    nb.cells.append(cell)
    only_bar = nbformat.v4.new_code_cell("y")
    only_bar.outputs = [nbformat.v4.new_output("stream", name="stderr", text=bar.format(100, "█", 309) + "\n")]
    nb.cells.append(only_bar)
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    html = render_html(path).read_text()
    assert "query models" not in html and "a real warning" in html
    assert html.count("stderr") <= 2  # the bar-only cell renders no (pink) stderr box at all
