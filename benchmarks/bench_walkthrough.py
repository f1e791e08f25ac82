"""The class walkthrough (notebooks/00_walkthrough.ipynb) executed headless on a built store:
the whole run (kernel start included) and each code cell, as a class would run it in JupyterLab.

    .venv/bin/python benchmarks/bench_walkthrough.py [STORE] [RUNS]   # STORE: default 'artifacts'
"""
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def seconds(cell) -> float:
    t = cell.metadata["execution"]
    start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def main():
    store = sys.argv[1] if len(sys.argv) > 1 else ""
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for run in range(runs):
        nb = nbformat.read(ROOT / "notebooks" / "00_walkthrough.ipynb", as_version=4)
        (params,) = [c for c in nb.cells if c.cell_type == "code" and "store = " in c.source]
        params.source = params.source.replace('store = ""', f"store = {store!r}")
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        total = time.perf_counter() - t0
        cells = [c for c in nb.cells if c.cell_type == "code"]
        per_cell = ", ".join(f"{seconds(c):.1f}" for c in cells)
        print(f"run {run + 1}: {total:.1f} s in all; code cells: {per_cell} s")


if __name__ == "__main__":
    main()
