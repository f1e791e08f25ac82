"""The study's jobs and the stage functions the notebooks call.

A job is a `store.Job` whose key is derived from the config alone, so every stage can locate
the results of the stages before it. `run_job(cfg, job)` executes any one job (it is what the
serial, process and Ray executors call); the stage functions (`run_train_targets`, ...) fan
their jobs out through the configured executor and return a small table for the notebook.
"""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import torch
from tqdm.std import tqdm

from . import lira, metrics, threat
from .config import StudyConfig
from .data import (ImageData, augment_batch, balanced_masks, load_dataset, paired_mask, query_views,
                   target_mask)
from .models import build_model, quantizable_layers
from .quantize import layer_bits_plan, quantize_model, recipe_label
from .store import Job, Store
from .training import accuracy, pick_device, predict_logits, set_threads, train_model

FP32 = {"method": "fp32", "bits": 32, "last_layer_bits": None}


def progress(iterable, desc: str, total: int | None = None):
    """A plain-text progress bar that renders cleanly both in a terminal and in a notebook."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=2.0, ncols=90)


# ---------------------------------------------------------------- data

_DATASETS: dict[str, ImageData] = {}


def dataset(cfg: StudyConfig) -> ImageData:
    """The config's dataset, loaded once per process."""
    key = json.dumps({**dataset_spec(cfg), "root": cfg.data_root}, sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(cfg)
    return _DATASETS[key]


def dataset_spec(cfg: StudyConfig) -> dict:
    """What identifies the data (not where it lies on disk)."""
    if cfg.dataset == "digits":
        return {"dataset": "digits", "test_fraction": cfg.test_fraction}
    from .datasets_disk import dataset_identity

    return dataset_identity(cfg)


def model_seed(cfg: StudyConfig, role: str, index: int) -> int:
    role_id = {"target": 1, "shadow": 2}[role]
    return int(np.random.SeedSequence([cfg.seed, role_id, index]).generate_state(1)[0])


# ---------------------------------------------------------------- job definitions

def training_options(cfg: StudyConfig) -> dict:
    """The training recipe, as `training.train_model` takes it."""
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay, "augment": cfg.augment}


def _training_params(cfg: StudyConfig) -> dict:
    compiled = {"torch_compile": True} if cfg.torch_compile else {}  # compiled kernels round differently
    return {"arch": cfg.arch, "data": dataset_spec(cfg), "seed": cfg.seed, **training_options(cfg), **compiled}


def target_jobs(cfg: StudyConfig) -> list[Job]:
    return [Job("train", {**_training_params(cfg), "role": "target", "index": i})
            for i in range(cfg.num_targets)]


def shadow_jobs(cfg: StudyConfig) -> list[Job]:
    """Shadow i's job. With paired masks its membership (hence its key) is independent of M."""
    size = {"num_models": cfg.num_shadows} if cfg.shadow_masks == "argsort" else {"masks": "paired"}
    return [Job("train", {**_training_params(cfg), "role": "shadow", "index": i, **size})
            for i in range(cfg.num_shadows)]


def membership(cfg: StudyConfig, params: dict, n: int) -> np.ndarray:
    """Members of the model a train job's params describe (derived from seed, index, sizes)."""
    if params["role"] == "target":
        return target_mask(cfg.seed, params["index"], n)
    if params.get("masks") == "paired":
        return paired_mask(cfg.seed, params["index"], n)
    return balanced_masks(cfg.seed, params["num_models"], n)[params["index"]]


def method_options(cfg: StudyConfig, method: str) -> dict:
    """The options that affect a method's result (and only those, so job keys stay stable)."""
    opts = {"symmetric": cfg.symmetric, "clip_norm": cfg.clip_norm}
    if method in ("adaround", "brecq"):
        opts.update({k: getattr(cfg, k) for k in (
            "adaround_iters", "adaround_lambda", "adaround_batch", "adaround_lr", "adaround_warmup",
            "adaround_beta_start", "adaround_beta_end")})
    if method == "brecq":
        opts["brecq_loss"] = cfg.brecq_loss
    if method in ("obc", "gptq"):
        opts["obc_damp"] = cfg.obc_damp
    if method == "gptq":
        opts["gptq_block"] = cfg.gptq_block
    return opts


