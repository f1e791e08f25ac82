"""The stage functions the notebooks call: plan the stage's jobs, run them, return a small table.

Each function takes the validated config and the run's one `Store`, runs the stage's jobs
through the configured executor (finished jobs are skipped) and summarises them for the notebook.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pandas as pd

from ptqlib.attacks.threat import ShadowPool
from ptqlib.data.disk import VERIFY_ENV, check_available
from ptqlib.data.images import ImageData
from ptqlib.models.training import fit_warning, pool_outliers, set_threads
from ptqlib.models.zoo import build_model
from ptqlib.results import scale
from ptqlib.results.tables import primary_threat_model
from ptqlib.runtime.executor import run_jobs
from ptqlib.runtime.progress import progress
from ptqlib.runtime.store import Store
from ptqlib.study.config import StudyConfig
from ptqlib.study.jobs import load_data
from ptqlib.study.jobs.attack import shadow_pool
from ptqlib.study.plan import data_spec, executor_options, needs_quantized_shadows, plan_study, query_job


def run_stage_jobs(cfg: StudyConfig, store: Store, jobs: list, desc: str) -> None:
    """Run jobs through the configured executor with one progress line (finished jobs counted at once)."""
    set_threads(cfg.threads)
    done = sum(store.is_complete(j) for j in jobs)
    bar = progress(desc=desc, total=len(jobs), initial=done)
    try:
        run_jobs(jobs, store, executor_options(cfg), on_done=bar.update)
    finally:
        bar.close()


def dataset(cfg: StudyConfig, store: Store) -> ImageData:
    """The study's dataset (loaded once per process)."""
    return load_data(data_spec(cfg), store)


def check_data(cfg: StudyConfig) -> None:
    """A folder dataset checked on disk before any compute (ConfigError naming the path otherwise);
    its decoded images are kept in the store for the stages."""
    spec = data_spec(cfg)
    check_available(spec.dataset, spec.data_root, store=Store(cfg.store_path), image_size=spec.image_size,
                    verify=os.environ.get(VERIFY_ENV, "1") != "0")


def _require_all(store: Store, jobs, what: str, stage: str) -> None:
    for job in jobs:
        store.require(job, f"{what} {getattr(job, 'index', '')}", stage)


# ---------------------------------------------------------------- train

def training_table(store: Store, jobs) -> pd.DataFrame:
    rows = []
    for job in jobs:
        meta = store.meta(job)
        rows.append({"model": f"{job.role} {job.index}", "train_acc": meta["train_acc"], "test_acc": meta["test_acc"],
                     "members": meta["train_examples"], "wall_s": meta["wall_s"], "key": job.key})
    return pd.DataFrame(rows)


def run_train_targets(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 1: K target models, each on a random half of the training pool."""
    jobs = plan_study(cfg).targets
    run_stage_jobs(cfg, store, list(jobs), "train targets")
    return training_table(store, jobs)


def fit_check(cfg: StudyConfig, store: Store) -> str | None:
    """A one-line warning when the FP32 targets neither learned nor memorised (see `training.fit_warning`).

    Reads the train jobs' stored meta only (a store written before the class count was kept there
    loads the dataset once to learn it).
    """
    metas = [store.meta(j) for j in plan_study(cfg).targets]
    num_classes = metas[0].get("num_classes") or dataset(cfg, store).num_classes
    return fit_warning(float(np.mean([m["train_acc"] for m in metas])), float(np.mean([m["test_acc"] for m in metas])),
                       num_classes)


def model_fit_warnings(cfg: StudyConfig, store: Store) -> list[str]:
    """One line per trained target or shadow that, on its own, did not learn/memorise (`training.fit_warning`).

    Every pool model is a target or shadow of some attack, so each is checked; a line names the
    model and its train/test accuracy. Models not trained yet are skipped.
    """
    p = plan_study(cfg)
    lines, metas = [], {}
    for job in (*p.targets, *p.shadows):
        if not store.is_complete(job):
            continue
        meta = metas[f"{job.role} {job.index}"] = store.meta(job)
        num_classes = meta.get("num_classes") or dataset(cfg, store).num_classes
        if fit_warning(meta["train_acc"], meta["test_acc"], num_classes):
            lines.append(f"{job.role} {job.index} did not fit: train {100 * meta['train_acc']:.1f}%, "
                         f"test {100 * meta['test_acc']:.1f}% (chance {100 / num_classes:.1f}%)")
    median = np.median([m["train_acc"] for m in metas.values()]) if metas else 0.0
    for name, acc in pool_outliers({n: m["train_acc"] for n, m in metas.items()}).items():
        if not any(line.startswith(f"{name} ") for line in lines):
            lines.append(f"{name} did not fit like the others: train {100 * acc:.1f}%, test "
                         f"{100 * metas[name]['test_acc']:.1f}% (median of the {len(metas)} models: train "
                         f"{100 * median:.1f}%); its figures are in the pooled results")
    return lines


def run_train_shadows(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 2: M shadow models with balanced membership masks."""
    jobs = plan_study(cfg).shadows
    run_stage_jobs(cfg, store, list(jobs), "train shadows")
    return training_table(store, jobs)


# ---------------------------------------------------------------- quantize

