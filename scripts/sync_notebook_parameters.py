"""Rewrite the `parameters` cell of every stage notebook from StudyConfig's defaults.

Run after adding or changing a config key: `python scripts/sync_notebook_parameters.py`.
tests/test_config.py checks that the cells and the config agree.
"""
from pathlib import Path

import nbformat

from ptqlib.config import FIELD_NAMES, StudyConfig


def parameters_source() -> str:
    d = StudyConfig().as_dict()
    lines = [f"{k} = {d[k]!r}" for k in FIELD_NAMES]
    return "# Parameters (flat literals; a preset YAML or `papermill -p` overrides them)\n" + "\n".join(lines)


def main() -> None:
    for path in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if "parameters" in cell.metadata.get("tags", []):
                cell.source = parameters_source()
        nbformat.write(nb, path)
        print(f"updated {path}")


if __name__ == "__main__":
    main()