def quantize_job(cfg: StudyConfig, model_job: Job, recipe: dict) -> Job:
    params = {**recipe, **method_options(cfg, recipe["method"]),
              "first_layer_bits": cfg.first_layer_bits, "layer_bits": cfg.layer_bits}
    if recipe["method"] != "rtn":  # RTN needs no calibration data
        params.update(calib_samples=cfg.calib_samples, calib_source=cfg.calib_source)
    if cfg.bn_reestimate:
        params["bn_reestimate"] = True
    return Job("quantize", params, (model_job.key,))


def quantize_jobs(cfg: StudyConfig, role: str = "target") -> list[tuple[int, dict, Job]]:
    """(model index, recipe, job) for every recipe applied to every target (or shadow)."""
    models = target_jobs(cfg) if role == "target" else shadow_jobs(cfg)
    return [(i, r, quantize_job(cfg, m, r)) for i, m in enumerate(models) for r in cfg.recipes()]


def needs_quantized_shadows(cfg: StudyConfig) -> bool:
    return any(t in cfg.threat_models for t in ("matched_shadows", "leave_one_out"))


def all_quantize_jobs(cfg: StudyConfig) -> list[tuple[int, dict, Job]]:
    """The quantize stage's jobs: every target, and every shadow for the adaptive threat models."""
    return quantize_jobs(cfg, "target") + (quantize_jobs(cfg, "shadow") if needs_quantized_shadows(cfg) else [])


def query_job(cfg: StudyConfig, model_job: Job) -> Job:
    params = {"queries": cfg.queries}
    if cfg.queries in ("shift", "mirror_shift"):
        params["query_shift"] = cfg.query_shift
    if cfg.queries == "random":
        params.update(query_count=cfg.query_count, augment=cfg.augment, seed=cfg.seed)
    return Job("query", params, (model_job.key,))


def attacked_models(cfg: StudyConfig, role: str = "target") -> list[tuple[int, dict, Job]]:
    """(model index, recipe, model job) of every FP32 and quantized model of one role."""
    models = target_jobs(cfg) if role == "target" else shadow_jobs(cfg)
    return [(i, FP32, m) for i, m in enumerate(models)] + quantize_jobs(cfg, role)


def shadow_models(cfg: StudyConfig) -> list[tuple[int, dict, Job]]:
    """The shadows the attack reads: FP32 ones, plus quantized ones for the adaptive threat models."""
    if needs_quantized_shadows(cfg):
        return attacked_models(cfg, "shadow")
    return [(i, FP32, s) for i, s in enumerate(shadow_jobs(cfg))]


def attack_job(cfg: StudyConfig) -> Job:
    models = attacked_models(cfg, "target") + shadow_models(cfg)
    inputs = tuple(query_job(cfg, j).key for _, _, j in models)
    return Job("attack", {"attacks": list(cfg.attacks), "threat_models": list(cfg.threat_models)}, inputs)


def stage_jobs(cfg: StudyConfig) -> dict[str, list[Job]]:
    """Every job of the preset, by the stage that runs it."""
    queries = [query_job(cfg, j) for _, _, j in shadow_models(cfg) + attacked_models(cfg, "target")]
    return {"train": target_jobs(cfg), "shadows": shadow_jobs(cfg),
            "quantize": [j for _, _, j in all_quantize_jobs(cfg)],
            "attack": queries + [attack_job(cfg)], "analysis": []}


# ---------------------------------------------------------------- running one job

def new_model(cfg: StudyConfig, data: ImageData) -> torch.nn.Module:
    c, h, _ = data.shape
    return build_model(cfg.arch, data.num_classes, c, h)


def _load_state(cfg: StudyConfig, data: ImageData, path) -> torch.nn.Module:
    model = new_model(cfg, data)
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


def _save_model(model: torch.nn.Module, path) -> None:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    (path / "model.pt").write_bytes(buf.getvalue())


def _job_params(store: Store, kind: str, key: str) -> dict:
    return json.loads((store.root / kind / key / "params.json").read_text())["params"]


