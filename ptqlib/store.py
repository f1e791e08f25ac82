"""Content-addressed job store: one self-describing directory per job.

A job (train one model, quantize one model with one recipe, query one model, attack) is named
by a hash of the parameters that affect its result and of the keys of the jobs it reads. Its
directory holds the result files, `params.json`, `meta.json` (provenance: package versions,
git commit, wall time, the job's own figures) and a completion marker `COMPLETE` listing a
checksum of every file. The directory is built under a temporary name and renamed into place
only once complete, so a directory at its final path is always whole; a rerun skips it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

MARKER = "COMPLETE"
# Bump when a job kind's code changes its results, so old artifacts are not reused.
CODE_VERSIONS = {"dataset": 1, "train": 2, "quantize": 5, "query": 2, "attack": 3,
                 "control": 1, "prune": 1, "train_dp": 1, "attack_group": 2}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def job_key(kind: str, params: dict, inputs: tuple = ()) -> str:
    """A job's name in the store: a hash of its kind's code version, its params and its inputs' keys."""
    blob = _canonical({"kind": kind, "version": CODE_VERSIONS.get(kind, 1), "params": params,
                       "inputs": list(inputs)})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Job:
    """A plain unit of work (e.g. a dataset cache entry); the study's jobs live in `ptqlib.jobs`.

    Any object with `kind`, `params`, `inputs` (keys of the jobs it reads) and `key` can be stored.
    """
    kind: str
    params: dict = field(hash=False)
    inputs: tuple = ()

    @property
    def key(self) -> str:
        return job_key(self.kind, self.params, self.inputs)


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


class CorruptArtifact(RuntimeError):
    """A stored file does not match the checksum recorded when its job finished."""


class Store:
    """Jobs as directories under `root/<kind>/<key>/`; see the module docstring."""

    def __init__(self, root: str | Path, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self._verified: set[tuple[str, int]] = set()
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def path(self, job: Job) -> Path:
        return self.root / job.kind / job.key

    def is_complete(self, job: Job) -> bool:
        """The job finished (its marker exists); see `is_valid` for a checked answer."""
        return (self.path(job) / MARKER).is_file()

    def verify(self, job: Job) -> None:
        """Raise CorruptArtifact unless every file matches the checksum in the marker (cached)."""
        self._verify_dir(self.path(job))

    def _verify_dir(self, path: Path) -> None:
        marker = path / MARKER
        stamp = (str(path), marker.stat().st_mtime_ns)
        if stamp in self._verified:
            return
        try:
            checksums = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise CorruptArtifact(f"{marker}: unreadable completion marker") from None
        for name, digest in checksums.items():
            f = path / name
            if not f.is_file() or file_sha256(f) != digest:
                raise CorruptArtifact(f"{f}: missing or checksum mismatch")
        self._verified.add(stamp)

    def is_valid(self, job: Job) -> bool:
        """Complete and intact. A corrupt job is reported, removed, and counts as not done."""
        if not self.is_complete(job):
            return False
        try:
            self.verify(job)
            return True
        except CorruptArtifact as err:
            self._log(f"corrupt artifact: {err}; removing {self.path(job)} so it is recomputed")
            shutil.rmtree(self.path(job), ignore_errors=True)
            return False

    def require(self, job: Job, what: str = "", stage: str = "") -> Path:
        """The directory of a finished, intact job, or a clear error naming the stage to run."""
        if not self.is_valid(job):
            hint = f"; run the '{stage}' stage first" if stage else ""
            raise FileNotFoundError(f"{what or job.kind} not found in store at {self.path(job)}{hint}")
        return self.path(job)

    def meta(self, job: Job) -> dict:
        return json.loads((self.require(job) / "meta.json").read_text())

    def input_dir(self, kind: str, key: str) -> Path:
        """The intact directory of an input job known only by kind and key (a job's `inputs`)."""
        path = self.root / kind / key
        if not (path / MARKER).is_file():
            raise FileNotFoundError(f"input {kind} job not found in store at {path}; run the stage that makes it")
        try:
            self._verify_dir(path)
        except CorruptArtifact as err:
            shutil.rmtree(path, ignore_errors=True)
            raise FileNotFoundError(f"corrupt artifact: {err}; removed it, rerun to recompute") from None
        return path

    @contextmanager
    def lock(self, job: Job):
        """An exclusive per-job lock, so two runs (or workers) never write one job twice."""
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{job.kind}-{job.key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def run(self, job: Job, compute: Callable[[Path], dict | None]) -> Path:
        """Run `compute(tmp_dir)` unless the job is already complete and intact; return its directory.

        `compute` writes its result files into `tmp_dir` and returns a dict of figures to
        record in meta.json. The directory is renamed into place only when complete; on
        failure the temporary directory is removed and nothing at the final path changes.
        """
        final = self.path(job)
        if self.is_valid(job):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with self.lock(job):
            if self.is_valid(job):  # another run finished it while we waited
                return final
            for stale in final.parent.glob(f".tmp-{job.key}-*"):  # left by a killed run
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(final, ignore_errors=True)
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
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return final

    def failure_record(self, job: Job) -> Path:
        """Where a failed job's traceback is kept until the job succeeds (read by `status`)."""
        return self.root / ".failed" / f"{job.kind}-{job.key}.txt"

    def size(self, job: Job) -> int:
        path = self.path(job)
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0
