"""Shadows stage of the default preset on serial (2 threads), process (2 x 1) and ray (2 x 1),
side by side in one run, plus Ray's fixed overhead per (empty) job.

    .venv/bin/python benchmarks/bench_executors.py [--shadows 32] [--out benchmarks/results/executors.txt]

Each back-end trains the same shadows into its own fresh store, so all three do the same work.
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ptqlib import pipeline
from ptqlib.config import load_preset
from ptqlib.store import Store


def _noop(_):
    return None


def ray_overhead(n_jobs: int = 1000) -> float:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_noop)
    ray.get([task.remote(i) for i in range(50)])  # warm the workers
    t0 = time.perf_counter()
    ray.get([task.remote(i) for i in range(n_jobs)])
    return (time.perf_counter() - t0) / n_jobs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="params/default.yaml")
    ap.add_argument("--shadows", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/executors.txt")
    args = ap.parse_args()
    base = load_preset(args.preset)
    lines = [f"shadows stage of {args.preset}: {args.shadows} shadows, {base.epochs} epochs, digits CNN"]
    times = {}
    for name, over in [("serial (2 threads)", {"executor": "serial", "threads": 2}),
                       ("process (2 workers x 1 thread)", {"executor": "process", "workers": 2, "worker_threads": 1}),
                       ("ray (2 workers x 1 thread)", {"executor": "ray", "workers": 2, "worker_threads": 1})]:
        root = Path(tempfile.mkdtemp(prefix="bench-exec-"))
        from dataclasses import replace
        cfg = replace(base, num_shadows=args.shadows, store=str(root), **over)
        if over["executor"] == "ray":
            import ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        pipeline.run_train_shadows(cfg, Store(cfg.store))
        times[name] = time.perf_counter() - t0
        shutil.rmtree(root, ignore_errors=True)
        lines.append(f"  {name:34s} {times[name]:7.1f} s")
    serial = times["serial (2 threads)"]
    for name, t in times.items():
        lines.append(f"  speed-up vs serial, {name:22s} {serial / t:5.2f}x")
    per_job = ray_overhead()
    lines.append(f"ray fixed overhead per empty job: {1000 * per_job:.2f} ms (1000 jobs, 2 CPUs)")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
