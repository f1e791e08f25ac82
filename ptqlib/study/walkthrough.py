"""What the walkthrough notebook (notebooks/00_walkthrough.ipynb) and the stage notebooks' look-inside figures
read of a study: the study built through its own pipeline when the store lacks it, target 0's scores and
weights, the shadows' scores.
The figures it draws from them are in `ptqlib.results.teach`."""
from __future__ import annotations

import numpy as np
import torch

from ptqlib.runtime.store import Store
from ptqlib.study import stages
from ptqlib.study.config import StudyConfig
from ptqlib.study.jobs import load_data
from ptqlib.study.plan import plan_study, query_job

COMPUTE_STAGES = ("train", "shadows", "quantize", "attack")  # what the walkthrough reads (not the report)


def build_if_absent(cfg: StudyConfig, store: Store) -> int:
    """Build the jobs of the study's compute stages that the store lacks, with `stages.run_all`
    (the code `make study` runs, one progress line per stage); returns how many were missing."""
    jobs = [job for stage in COMPUTE_STAGES for job in plan_study(cfg).stages[stage]]
    missing = sum(not store.is_complete(job) for job in jobs)
    if not missing:
        print(f"the {cfg.name} study is built: all {len(jobs)} jobs are in {store.root}")
        return 0
    print(f"building the {cfg.name} study in {store.root}: {missing} of {len(jobs)} jobs to run "
          "(the default study takes about 5 minutes on 2 cores)", flush=True)
    stages.run_all(cfg, store)
    return missing


def study_scores(cfg: StudyConfig, store: Store) -> dict:
    """Stored phi scores (mean over query views) and membership of target 0 and every FP32 shadow:
    {"shadow_phi": (M, N), "shadow_keep": (M, N), "target_phi": (N,), "target_keep": (N,)}."""
    p = plan_study(cfg)
    shadows, target = p.shadows, p.targets[0]
    labels = load_data(target.data, store).y_train.numpy()

    def phi(job):
        return query_job(cfg, job).scores(store, labels).mean(axis=-1)

    return {"shadow_phi": np.stack([phi(j) for j in shadows]), "shadow_keep": np.stack([j.keep(store) for j in shadows]),
            "target_phi": phi(target), "target_keep": target.keep(store)}


def target_weights(cfg: StudyConfig, store: Store) -> dict[str, torch.Tensor]:
    """Target 0's trained weight tensors (convolutions and linear layers), by parameter name."""
    path = store.require(plan_study(cfg).targets[0], "trained model", "train") / "model.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: w for name, w in state.items() if name.endswith("weight") and w.dim() in (2, 4)}
