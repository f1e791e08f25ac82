import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT, timeout=600):
    """Run `python -m ptqlib ...` as a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ptqlib", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def run_notebook(notebook: str, out: Path, preset: Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """One stage notebook (e.g. "06_extras.ipynb") run on its own with Papermill on a preset file, as a user would."""
    return subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / notebook), str(out),
                           "-f", str(preset)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def notebook_outputs(path: Path) -> str:
    """Everything an executed notebook's cells displayed (markdown, text, HTML, streams), not its sources."""
    import json
    parts = []
    for cell in json.loads(Path(path).read_text()).get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for kind in ("text/markdown", "text/html", "text/plain"):
                parts.append("".join(data.get(kind, "")))
            parts.append("".join(out.get("text", "")))
    return "\n".join(parts)


@pytest.fixture
def cli():
    return run_cli
