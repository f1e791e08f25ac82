"""`status` and `clean` for a preset: what is done, what is left, and removing its artifacts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd

from ptqlib.study.config import StudyConfig
from ptqlib.study.plan import plan_study
from ptqlib.runtime.store import Store


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def status_table(cfg: StudyConfig, store: Store | None = None) -> pd.DataFrame:
    """Per stage: jobs done / pending / failed, size on disk, mean job time and time left ("-" where
    nothing is known yet). A stage without jobs (the analysis) says whether its report exists."""
    store = store or Store(cfg.store_path)
    rows = []
    for stage, jobs in plan_study(cfg).stages.items():
        if not jobs and stage == "extras":
            rows.append({"stage": stage, "jobs": 0, "done": "-", "pending": 0, "failed": 0, "size": "-", "s/job": "-",
                         "est. left (s)": "-"})
            continue
        if not jobs:
            written = (cfg.report_dir / "finding.txt").is_file()
            rows.append({"stage": stage, "jobs": 0, "done": "report" if written else "-", "pending": 0 if written else 1,
                         "failed": 0, "size": "-", "s/job": "-", "est. left (s)": "-"})
            continue
        done = [j for j in jobs if store.is_complete(j)]
        failed = [j for j in jobs if not store.is_complete(j) and store.failure_record(j).is_file()]
        times = [json.loads((store.path(j) / "meta.json").read_text()).get("wall_s", 0.0) for j in done]
        per_job = float(np.mean(times)) if times else float("nan")
        left = len(jobs) - len(done)
        rows.append({"stage": stage, "jobs": len(jobs), "done": len(done), "pending": left - len(failed),
                     "failed": len(failed), "size": _human(sum(store.size(j) for j in done)),
                     "s/job": round(per_job, 2) if times else "-",
                     "est. left (s)": round(per_job * left, 1) if times else "-"})
    return pd.DataFrame(rows)


def preset_paths(cfg: StudyConfig) -> list:
    """Every artifact directory of the preset that exists, and its report directory."""
    store = Store(cfg.store_path)
    paths = [store.path(j) for jobs in plan_study(cfg).stages.values() for j in jobs if store.path(j).exists()]
    if cfg.report_dir.exists():
        paths.append(cfg.report_dir)
    return paths


def clean(cfg: StudyConfig, yes: bool = False, ask=input) -> int:
    """Remove the preset's artifacts after listing them; asks unless `yes`. Returns the count removed.

    Jobs are content-addressed: another preset with identical parameters shares them, and
    would recompute them after this.
    """
    paths = preset_paths(cfg)
    if not paths:
        print(f"nothing to remove for preset '{cfg.name}'")
        return 0
    size = sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())
    print(f"preset '{cfg.name}': {len(paths)} directories, {_human(size)} will be removed:")
    for p in paths[:10]:
        print(f"  {p}")
    if len(paths) > 10:
        print(f"  ... and {len(paths) - 10} more")
    if not yes and ask("remove them? [y/N] ").strip().lower() not in ("y", "yes"):
        print("nothing removed")
        return 0
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
    print(f"removed {len(paths)} directories")
    return len(paths)