def _train(cfg: StudyConfig, store: Store, data: ImageData, job: Job, out) -> dict:
    keep = membership(cfg, job.params, len(data.y_train))
    seed = model_seed(cfg, job.params["role"], job.params["index"])
    torch.manual_seed(seed)
    model = new_model(cfg, data)
    with open(out / "log.txt", "w") as log:
        stats = train_model(model, data, keep, **training_options(cfg), seed=seed, device=pick_device(cfg.device),
                            compile_model=cfg.torch_compile, log=lambda line: print(line, file=log))
    model.cpu()
    np.save(out / "keep.npy", keep)
    _save_model(model, out)
    return {**stats, "train_acc": accuracy(model, data, "train", keep), "test_acc": accuracy(model, data)}


def calibration_set(cfg: StudyConfig, data: ImageData, members: np.ndarray, seed: int) -> torch.Tensor:
    """`calib_samples` images, normalised, with the training augmentation.

    From the model's own members (the paper's choice) or, with calib_source: holdout, from
    the test split, which is disjoint from the membership pool. The same set for every method.
    """
    gen = torch.Generator().manual_seed(seed)
    pool = data.x_train[torch.from_numpy(members)] if cfg.calib_source == "members" else data.x_test
    pick = torch.randperm(len(pool), generator=gen)[: cfg.calib_samples]
    return data.normalize(augment_batch(pool[pick], cfg.augment, gen))  # as in training: uint8 first


def _quantize(cfg: StudyConfig, store: Store, data: ImageData, job: Job, out) -> dict:
    source = store.input_dir("train", job.inputs[0])
    model = _load_state(cfg, data, source)
    src = _job_params(store, "train", job.inputs[0])
    p = job.params
    names = [n for n, _ in quantizable_layers(model)]
    plan = layer_bits_plan(names, p["bits"], p["last_layer_bits"], cfg.first_layer_bits, cfg.layer_bits)
    calib = None
    if p["method"] != "rtn":
        calib = calibration_set(cfg, data, np.load(source / "keep.npy"), model_seed(cfg, src["role"], src["index"]))
    qmodel, qweights = quantize_model(model, p["method"], plan, calib, **method_options(cfg, p["method"]))
    if p.get("bn_reestimate"):  # the authors' OBC path: 1024 training images, members and non-members
        from .ptq.bn import reestimate_batchnorm

        gen = torch.Generator().manual_seed(model_seed(cfg, src["role"], src["index"]) + 1)
        pick = torch.randperm(len(data.x_train), generator=gen)[:1024]
        with torch.no_grad():
            reestimate_batchnorm(qmodel, data.normalize(data.x_train[pick]))
    _save_model(qmodel, out)
    torch.save({n: {"codes": q.codes.to(torch.uint8 if q.grid.levels <= 256 else torch.int32),
                    "scale": q.grid.scale, "zero": q.grid.zero, "levels": q.grid.levels}
                for n, q in qweights.items()}, out / "grid.pt")
    weights = {n: m.weight.detach() for n, m in quantizable_layers(model)}
    rel_err = {n: float((q.weight(weights[n].shape) - weights[n]).norm() / weights[n].norm())
               for n, q in qweights.items()}
    with open(out / "log.txt", "w") as log:
        for n, q in qweights.items():
            print(f"{n}: {q.grid.levels} levels by {getattr(q, 'algorithm', p['method'])}, relative weight "
                  f"error {rel_err[n]:.4f}, stats {getattr(q, 'stats', None)}", file=log)
    return {"test_acc": accuracy(qmodel, data), "bits_plan": plan, "relative_weight_error": rel_err,
            "label": recipe_label(p["method"], p["bits"], p["last_layer_bits"]),
            "algorithm": {n: getattr(q, "algorithm", p["method"]) for n, q in qweights.items()},
            "method_stats": {n: getattr(q, "stats", None) for n, q in qweights.items()},
            "bn_reestimated": bool(p.get("bn_reestimate")),
            "source": {"role": src["role"], "index": src["index"]}}


def _query(cfg: StudyConfig, store: Store, data: ImageData, job: Job, out) -> dict:
    kind = "train" if (store.root / "train" / job.inputs[0]).is_dir() else "quantize"
    model = _load_state(cfg, data, store.input_dir(kind, job.inputs[0]))
    for name, images in (("logits.npy", data.x_train), ("logits_test.npy", data.x_test)):
        views = query_views(data.normalize(images), cfg.queries, cfg.query_shift, cfg.query_count,
                            cfg.augment, cfg.seed)
        logits = torch.stack([predict_logits(model, v) for v in views], dim=1)  # (N, Q, C)
        np.save(out / name, logits.numpy().astype(np.float32))
        with open(out / "log.txt", "a") as log:
            print(f"{name}: {tuple(logits.shape)} logits from {len(views)} '{cfg.queries}' views", file=log)
    return {"views": len(views)}


