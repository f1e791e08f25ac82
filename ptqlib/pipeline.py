"""The study's jobs and the stage functions the notebooks call.

Each stage reads its inputs from the store, runs the jobs it owns (skipping finished ones)
and returns a small table for the notebook to show. Job keys are derived from the config
alone, so any stage can locate the results of the stages before it.
"""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import torch
from tqdm.std import tqdm

from . import lira, metrics
from .config import StudyConfig
from .data import ImageData, augment_batch, balanced_masks, load_dataset, query_views, target_mask
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
    spec = {"dataset": cfg.dataset}
    if cfg.dataset == "digits":
        spec["test_fraction"] = cfg.test_fraction
    return spec


def model_seed(cfg: StudyConfig, role: str, index: int) -> int:
    role_id = {"target": 1, "shadow": 2}[role]
    return int(np.random.SeedSequence([cfg.seed, role_id, index]).generate_state(1)[0])


# ---------------------------------------------------------------- job definitions

def _training_params(cfg: StudyConfig) -> dict:
    return {"arch": cfg.arch, "data": dataset_spec(cfg), "seed": cfg.seed, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay, "augment": cfg.augment}


def target_jobs(cfg: StudyConfig) -> list[Job]:
    return [Job("train", {**_training_params(cfg), "role": "target", "index": i})
            for i in range(cfg.num_targets)]


def shadow_jobs(cfg: StudyConfig) -> list[Job]:
    return [Job("train", {**_training_params(cfg), "role": "shadow", "index": i,
                          "num_models": cfg.num_shadows})
            for i in range(cfg.num_shadows)]


def membership(cfg: StudyConfig, job: Job, n: int) -> np.ndarray:
    p = job.params
    if p["role"] == "target":
        return target_mask(cfg.seed, p["index"], n)
    return balanced_masks(cfg.seed, p["num_models"], n)[p["index"]]


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


def quantize_job(cfg: StudyConfig, target: Job, recipe: dict) -> Job:
    params = {**recipe, **method_options(cfg, recipe["method"]),
              "first_layer_bits": cfg.first_layer_bits, "layer_bits": cfg.layer_bits}
    if recipe["method"] != "rtn":  # RTN needs no calibration data
        params.update(calib_samples=cfg.calib_samples, calib_source=cfg.calib_source)
    if cfg.bn_reestimate:
        params["bn_reestimate"] = True
    return Job("quantize", params, (target.key,))


def quantize_jobs(cfg: StudyConfig) -> list[tuple[int, dict, Job]]:
    return [(i, r, quantize_job(cfg, t, r)) for i, t in enumerate(target_jobs(cfg)) for r in cfg.recipes()]


def query_job(cfg: StudyConfig, model_job: Job) -> Job:
    return Job("query", {"queries": cfg.queries, "query_shift": cfg.query_shift}, (model_job.key,))


# ---------------------------------------------------------------- model I/O

def new_model(cfg: StudyConfig, data: ImageData) -> torch.nn.Module:
    c, h, _ = data.shape
    return build_model(cfg.arch, data.num_classes, c, h)


def load_model(cfg: StudyConfig, store: Store, job: Job, data: ImageData, stage: str) -> torch.nn.Module:
    path = store.require(job, f"{job.kind} job {job.params.get('role', '')} {job.params.get('index', '')}", stage)
    model = new_model(cfg, data)
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


def _save_model(model: torch.nn.Module, path) -> None:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    (path / "model.pt").write_bytes(buf.getvalue())


# ---------------------------------------------------------------- stage: train / shadows

def _train_one(cfg: StudyConfig, data: ImageData, job: Job, device: torch.device):
    def compute(out):
        keep = membership(cfg, job, len(data.y_train))
        seed = model_seed(cfg, job.params["role"], job.params["index"])
        torch.manual_seed(seed)
        model = new_model(cfg, data)
        stats = train_model(model, data, keep, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                            momentum=cfg.momentum, weight_decay=cfg.weight_decay, augment=cfg.augment,
                            seed=seed, device=device)
        model.cpu()
        np.save(out / "keep.npy", keep)
        _save_model(model, out)
        return {**stats, "train_acc": accuracy(model, data, "train", keep), "test_acc": accuracy(model, data)}
    return compute