def run_quantize(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 3: every target (and, for the adaptive threat models, every shadow) quantized
    with every recipe (method, bits, last-layer bits)."""
    p = plan_study(cfg)
    _require_all(store, p.targets, "target model", "train")
    if needs_quantized_shadows(cfg):
        _require_all(store, p.shadows, "shadow model", "shadows")
    jobs = p.quantized_targets + p.quantized_shadows
    run_stage_jobs(cfg, store, list(jobs), "quantize")
    fp_acc = {}  # source key -> FP32 test accuracy, read once per source model
    rows = []
    for job in jobs:
        meta = store.meta(job)
        if job.source.key not in fp_acc:
            fp_acc[job.source.key] = store.meta(job.source)["test_acc"]
        rows.append({"model": f"{job.source.role} {job.source.index}", **job.recipe, "label": job.label,
                     "test_acc": meta["test_acc"], "fp32_test_acc": fp_acc[job.source.key],
                     "mean_rel_weight_error": float(np.mean(list(meta["relative_weight_error"].values()))),
                     "wall_s": meta["wall_s"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- attack

def run_attacks(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """Stage 4: query every model, then attack every FP32 and quantized target under each threat model.

    Returns the per-target metrics table and the stored membership scores (see `load_attack_results`).
    """
    p = plan_study(cfg)
    _require_all(store, p.shadows, "shadow model", "shadows")
    for query in p.queries:
        store.require(query.model, f"{query.model.kind} job", "train" if query.model.kind == "train" else "quantize")
    run_stage_jobs(cfg, store, list(p.queries), "query models")
    set_threads(cfg.threads)
    p.attack.run(store)
    return load_attack_results(cfg, store)


def load_attack_results(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """The attack stage's per-target metrics, and each row's membership scores and true membership.

    Returns (metrics table, {"scores": (rows, N) float64, "members": (rows, N) bool}), the
    arrays aligned with the table's rows: every ROC in the report is recomputed from them.
    """
    path = store.require(plan_study(cfg).attack, "attack results", "attack")
    df = pd.read_csv(path / "metrics.csv", keep_default_na=False, na_values=[""])
    return df, {"scores": np.load(path / "scores.npy"), "members": np.load(path / "members.npy")}


def run_all(cfg: StudyConfig, store: Store | None = None) -> pd.DataFrame:
    """Every compute stage in this process, without notebooks (for scripts, tests and clusters)."""
    store = store or Store(cfg.store_path)
    run_train_targets(cfg, store)
    run_train_shadows(cfg, store)
    run_quantize(cfg, store)
    return run_attacks(cfg, store)[0]


# ---------------------------------------------------------------- extras: controls and defences

def extras_shown(cfg: StudyConfig) -> bool:
    """Whether the extras stage (06_extras) has anything to run or show: controls, defences, activation
    bits, canaries, the both-models attacker or model scale."""
    return (extras_enabled(cfg) or any(b is not None for b in cfg.act_bits) or bool(cfg.canaries)
            or "both_models" in cfg.threat_models or bool(cfg.scale_widths))


def extras_enabled(cfg: StudyConfig) -> bool:
    """Whether the preset turned on any control or defence (activation bits run in the main stages)."""
    return bool(cfg.control_noise or cfg.control_epochs or cfg.dp_noise or cfg.prune_sparsity)


def run_extras(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """Controls and defences: train, degrade, query and attack each group (see `plan.extras_plan`).

    Needs the trained targets and shadows, the quantized targets and the FP shadows' queries.
    Returns the groups' metrics and arrays, as `load_extras_results`.
    """
    b = plan_study(cfg).extras
    for jobs, desc in ((b.trains, "train controls and DP models"), (b.models, "noise and prune models"),
                       (b.queries, "query controls and defences"), (b.attacks, "attack controls and defences")):
        run_stage_jobs(cfg, store, list(jobs), desc)
    return load_extras_results(cfg, store)


def load_extras_results(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """Every control and defence group's per-target metrics (one table) and their score arrays."""
    tables, scores, members = [], [], []
    for job in plan_study(cfg).extras.attacks:
        path = store.require(job, f"attack of {job.label}", "analysis")
        tables.append(pd.read_csv(path / "metrics.csv", keep_default_na=False, na_values=[""]))
        scores.append(np.load(path / "scores.npy"))
        members.append(np.load(path / "members.npy"))
    if not tables:
        return pd.DataFrame(), {"scores": np.zeros((0, 0)), "members": np.zeros((0, 0), dtype=bool)}
    return (pd.concat(tables, ignore_index=True),
            {"scores": np.concatenate(scores), "members": np.concatenate(members)})


def scale_configs(cfg: StudyConfig) -> list[StudyConfig]:
    """The study at each of `scale_widths` (every other key as the preset's)."""
    return [dataclasses.replace(cfg, width=float(w), scale_widths=()) for w in cfg.scale_widths]


def run_scale(cfg: StudyConfig, store: Store, attack: str = "online", threat_model: str | None = None,
              n_boot: int | None = None) -> pd.DataFrame:
    """Model scale: the whole study at every width of `scale_widths` (finished jobs are reused), then
    per width and recipe the pooled leakage and its reduction against FP32 (`results.scale.width_rows`),
    with the width's weight count and the wall time its jobs took in this call (`wall_s`)."""
    parts = []
    for sub in scale_configs(cfg):
        start = time.perf_counter()
        run_all(sub, store)
        wall = time.perf_counter() - start
        results, arrays = load_attack_results(sub, store)
        threat = threat_model or primary_threat_model(results)
        data = dataset(sub, store)
        weights = sum(p.numel() for p in build_model(sub.arch, data.num_classes, data.shape[0], data.shape[1],
                                                     width=sub.width).parameters())
        rows = scale.width_rows(results, arrays, sub.width, weights, attack, threat,
                                sub.bootstrap if n_boot is None else n_boot)
        parts.append(rows.assign(wall_s=wall))
    return pd.concat(parts, ignore_index=True)


def fp_shadow_pool(cfg: StudyConfig, store: Store) -> ShadowPool:
    """The FP shadows' stored scores and membership (for the per-example view)."""
    labels = dataset(cfg, store).y_train.numpy()
    return shadow_pool(store, [query_job(cfg, s) for s in plan_study(cfg).shadows], labels, None)