_RUNNERS = {"train": _train, "quantize": _quantize, "query": _query}


def run_job(cfg: StudyConfig, job: Job) -> None:
    """Execute one job into the store (skipped if complete). What every executor calls."""
    store = Store(cfg.store)
    data = dataset(cfg)
    store.run(job, lambda out: _RUNNERS[job.kind](cfg, store, data, job, out))


def _run(cfg: StudyConfig, jobs: list[Job], desc: str) -> None:
    from .executor import run_jobs

    set_threads(cfg.threads)
    run_jobs(cfg, jobs, desc)


# ---------------------------------------------------------------- stages

def _training_table(store: Store, jobs: list[Job]) -> pd.DataFrame:
    rows = []
    for job in jobs:
        meta = store.meta(job)
        rows.append({"model": f"{job.params['role']} {job.params['index']}", "train_acc": meta["train_acc"],
                     "test_acc": meta["test_acc"], "members": meta["train_examples"],
                     "wall_s": meta["wall_s"], "key": job.key})
    return pd.DataFrame(rows)


def run_train_targets(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 1: K target models, each on a random half of the training pool."""
    _run(cfg, target_jobs(cfg), "train targets")
    return _training_table(store, target_jobs(cfg))


def run_train_shadows(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 2: M shadow models with balanced membership masks."""
    _run(cfg, shadow_jobs(cfg), "train shadows")
    return _training_table(store, shadow_jobs(cfg))


def _require_all(store: Store, jobs: list[Job], what: str, stage: str) -> None:
    for job in jobs:
        store.require(job, f"{what} {job.params.get('index', '')}", stage)


def run_quantize(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 3: every target (and, for the adaptive threat models, every shadow) quantized
    with every recipe (method, bits, last-layer bits)."""
    _require_all(store, target_jobs(cfg), "target model", "train")
    if needs_quantized_shadows(cfg):
        _require_all(store, shadow_jobs(cfg), "shadow model", "shadows")
    jobs = all_quantize_jobs(cfg)
    _run(cfg, [j for _, _, j in jobs], "quantize")
    sources = {"target": target_jobs(cfg), "shadow": shadow_jobs(cfg)}
    fp_acc = {}  # (role, index) -> FP32 test accuracy, read once per source model
    rows = []
    for i, recipe, job in jobs:
        meta = store.meta(job)
        src = (meta["source"]["role"], meta["source"]["index"])
        if src not in fp_acc:
            fp_acc[src] = store.meta(sources[src[0]][src[1]])["test_acc"]
        rows.append({"model": f"{src[0]} {i}", **recipe, "label": meta["label"],
                     "test_acc": meta["test_acc"], "fp32_test_acc": fp_acc[src],
                     "mean_rel_weight_error": float(np.mean(list(meta["relative_weight_error"].values()))),
                     "wall_s": meta["wall_s"]})
    return pd.DataFrame(rows)


def _scores(store: Store, job: Job, labels: np.ndarray, split: str = "train") -> np.ndarray:
    name = "logits.npy" if split == "train" else "logits_test.npy"
    return lira.logit_scores(np.load(store.require(job, "query results", "attack") / name), labels)


def run_attacks(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """Stage 4: query every model, then attack every FP32 and quantized target under each threat model.

    Returns the per-target metrics table and the stored membership scores (see `load_attack_results`).
    """
    _require_all(store, shadow_jobs(cfg), "shadow model", "shadows")
    targets, shadows = attacked_models(cfg, "target"), shadow_models(cfg)
    for _, recipe, job in targets + shadows:
        store.require(job, f"{job.kind} job", "train" if recipe is FP32 else "quantize")
    _run(cfg, [query_job(cfg, j) for _, _, j in shadows + targets], "query models")
    store.run(attack_job(cfg), lambda out: _attack_all(cfg, store, targets, shadows, out))
    return load_attack_results(cfg, store)


def _attack_all(cfg: StudyConfig, store: Store, targets, shadows, out) -> dict:
    data = dataset(cfg)
    labels, test_labels = data.y_train.numpy(), data.y_test.numpy()
    with_test = "rmia" in cfg.attacks

    def pool(models) -> threat.ShadowPool:  # the stored scores of a list of (index, recipe, job)
        qs = [query_job(cfg, j) for _, _, j in models]
        return threat.ShadowPool(
            np.stack([_scores(store, q, labels) for q in qs]),
            np.stack([np.load(_keep_path(store, j)) for _, _, j in models]),
            np.stack([_scores(store, q, test_labels, "test") for q in qs]) if with_test else None)

    def by_recipe(models):
        groups: dict[str, list] = {}
        for i, r, j in models:
            groups.setdefault(recipe_label(r["method"], r["bits"], r["last_layer_bits"]), []).append((i, r, j))
        return groups

    rows, score_rows, member_rows = [], [], []

    def record(threat_model, index, recipe, model_job, keep, scores_by_attack):
        label = recipe_label(recipe["method"], recipe["bits"], recipe["last_layer_bits"])
        test_acc = store.meta(model_job)["test_acc"]
        for attack, score in scores_by_attack.items():
            rows.append({"threat_model": threat_model, "target": index, "label": label, **recipe,
                         "attack": attack, "test_acc": test_acc,
                         **metrics.attack_metrics(score, keep)})
            score_rows.append(score)
            member_rows.append(keep)

    def test_scores(p: threat.ShadowPool, k: int):
        return None if p.test_scores is None else p.test_scores[k]

    shadow_groups, target_groups = by_recipe(shadows), by_recipe(targets)
    fp_pool = pool(shadow_groups["fp32"])
    # One recipe at a time: its shadow pool is read once and serves both matched shadows and
    # leave-one-out, then is dropped (only the FP pool stays in memory throughout).
    for label in progress(list(dict.fromkeys([*target_groups, *shadow_groups])), "attack recipes"):
        needed = label != "fp32" and (
            ("matched_shadows" in cfg.threat_models and label in target_groups) or
            ("leave_one_out" in cfg.threat_models and label in shadow_groups))
        s_pool = pool(shadow_groups[label]) if needed else fp_pool
        group = target_groups.get(label, [])
        t_pool = pool(group) if group else None
        for k, (i, recipe, job) in enumerate(group):
            for threat_model, attackers in (("fp_shadows", fp_pool), ("matched_shadows", s_pool)):
                if threat_model in cfg.threat_models:
                    record(threat_model, i, recipe, job, t_pool.keep[k], threat.attack_target(
                        attackers, t_pool.scores[k], cfg.attacks, test_scores(t_pool, k)))
        if "leave_one_out" in cfg.threat_models and label in shadow_groups:
            for k, by_attack in threat.leave_one_out(s_pool, cfg.attacks):
                i, recipe, job = shadow_groups[label][k]
                record("leave_one_out", i, recipe, job, s_pool.keep[k], by_attack)

    pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
    (out / "log.txt").write_text(f"{len(rows)} (threat model, target, recipe, attack) rows from "
                                 f"{len(targets)} target and {len(shadows)} shadow models\n")
    np.save(out / "scores.npy", np.stack(score_rows))
    np.save(out / "members.npy", np.stack(member_rows))
    return {"rows": len(rows)}


def _keep_path(store: Store, job: Job):
    """Membership mask of a model: its own train job's, or that of the model it quantizes."""
    train_key = job.key if job.kind == "train" else job.inputs[0]
    return store.input_dir("train", train_key) / "keep.npy"


def load_attack_results(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """The attack stage's per-target metrics, and each row's membership scores and true membership.

    Returns (metrics table, {"scores": (rows, N) float64, "members": (rows, N) bool}), the
    arrays aligned with the table's rows: every ROC in the report is recomputed from them.
    """
    path = store.require(attack_job(cfg), "attack results", "attack")
    df = pd.read_csv(path / "metrics.csv", keep_default_na=False, na_values=[""])
    return df, {"scores": np.load(path / "scores.npy"), "members": np.load(path / "members.npy")}


def run_all(cfg: StudyConfig) -> pd.DataFrame:
    """Every compute stage in this process, without notebooks (for scripts, tests and clusters)."""
    store = Store(cfg.store)
    run_train_targets(cfg, store)
    run_train_shadows(cfg, store)
    run_quantize(cfg, store)
    return run_attacks(cfg, store)[0]
