"""Executors: run the same job function serially, on a local process pool, or on Ray.

Every back-end calls `pipeline.run_job(cfg, job)` for each job not yet complete in the store.
Results travel only through the content-addressed store, so any back-end can resume what
another started. A job that raises is reported with its key and traceback after the other
jobs have finished; it leaves no completion marker, so a rerun runs only the failed jobs.
"""
from __future__ import annotations

import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterable

from .config import StudyConfig
from .store import Job, Store


class JobError(RuntimeError):
    """One or more jobs failed; the message names each job's kind and key, with its traceback."""


def failure_record(store: Store, job: Job):
    """Where a failed job's traceback is kept until the job succeeds (read by `status`)."""
    return store.root / ".failed" / f"{job.kind}-{job.key}.txt"


def _run_guarded(cfg: StudyConfig, job: Job) -> tuple[str, str | None]:
    from . import pipeline

    record = failure_record(Store(cfg.store), job)
    try:
        pipeline.run_job(cfg, job)
        record.unlink(missing_ok=True)
        return job.key, None
    except Exception:  # reported to the caller with the job's identity
        tb = traceback.format_exc()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(tb)
        return job.key, tb


def _init_worker(threads: int, counter=None, gpus: int = 0) -> None:
    """Per-worker set-up: torch threads, and on GPU machines one card per worker in turn."""
    if counter is not None and gpus:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # before CUDA is first used
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))


def _raise_failures(failures: list[tuple[Job, str]]) -> None:
    if failures:
        lines = [f"{len(failures)} job(s) failed (rerun to retry only these):"]
        for job, tb in failures:
            lines.append(f"--- {job.kind} job {job.key} ({job.params.get('role', '')} "
                         f"{job.params.get('index', '')}):\n{tb.rstrip()}")
        raise JobError("\n".join(lines))


def run_jobs(cfg: StudyConfig, jobs: Iterable[Job], desc: str = "jobs") -> None:
    """Run every job that is not yet complete, on the back-end the config names."""
    from .pipeline import progress

    store = Store(cfg.store)
    store.root.mkdir(parents=True, exist_ok=True)  # workers check that they can see it
    pending = [j for j in jobs if not store.is_valid(j)]  # a corrupt job is reported and redone
    if not pending:
        return
    failures: list[tuple[Job, str]] = []
    bar = progress(None, desc, total=len(pending))
    if cfg.executor == "serial" or len(pending) == 1:
        for job in pending:
            _, tb = _run_guarded(cfg, job)
            if tb:
                failures.append((job, tb))
            bar.update()
    elif cfg.executor == "process":
        import multiprocessing as mp

        import torch

        by_key = {j.key: j for j in pending}
        gpus = torch.cuda.device_count() if cfg.device != "cpu" else 0
        # Workers fork from a clean server that imported ptqlib (torch included) once: never a fork
        # of a notebook kernel, no CUDA context inherited, and no per-worker import cost.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["ptqlib.pipeline"])
        counter = ctx.Value("i", 0)
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(cfg.worker_threads, counter, gpus)) as pool:
            futures = {pool.submit(_run_guarded, cfg, j) for j in pending}
            while futures:
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for f in done:
                    key, tb = f.result()
                    if tb:
                        failures.append((by_key[key], tb))
                    bar.update()
    elif cfg.executor == "ray":
        failures = _run_ray(cfg, pending, bar)
    else:  # validated in config; kept for safety
        raise ValueError(f"executor: unknown back-end {cfg.executor!r}")
    bar.close()
    _raise_failures(failures)


def _run_ray(cfg: StudyConfig, pending: list[Job], bar) -> list[tuple[Job, str]]:
    try:
        import ray
    except ImportError:
        raise JobError("executor: ray needs the optional extra: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=cfg.workers * cfg.worker_threads, log_to_driver=False,
                     include_dashboard=False)
    remote = ray.remote(num_cpus=cfg.worker_threads, num_gpus=cfg.gpus_per_job)(_ray_task)
    refs = {remote.remote(cfg, j): j for j in pending}
    failures = []
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            job = refs.pop(ref)
            _, tb = ray.get(ref)
            if tb:
                failures.append((job, tb))
            bar.update()
    return failures


def _ray_task(cfg: StudyConfig, job: Job):
    _init_worker(cfg.worker_threads)
    store = Store(cfg.store)
    if not store.root.is_dir():
        return job.key, (f"store {store.root.resolve()} is not visible on this Ray worker; "
                         "put the store on a filesystem every node mounts at the same path")
    return _run_guarded(cfg, job)
