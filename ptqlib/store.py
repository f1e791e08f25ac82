"""Content-addressed job store: one self-describing directory per job.

A job (train one model, quantize one model with one recipe, query one model, attack) is named
by a hash of the parameters that affect its result and of the keys of the jobs it reads. Its
directory holds the result files, `params.json`, `meta.json` (provenance: package versions,
git commit, wall time, the job's own figures) and a completion marker `COMPLETE` listing a
checksum of every file. The directory is built under a temporary name and renamed into place
only once complete, so a directory at its final path is always whole; a rerun skips it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

MARKER = "COMPLETE"
# Bump when a job kind's code changes its results, so old artifacts are not reused.
CODE_VERSIONS = {"dataset": 1, "train": 1, "quantize": 1, "query": 2, "attack": 2}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Job:
    """A unit of work; its key is a hash of what determines its result."""
    kind: str
    params: dict = field(hash=False)
    inputs: tuple = ()  # keys of the jobs whose results this job reads

    @property
    def key(self) -> str:
        blob = _canonical({"kind": self.kind, "version": CODE_VERSIONS.get(self.kind, 1),
                           "params": self.params, "inputs": list(self.inputs)})
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=1)
def provenance() -> dict:
    """Versions and code revision recorded with every job."""
    import numpy
    import torch

    from . import __version__
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, cwd=Path(__file__).parent,
                                    timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"ptqlib": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "host": platform.node(),
            "git_commit": commit, "git_dirty": dirty}


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, job: Job) -> Path:
        return self.root / job.kind / job.key

    def is_complete(self, job: Job) -> bool:
        return (self.path(job) / MARKER).is_file()

    def require(self, job: Job, what: str = "", stage: str = "") -> Path:
        """The directory of a finished job, or a clear error saying which stage produces it."""
        if not self.is_complete(job):
            hint = f"; run the '{stage}' stage first" if stage else ""
            raise FileNotFoundError(f"{what or job.kind} not found in store at {self.path(job)}{hint}")
        return self.path(job)

    def meta(self, job: Job) -> dict:
        return json.loads((self.require(job) / "meta.json").read_text())

    def run(self, job: Job, compute: Callable[[Path], dict | None]) -> Path:
        """Run `compute(tmp_dir)` unless the job is already complete; return its directory.

        `compute` writes its result files into `tmp_dir` and returns a dict of figures to
        record in meta.json. On failure the temporary directory is removed and nothing at
        the final path changes.
        """
        final = self.path(job)
        if (final / MARKER).is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{job.key}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            t0 = time.perf_counter()
            figures = compute(tmp) or {}
            wall = time.perf_counter() - t0
            (tmp / "params.json").write_text(json.dumps(
                {"kind": job.kind, "key": job.key, "params": job.params, "inputs": list(job.inputs)},
                indent=1, sort_keys=True, default=str))
            meta = {"wall_s": round(wall, 4), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **provenance(), **figures}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            checksums = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / MARKER).write_text(json.dumps(checksums, indent=1, sort_keys=True))
            if final.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / MARKER).is_file():  # lost a race to nobody: a real error
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another run finished it first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
