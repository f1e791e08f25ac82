"""The class walkthrough runs headless top to bottom on the smoke study and draws its figures."""
import os
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "00_walkthrough.ipynb"


def smoke_store(tmp_path_factory) -> Path:
    """The smoke study built once per test session (run_all is idempotent: later calls only check)."""
    from ptqlib.study import config, presets
    from ptqlib.study import stages as pipeline

    store = tmp_path_factory.getbasetemp() / "smoke_store"
    pipeline.run_all(config.validate({**presets.read_preset(ROOT / "params" / "smoke.yaml"), "store": str(store)}))
    return store


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The walkthrough executed from the notebooks/ folder (as JupyterLab runs it), on the smoke store."""
    from nbclient import NotebookClient

    store = os.environ.get("PTQLIB_SMOKE_STORE") or str(smoke_store(tmp_path_factory))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (params,) = [c for c in nb.cells if c.cell_type == "code" and "store = " in c.source]
    params.source = params.source.replace('store = ""', f"store = {store!r}")
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb, time.perf_counter() - t0


def test_walkthrough_runs_and_draws_every_figure(executed):
    nb, seconds = executed
    print(f"walkthrough: {seconds:.0f} s on a built smoke store")  # measured, not asserted (README)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 5  # members, RTN grids, IN/OUT, ROCs, headline
    text = "".join(o.get("text", "") for o in outputs)
    assert "TPR@" in text and "FP32" in text  # the generated finding


def test_every_exercise_has_a_hidden_answer():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    exercises = [k for k, c in enumerate(nb.cells) if c.source.startswith("**Exercise.**")]
    assert len(exercises) >= 3
    for k in exercises:
        answer = nb.cells[k + 1]
        assert answer.source.startswith("**Answer.**")
        assert answer.metadata["jupyter"]["source_hidden"] is True