def _run_training(cfg: StudyConfig, store: Store, jobs: list[Job], desc: str) -> pd.DataFrame:
    set_threads(cfg.threads)
    data, device = dataset(cfg), pick_device(cfg.device)
    rows = []
    for job in progress(jobs, desc):
        store.run(job, _train_one(cfg, data, job, device))
        meta = store.meta(job)
        rows.append({"model": f"{job.params['role']} {job.params['index']}", "train_acc": meta["train_acc"],
                     "test_acc": meta["test_acc"], "members": meta["train_examples"],
                     "wall_s": meta["wall_s"], "key": job.key})
    return pd.DataFrame(rows)


def run_train_targets(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 1: K target models, each on a random half of the training pool."""
    return _run_training(cfg, store, target_jobs(cfg), "train targets")


def run_train_shadows(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 2: M shadow models with balanced membership masks."""
    return _run_training(cfg, store, shadow_jobs(cfg), "train shadows")


# ---------------------------------------------------------------- stage: quantize

def calibration_set(cfg: StudyConfig, data: ImageData, members: np.ndarray, seed: int) -> torch.Tensor:
    """`calib_samples` images, normalised, with the training augmentation.

    From the target's members (the paper's choice) or, with calib_source: holdout, from the
    test split, which is disjoint from the membership pool. The same set for every method.
    """
    gen = torch.Generator().manual_seed(seed)
    if cfg.calib_source == "members":
        pool = data.x_train[torch.from_numpy(members)]
    else:
        pool = data.x_test
    pick = torch.randperm(len(pool), generator=gen)[: cfg.calib_samples]
    return augment_batch(data.normalize(pool[pick]), cfg.augment, gen)


def _quantize_one(cfg, store, data, target: Job, recipe: dict, job: Job):
    def compute(out):
        model = load_model(cfg, store, target, data, "train")
        names = [n for n, _ in quantizable_layers(model)]
        plan = layer_bits_plan(names, recipe["bits"], recipe["last_layer_bits"],
                               cfg.first_layer_bits, cfg.layer_bits)
        calib = None
        if recipe["method"] != "rtn":
            keep = np.load(store.path(target) / "keep.npy")
            calib = calibration_set(cfg, data, keep, model_seed(cfg, "target", target.params["index"]))
        qmodel, qweights = quantize_model(model, recipe["method"], plan, calib,
                                          **method_options(cfg, recipe["method"]))
        _save_model(qmodel, out)
        torch.save({n: {"codes": q.codes.to(torch.uint8 if q.grid.levels <= 256 else torch.int32),
                        "scale": q.grid.scale, "zero": q.grid.zero, "levels": q.grid.levels}
                    for n, q in qweights.items()}, out / "grid.pt")
        layers = dict(quantizable_layers(model))
        rel_err = {n: float((q.weight(layers[n].weight.shape) - layers[n].weight).norm() / layers[n].weight.norm())
                   for n, q in qweights.items()}
        return {"test_acc": accuracy(qmodel, data), "bits_plan": plan, "relative_weight_error": rel_err,
                "label": recipe_label(recipe["method"], recipe["bits"], recipe["last_layer_bits"])}
    return compute


def run_quantize(cfg: StudyConfig, store: Store) -> pd.DataFrame:
    """Stage 3: every target quantized with every recipe (method, bits, last-layer bits)."""
    set_threads(cfg.threads)
    data = dataset(cfg)
    targets = target_jobs(cfg)
    rows = []
    for i, recipe, job in progress(quantize_jobs(cfg), "quantize"):
        store.run(job, _quantize_one(cfg, store, data, targets[i], recipe, job))
        meta = store.meta(job)
        fp_acc = store.meta(targets[i])["test_acc"]
        rows.append({"target": i, **recipe, "label": meta["label"], "test_acc": meta["test_acc"],
                     "fp32_test_acc": fp_acc, "mean_rel_weight_error": float(np.mean(list(meta["relative_weight_error"].values()))),
                     "wall_s": meta["wall_s"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- stage: attack

def _query_one(cfg, store, data, model_job: Job, job: Job):
    def compute(out):
        stage = "train" if model_job.kind == "train" else "quantize"
        model = load_model(cfg, store, model_job, data, stage)
        x = data.normalize(data.x_train)
        views = query_views(x, cfg.queries, cfg.query_shift)
        logits = torch.stack([predict_logits(model, v) for v in views], dim=1)  # (N, Q, C)
        np.save(out / "logits.npy", logits.numpy().astype(np.float32))
        return {"views": len(views)}
    return compute


def _scores(store: Store, job: Job, labels: np.ndarray) -> np.ndarray:
    return lira.logit_scores(np.load(store.path(job) / "logits.npy"), labels)


def run_attacks(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """Stage 4: query every model, then attack every FP32 and quantized target with FP32 shadows.

    Returns the per-target metrics table and the ROC curves (see `load_attack_results`).
    """
    set_threads(cfg.threads)
    data = dataset(cfg)
    shadows = shadow_jobs(cfg)
    for s in shadows:
        store.require(s, f"shadow model {s.params['index']}", "shadows")
    models = attacked_models(cfg)
    for _, _, j in models:
        store.require(j, f"{j.kind} job", "train" if j.kind == "train" else "quantize")
    to_query = shadows + [j for _, _, j in models]
    for mj in progress(to_query, "query models"):
        store.run(query_job(cfg, mj), _query_one(cfg, store, data, mj, query_job(cfg, mj)))

    attack = attack_job(cfg)
    store.run(attack, lambda out: _attack_all(cfg, store, data, models, out))
    return load_attack_results(cfg, store)


def attacked_models(cfg: StudyConfig) -> list[tuple[int | None, dict, Job]]:
    """(target index, recipe, model job) of every model the attack targets: FP32 ones first."""
    return [(i, FP32, t) for i, t in enumerate(target_jobs(cfg))] + quantize_jobs(cfg)


def attack_job(cfg: StudyConfig) -> Job:
    models = [j for _, _, j in attacked_models(cfg)]
    inputs = tuple(query_job(cfg, j).key for j in shadow_jobs(cfg) + models)
    return Job("attack", {"attacks": list(cfg.attacks), "threat_model": "fp_shadows"}, inputs)


def _attack_all(cfg, store, data, models, out) -> dict:
    labels = data.y_train.numpy()
    shadows, targets = shadow_jobs(cfg), target_jobs(cfg)
    shadow_scores = np.stack([_scores(store, query_job(cfg, s), labels) for s in shadows])
    shadow_keep = np.stack([np.load(store.path(s) / "keep.npy") for s in shadows])
    rows, curves = [], {}
    for target_index, recipe, mj in progress(models, "attack targets"):
        keep = np.load(store.path(targets[target_index]) / "keep.npy")
        t_scores = _scores(store, query_job(cfg, mj), labels)
        label = recipe_label(recipe["method"], recipe["bits"], recipe["last_layer_bits"])
        test_acc = store.meta(mj)["test_acc"]
        for attack in cfg.attacks:
            score = lira.ATTACKS[attack](shadow_scores, shadow_keep, t_scores)
            rows.append({"target": target_index, "label": label, **recipe, "attack": attack,
                         "test_acc": test_acc, **metrics.attack_metrics(score, keep)})
            fpr, tpr = metrics.roc(score, keep)
            curves[f"{label}|{attack}|{target_index}|fpr"] = fpr
            curves[f"{label}|{attack}|{target_index}|tpr"] = tpr
    pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
    np.savez_compressed(out / "roc.npz", **curves)
    return {"rows": len(rows), "shadows": len(shadows)}


def load_attack_results(cfg: StudyConfig, store: Store) -> tuple[pd.DataFrame, dict]:
    """The attack stage's per-target metrics and ROC curves {(label, attack, target): (fpr, tpr)}."""
    path = store.require(attack_job(cfg), "attack results", "attack")
    df = pd.read_csv(path / "metrics.csv", keep_default_na=False, na_values=[""])
    with np.load(path / "roc.npz") as z:
        keys = {k.rsplit("|", 1)[0] for k in z.files}
        curves = {}
        for k in keys:
            label, attack, target = k.split("|")
            curves[(label, attack, int(target))] = (z[k + "|fpr"], z[k + "|tpr"])
    return df, curves
