"""Shadows stage of the default preset on serial (2 threads), process (2 x 1) and ray (2 x 1),
side by side in one run, plus Ray's fixed overhead per (empty) job.

    .venv/bin/python benchmarks/bench_executors.py [--shadows 32] [--repeats 2] [--out benchmarks/results/executors.txt]

Each back-end trains the same shadows into its own fresh store, so all three do the same work.
Rounds alternate the back-ends (serial, process, ray, serial, ...) so that drift in this shared
machine's speed falls on all of them; each round's times and the median speed-ups are printed.
Also measured: one model trained alone on 1 and on 2 threads, and two 1-thread trainings at
once, which bound what 2 x 1 workers can gain over 1 x 2 threads on this CPU.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ptqlib.study import stages as pipeline
from ptqlib.study.presets import load_preset
from ptqlib.runtime.store import Store


def _noop(_):
    return None


def ray_started() -> bool:
    import ray
    return ray.is_initialized()


_ONE_MODEL = """
import sys, time, torch
from ptqlib.study.presets import load_preset
from ptqlib.study.jobs import load_data
from ptqlib.study.plan import plan_study
from ptqlib.runtime.store import Store
from ptqlib.models.training import train_model
torch.set_num_threads(int(sys.argv[2]))
cfg = load_preset(sys.argv[1])
job = plan_study(cfg).shadows[int(sys.argv[3])]
data = load_data(job.data, Store(cfg.store_path))
keep = job.members(len(data.y_train))
for rep in range(2):  # the first model in a process pays one-off set-up costs: report the second
    torch.manual_seed(rep)
    t0 = time.perf_counter()
    train_model(job.new_model(data), data, keep, **job.training_options(), seed=rep, device=torch.device("cpu"))
print(time.perf_counter() - t0)
"""


def bounds(preset: str) -> list[str]:
    """One model alone on 1 and 2 threads, and two 1-thread models at once (separate processes)."""
    def launch(threads, index):
        return subprocess.Popen([sys.executable, "-c", _ONE_MODEL, preset, str(threads), str(index)],
                                stdout=subprocess.PIPE, text=True)
    one = float(launch(1, 0).communicate()[0])
    two = float(launch(2, 0).communicate()[0])
    pair = [launch(1, 0), launch(1, 1)]
    both = max(float(p.communicate()[0]) for p in pair)
    ideal = 2 * two / both
    return [f"  one model, 1 thread alone {one:.2f} s | 2 threads alone {two:.2f} s "
            f"(2-thread speed-up {one / two:.2f}x) | two 1-thread models at once {both:.2f} s "
            f"(each {both / one - 1:+.0%} vs alone)",
            f"  => ceiling for 2 x 1 workers vs 1 x 2 threads on this CPU, before any executor cost: {ideal:.2f}x"]


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
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/executors.txt")
    args = ap.parse_args()
    base = load_preset(args.preset)
    lines = [f"shadows stage of {args.preset}: {args.shadows} shadows, {base.epochs} epochs, digits CNN",
             *bounds(args.preset)]
    backends = [("serial (2 threads)", {"executor": "serial", "threads": 2}),
                ("process (2 workers x 1 thread)", {"executor": "process", "workers": 2, "worker_threads": 1}),
                ("ray (2 workers x 1 thread)", {"executor": "ray", "workers": 2, "worker_threads": 1})]
    times = {name: [] for name, _ in backends}
    for rnd in range(args.repeats):
        for name, over in backends:
            root = Path(tempfile.mkdtemp(prefix="bench-exec-"))
            cfg = replace(base, num_shadows=args.shadows, store=str(root), **over)
            if over["executor"] == "ray" and not ray_started():
                import ray
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            t0 = time.perf_counter()
            pipeline.run_train_shadows(cfg, Store(cfg.store_path))
            times[name].append(time.perf_counter() - t0)
            shutil.rmtree(root, ignore_errors=True)
            lines.append(f"  round {rnd + 1}: {name:34s} {times[name][-1]:7.1f} s")
            print(lines[-1], flush=True)
    serial = times["serial (2 threads)"]
    for name, ts in times.items():
        ratios = [s / t for s, t in zip(serial, ts)]
        lines.append(f"  speed-up vs serial, {name:34s} per round {' '.join(f'{r:.2f}x' for r in ratios)}"
                     f"  median {statistics.median(ratios):.2f}x")
    per_job = ray_overhead()
    lines.append(f"ray fixed overhead per empty job: {1000 * per_job:.2f} ms (1000 jobs, 2 CPUs)")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
