"""Executors: run jobs serially, on a local process pool, or on Ray.

Every back-end calls `job.run(store)` for each job not yet complete: a job carries all it
needs, so workers need no config. Results travel only through the content-addressed store, so
any back-end can resume what another started. A job that raises is reported with its key and
traceback after the other jobs have finished; it leaves no completion marker, so a rerun runs
only the failed jobs.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from ptqlib.runtime.store import Store


class JobError(RuntimeError):
    """One or more jobs failed; the message names each job's kind and key, with its traceback."""


@dataclass(frozen=True)
class ExecutorOptions:
    backend: str = "serial"  # serial | process | ray
    workers: int = 2  # process/ray: concurrent jobs
    worker_threads: int = 1  # process/ray: torch threads per job
    use_gpus: bool = True  # process: one visible GPU per worker in turn, when there are GPUs
    gpus_per_job: float = 0.0  # ray
    ray_address: str = ""  # ray: empty = a local Ray started on demand


_STORES: dict[str, Store] = {}


def _worker_store(root: str) -> Store:
    """One Store per worker process, so its cache of verified inputs lasts across jobs."""
    if root not in _STORES:
        _STORES[root] = Store(root)
    return _STORES[root]


def run_guarded(job, store: Store) -> tuple[str, str | None]:
    """Run one job; (key, None) on success, (key, traceback) on failure (also kept in the store)."""
    record = store.failure_record(job)
    try:
        job.run(store)
        record.unlink(missing_ok=True)
        return job.key, None
    except Exception:  # reported to the caller with the job's identity
        tb = traceback.format_exc()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(tb)
        return job.key, tb


def _run_in_worker(job, root: str) -> tuple[str, str | None]:
    return run_guarded(job, _worker_store(root))


def _init_worker(threads: int, counter=None, gpus: int = 0) -> None:
    """Per-worker set-up: torch threads, and on GPU machines one card per worker in turn."""
    if counter is not None and gpus:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # before CUDA is first used
    torch.set_num_threads(max(1, threads))
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))


def _raise_failures(failures: list[tuple[object, str]]) -> None:
    if failures:
        lines = [f"{len(failures)} job(s) failed (rerun to retry only these):"]
        for job, tb in failures:
            lines.append(f"--- {job.describe()} ({job.kind} job {job.key}):\n{tb.rstrip()}")
        raise JobError("\n".join(lines))


def run_jobs(jobs: Iterable, store: Store, options: ExecutorOptions = ExecutorOptions(),
             on_done: Callable[[], None] | None = None) -> None:
    """Run every job that is not yet complete, on the back-end `options` names.

    `on_done()` is called once per finished job (successful or not), in the calling process.
    """
    store.root.mkdir(parents=True, exist_ok=True)  # workers check that they can see it
    pending = [j for j in jobs if not store.is_valid(j)]  # a corrupt job is reported and redone
    done = on_done or (lambda: None)
    failures: list[tuple[object, str]] = []
    if not pending:
        return
    if options.backend == "serial" or len(pending) == 1:  # in this process, with its torch threads
        for job in pending:
            _, tb = run_guarded(job, store)
            if tb:
                failures.append((job, tb))
            done()
    elif options.backend == "process":
        failures = _run_processes(pending, store, options, done)
    elif options.backend == "ray":
        failures = _run_ray(pending, store, options, done)
    else:
        raise ValueError(f"executor: unknown back-end {options.backend!r}; use serial, process or ray")
    _raise_failures(failures)


def _run_processes(pending: list, store: Store, options: ExecutorOptions, done) -> list:
    by_key = {j.key: j for j in pending}
    gpus = torch.cuda.device_count() if options.use_gpus else 0
    # Workers fork from a clean server that imported the job code (torch included) once: never a
    # fork of a notebook kernel, no CUDA context inherited, and no per-worker import cost.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["ptqlib.study.jobs"])
    counter = ctx.Value("i", 0)
    failures = []
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(options.worker_threads, counter, gpus)) as pool:
        futures = {pool.submit(_run_in_worker, j, str(store.root)) for j in pending}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                key, tb = f.result()
                if tb:
                    failures.append((by_key[key], tb))
                done()
    return failures


def _run_ray(pending: list, store: Store, options: ExecutorOptions, done) -> list:
    try:
        import ray  # optional dependency (the `ray` extra): only this back-end needs it
    except ImportError:
        raise JobError("executor: ray needs the optional extra: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        if options.ray_address:
            ray.init(address=options.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=options.workers * options.worker_threads, log_to_driver=False,
                     include_dashboard=False)
    remote = ray.remote(num_cpus=options.worker_threads, num_gpus=options.gpus_per_job)(_ray_task)
    refs = {remote.remote(j, str(store.root), options.worker_threads): j for j in pending}
    failures = []
    while refs:
        finished, _ = ray.wait(list(refs), num_returns=1)
        for ref in finished:
            job = refs.pop(ref)
            _, tb = ray.get(ref)
            if tb:
                failures.append((job, tb))
            done()
    return failures


def _ray_task(job, root: str, threads: int):
    _init_worker(threads)
    if not Path(root).is_dir():
        return job.key, (f"store {Path(root).resolve()} is not visible on this Ray worker; "
                         "put the store on a filesystem every node mounts at the same path")
    return run_guarded(job, _worker_store(root))
