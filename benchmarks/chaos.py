"""Chaos run: SIGKILL a study at 20 random moments, rerun after each, and compare the final
metrics with an uninterrupted run. Reports kills survived, jobs recomputed and any mismatch.

    .venv/bin/python benchmarks/chaos.py [--kills 20] [--out benchmarks/results/chaos.txt]
"""
import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

PRESET = """name: chaos
num_targets: 2
num_shadows: 4
epochs: 3
methods: [rtn, adaround]
adaround_iters: 100
calib_samples: 256
bits: [2, 1.58]
last_layer_bits: [null]
attacks: [online, online_fixed, global]
threads: 1
"""
DRIVER = ("import sys; from ptqlib.study.presets import load_preset; from ptqlib.study import stages as pipeline; "
          "pipeline.run_all(load_preset(sys.argv[1])).to_csv(sys.argv[2], index=False)")


def run(preset, out):
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(preset), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def markers(store: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in store.glob("*/*/COMPLETE")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/chaos.txt")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    presets = {}
    for name in ("reference", "chaos"):
        (tmp / name).mkdir()
        presets[name] = tmp / name / "preset.yaml"
        presets[name].write_text(PRESET + f"store: {tmp / name / 'store'}\n")
    t0 = time.perf_counter()
    assert run(presets["reference"], tmp / "reference.csv").wait() == 0
    duration = time.perf_counter() - t0
    rng = random.Random(args.seed)
    reference = pd.read_csv(tmp / "reference.csv")
    landed, recomputed, episodes, mismatches, leftovers = 0, 0, 0, 0, 0
    while landed < args.kills:  # an episode: kill/rerun from an empty store until a run completes
        episodes += 1
        store = tmp / "chaos" / f"store{episodes}"
        presets["chaos"].write_text(PRESET + f"store: {store}\n")
        out = tmp / f"chaos{episodes}.csv"
        while landed < args.kills:
            before = markers(store)
            proc = run(presets["chaos"], out)
            time.sleep(rng.uniform(0.05, 1.0) * duration)
            if proc.poll() is not None:  # finished before the kill: the episode is over
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed += 1
            after = markers(store)
            recomputed += sum(after.get(p) != t for p, t in before.items())
        final = run(presets["chaos"], out)
        final.communicate()
        if final.returncode != 0 or not reference.equals(pd.read_csv(out)):
            mismatches += 1
        leftovers += len(list(store.glob("*/.tmp-*")))
    same = mismatches == 0
    lines = [f"uninterrupted run: {duration:.1f} s; each kill after uniform(5%, 100%) of that",
             f"kills that interrupted a running study: {landed} (over {episodes} episodes from an empty store)",
             f"finished jobs recomputed or rewritten after a kill: {recomputed}",
             f"episodes whose final metrics differ from the uninterrupted run: {mismatches}",
             f"temporary leftovers after the final runs: {leftovers}"]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    sys.exit(0 if same and recomputed == 0 else 1)


if __name__ == "__main__":
    main()
