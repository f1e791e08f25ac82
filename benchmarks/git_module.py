"""Import a module as it stood at a git revision, beside today's (for old-vs-new benchmarks).

`module_at("404ac37~1", "ptqlib/attacks/lira.py", "lira_old")` runs `git show` in the repository, rewrites
the file's relative imports to absolute ones of its own package (so it imports today's siblings), and
executes it as module `name`.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_at(revision: str, path: str, name: str):
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    package = ".".join(Path(path).with_suffix("").parts[:-1])
    source = re.sub(r"^from \.(?=\w)", f"from {package}.", source, flags=re.M)
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
