"""The study's jobs: small frozen records whose fields are everything that determines their result.

A job's key is a hash of its own fields (`params`) and of the keys of the jobs it reads
(`inputs`), plus its kind's code version, so a changed field can never reuse a stale result.
`job.run(store)` reads only the job's own fields (and the stored results of its inputs): no
config, no planning code. `plan.plan(cfg)` is the one place that turns a config into jobs.

Fields that say where or how fast something runs (the data folder, the device) are not part
of the key; everything that changes a number is.
"""
from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .data import (ImageData, augment_batch, balanced_masks, load_dataset, paired_mask, query_views, target_mask,
                   view_seed)
from .datasets_disk import VERIFY_ENV, dataset_identity
from .models import build_model, quantizable_layers
from .ptq.bn import retune_indices
from .ptq import layer_bits_plan, quantize_model, recipe_label
from .ptq.methods import keep_pruned_zeros
from .store import Store, job_key
from .training import accuracy, pick_device, predict_logits, train_model

FP32_LABEL = "fp32"
CALIBRATION_STREAM = 4  # calib_draw independent: the calibration generator's own seed stream


def _holds_jobs(value) -> bool:
    return isinstance(value, StudyJob) or (isinstance(value, tuple) and bool(value)
                                           and all(isinstance(v, StudyJob) for v in value))


class StudyJob:
    """What every job record shares: `kind`, `params`, `inputs`, `key` (read by the store) and `run`."""
    kind: ClassVar[str]
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ()

    @property
    def input_jobs(self) -> tuple:
        """The jobs whose stored results this one reads, in field order."""
        out = ()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if _holds_jobs(value):
                out += value if isinstance(value, tuple) else (value,)
        return out

    @property
    def params(self) -> dict:
        """The job's own fields (input jobs enter through `inputs`), as stored in params.json."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.NOT_IN_KEY or _holds_jobs(value):
                continue
            out[f.name] = value.identity() if isinstance(value, DataSpec) else value
        return out

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(j.key for j in self.input_jobs)

    @cached_property
    def key(self) -> str:
        return job_key(self.kind, self.params, self.inputs)

    def run(self, store: Store) -> Path:
        """Compute the job into the store (skipped when already complete); its directory."""
        return store.run(self, lambda out: self.compute(store, out))

    def compute(self, store: Store, out: Path) -> dict:
        raise NotImplementedError


# ---------------------------------------------------------------- data

@dataclass(frozen=True)
class DataSpec:
    """The dataset a model trains on; its field names are the config's keys."""
    dataset: str
    data_root: str
    test_fraction: float
    image_size: int
    train_subset: int
    test_subset: int
    download: bool = False
    normalization: str = "pool"  # pool | fixed (the dataset's constants)

    def identity(self) -> dict:
        """What identifies the examples (not where they lie, except for an ImageFolder) and their
        normalisation (only when it is not the pool's: older keys stay valid)."""
        if self.dataset == "digits":
            spec = {"dataset": "digits", "test_fraction": self.test_fraction}
        else:
            spec = dataset_identity(self.dataset, train_subset=self.train_subset, test_subset=self.test_subset,
                                    root=self.data_root, image_size=self.image_size)
        return spec if self.normalization == "pool" else {**spec, "normalization": self.normalization}


_DATA: dict[tuple, ImageData] = {}


def load_data(spec: DataSpec, store: Store) -> ImageData:
    """The dataset, loaded once per process (folder datasets are cached as tensors in the store)."""
    cache_key = (spec, str(store.root))
    if cache_key not in _DATA:
        verify = os.environ.get(VERIFY_ENV, "1") != "0"  # tests on fake CIFAR files switch the MD5 check off
        _DATA[cache_key] = load_dataset(spec.dataset, root=spec.data_root, store=store,
                                        test_fraction=spec.test_fraction, image_size=spec.image_size,
                                        train_subset=spec.train_subset, test_subset=spec.test_subset,
                                        download=spec.download, verify=verify, normalization=spec.normalization)
    return _DATA[cache_key]


def model_seed(seed: int, role: str, index: int) -> int:
    """The seed of one model's initialisation, batches and calibration draws."""
    role_id = {"target": 1, "shadow": 2}[role]
    return int(np.random.SeedSequence([seed, role_id, index]).generate_state(1)[0])


def _save_model(model: torch.nn.Module, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    (path / "model.pt").write_bytes(buf.getvalue())


def _new_model(arch: str, data: ImageData, stem_init: str = "kaiming_normal") -> torch.nn.Module:
    c, h, _ = data.shape
    return build_model(arch, data.num_classes, c, h, stem_init)


# ---------------------------------------------------------------- train

@dataclass(frozen=True)
class TrainJob(StudyJob):
    """Train one target or shadow model on its members of the pool."""
    kind: ClassVar[str] = "train"
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ("device",)
    data: DataSpec
    arch: str
    role: str  # target | shadow
    index: int
    seed: int
    masks: str  # target (a random half) | argsort (balanced over num_models shadows) | paired
    num_models: int  # argsort: the pool size M the balanced masks are drawn for; else 0
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment: str
    precision: str = "bf16"  # CUDA autocast; the CPU always trains in fp32
    torch_compile: bool = False
    device: str = "auto"
    stem_init: str = "kaiming_normal"  # CIFAR-form archs: kaiming_normal | pytorch_default
    lr_schedule: str = "per_step"  # per_step | per_epoch

    @property
    def params(self) -> dict:
        p = super().params
        for name, default in (("stem_init", "kaiming_normal"), ("lr_schedule", "per_step")):
            if p[name] == default:  # enter the key only when set: older keys stay valid
                del p[name]
        return p

    def members(self, n: int) -> np.ndarray:
        """The model's membership mask over a pool of n examples (derived, never drawn at random)."""
        if self.masks == "target":
            return target_mask(self.seed, self.index, n)
        if self.masks == "paired":
            return paired_mask(self.seed, self.index, n)
        return balanced_masks(self.seed, self.num_models, n)[self.index]

    @property
    def model_seed(self) -> int:
        return model_seed(self.seed, self.role, self.index)

    def training_options(self) -> dict:
        """The training recipe, as `training.train_model` takes it."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "augment": self.augment}

    def new_model(self, data: ImageData) -> torch.nn.Module:
        return _new_model(self.arch, data, self.stem_init)

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.data, store)
        keep = self.members(len(data.y_train))
        torch.manual_seed(self.model_seed)
        model = self.new_model(data)
        with open(out / "log.txt", "w") as log:
            stats = self.fit(model, data, keep, log=lambda line: print(line, file=log))
        model.cpu()
        np.save(out / "keep.npy", keep)
        _save_model(model, out)
        return {**stats, "train_acc": accuracy(model, data, "train", keep), "test_acc": accuracy(model, data)}

    def fit(self, model: torch.nn.Module, data: ImageData, keep: np.ndarray, log) -> dict:
        """Train `model` in place on its members (a DP-SGD job trains differently)."""
        return train_model(model, data, keep, **self.training_options(), seed=self.model_seed,
                           device=pick_device(self.device), compile_model=self.torch_compile,
                           precision=self.precision, lr_schedule=self.lr_schedule, log=log)

    def load(self, store: Store) -> torch.nn.Module:
        model = self.new_model(load_data(self.data, store))
        model.load_state_dict(torch.load(store.require(self, "model") / "model.pt", map_location="cpu",
                                         weights_only=True))
        return model.eval()

    def keep(self, store: Store) -> np.ndarray:
        return np.load(store.require(self, "model") / "keep.npy")


def _load_model(arch: str, data: ImageData, path: Path) -> torch.nn.Module:
    model = _new_model(arch, data)
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


# ---------------------------------------------------------------- quantize

@dataclass(frozen=True)
class BNRetune:
    """BatchNorm statistics re-tuned after quantization (the authors' OBC path)."""
    source: str  # pool (members and non-members) | members
    samples: int  # images drawn from the source
    steps: int  # batches of batch_size
    batch_size: int
    augment: bool  # with the training augmentation
    momentum: float | None  # None: exact average over the batches
    sampling: str = "with_replacement"  # | without_replacement (shuffled passes, see ptq.bn.retune_indices)


@dataclass(frozen=True)
class QuantizeJob(StudyJob):
    """Quantize one trained model with one recipe (method, bits, last-layer bits)."""
    kind: ClassVar[str] = "quantize"
    source: TrainJob
    method: str
    bits: float
    last_layer_bits: float | None
    layer_bits: tuple = ()  # ((layer name, bits), ...) overrides
    options: tuple = ()  # ((option, value), ...): exactly the options the method reads
    calib_samples: int = 0  # 0: the method needs no calibration data (RTN)
    calib_source: str = "members"  # members | holdout
    calib_rounds: int = 1  # rounds of fresh augmentation over the same images
    bn_retune: BNRetune | None = None
    act_bits: int | None = None  # activations entering every quantized layer: None = floating point
    act_range: str = ""  # act_bits only: minmax | mse | percentile (see ptq.activations)
    calib_draw: str = "training_order"  # | independent: the calibration images' own generator

    @property
    def params(self) -> dict:
        p = super().params
        p["bn_retune"] = None if self.bn_retune is None else dataclasses.asdict(self.bn_retune)
        if self.act_bits is None:  # activation fields enter the key only when activations are quantized
            del p["act_bits"], p["act_range"]
        if self.calib_draw == "training_order":  # protocol fields enter the key only when set
            del p["calib_draw"]
        if p["bn_retune"] is not None and p["bn_retune"]["sampling"] == "with_replacement":
            del p["bn_retune"]["sampling"]
        return p

    @property
    def label(self) -> str:
        label = recipe_label(self.method, self.bits, self.last_layer_bits)
        return label if self.act_bits is None else f"{label} a{self.act_bits}"

    @property
    def recipe(self) -> dict:
        recipe = {"method": self.method, "bits": self.bits, "last_layer_bits": self.last_layer_bits}
        return recipe if self.act_bits is None else {**recipe, "act_bits": self.act_bits}

    def calibration_set(self, data: ImageData, members: np.ndarray) -> torch.Tensor | list[torch.Tensor]:
        """`calib_samples` normalised images with the training augmentation (uint8 first, as in training).

        From the model's own members (the paper) or the test split (disjoint from the pool). With
        several rounds, the same images under fresh augmentation, one tensor per round. The
        generator is the one training starts from (training_order: the members' pick is then epoch
        1's order) or one of the calibration's own (independent).
        """
        seed = self.source.model_seed
        if self.calib_draw == "independent":
            seed = int(np.random.SeedSequence([seed, CALIBRATION_STREAM]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        pool = data.x_train[torch.from_numpy(members)] if self.calib_source == "members" else data.x_test
        pick = torch.randperm(len(pool), generator=gen)[: self.calib_samples]
        rounds = [data.normalize(augment_batch(pool[pick], self.source.augment, gen)) for _ in range(self.calib_rounds)]
        return rounds[0] if self.calib_rounds == 1 else rounds

    def retune_batches(self, data: ImageData, members: np.ndarray):
        """The batches BN statistics are re-tuned on, drawn from a generator of this model's own."""
        spec = self.bn_retune
        gen = torch.Generator().manual_seed(self.source.model_seed + 1)
        pool = data.x_train if spec.source == "pool" else data.x_train[torch.from_numpy(members)]
        images = pool[torch.randperm(len(pool), generator=gen)[: spec.samples]]
        augment = self.source.augment if spec.augment else "none"
        for pick in retune_indices(len(images), spec.batch_size, spec.steps, gen, spec.sampling):
            yield data.normalize(augment_batch(images[pick], augment, gen))

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.source.data, store)
        model = self.source.load(store)
        members = self.source.keep(store)
        names = [n for n, _ in quantizable_layers(model)]
        plan = layer_bits_plan(names, self.bits, self.last_layer_bits, None, dict(self.layer_bits))
        calib = self.calibration_set(data, members) if self.calib_samples else None
        qmodel, qweights = quantize_model(model, self.method, plan, calib, **dict(self.options))
        if getattr(self.source, "sparsity", None):  # a pruned source: its zeros stay zero (OBC may revive them)
            keep_pruned_zeros(model, qmodel, qweights)
        if self.bn_retune is not None:
            from .ptq.bn import retune_batchnorm

            with torch.no_grad():
                retune_batchnorm(qmodel, self.retune_batches(data, members), momentum=self.bn_retune.momentum)
        _save_model(qmodel, out)
        if self.act_bits is not None:  # after BN re-tuning: the ranges see the final weights and statistics
            from .ptq.activations import quantize_activations

            act_calib = calib[0] if isinstance(calib, list) else calib
            act_ranges = quantize_activations(qmodel, self.act_bits, act_calib, self.act_range)
            torch.save({"bits": self.act_bits, "ranges": act_ranges}, out / "act_ranges.pt")
        torch.save({n: {"codes": q.codes.to(torch.uint8 if q.grid.levels <= 256 else torch.int32),
                        "scale": q.grid.scale, "zero": q.grid.zero, "levels": q.grid.levels}
                    for n, q in qweights.items()}, out / "grid.pt")
        weights = {n: m.weight.detach() for n, m in quantizable_layers(model)}
        rel_err = {n: float((q.weight(weights[n].shape) - weights[n]).norm() / weights[n].norm())
                   for n, q in qweights.items()}
        algorithm = {n: getattr(q, "algorithm", self.method) for n, q in qweights.items()}
        stats = {n: getattr(q, "stats", None) for n, q in qweights.items()}
        with open(out / "log.txt", "w") as log:
            for n, q in qweights.items():
                print(f"{n}: {q.grid.levels} levels by {algorithm[n]}, relative weight error {rel_err[n]:.4f}, "
                      f"stats {stats[n]}", file=log)
                if (stats[n] or {}).get("identity_added"):
                    print(f"{n}: Hessian not positive definite in float32; added {stats[n]['identity_added']:g} * I "
                          "and quantized (obc_cholesky: authors, as the OBC authors' trueobs.py)", file=log)
        return {"test_acc": accuracy(qmodel, data), "bits_plan": plan, "relative_weight_error": rel_err,
                "label": self.label, "algorithm": algorithm, "method_stats": stats,
                "bn_retuned": self.bn_retune is not None, "act_bits": self.act_bits,
                "source": {"role": self.source.role, "index": self.source.index},
                **({"identity_added": added} if (added := {n: st["identity_added"] for n, st in stats.items()
                                                           if (st or {}).get("identity_added")}) else {})}

    def load(self, store: Store) -> torch.nn.Module:
        path = store.require(self, "model")
        model = _load_model(self.source.arch, load_data(self.source.data, store), path)
        if self.act_bits is not None:
            from .ptq.activations import attach_activation_quantizers

            saved = torch.load(path / "act_ranges.pt", weights_only=True)
            attach_activation_quantizers(model, saved["ranges"], saved["bits"])
        return model

    def keep(self, store: Store) -> np.ndarray:
        return self.source.keep(store)


# ---------------------------------------------------------------- query

@dataclass(frozen=True)
class QueryJob(StudyJob):
    """Logits of one model on every training-pool and test example, under the query views."""
    kind: ClassVar[str] = "query"
    model: TrainJob | QuantizeJob
    queries: str  # identity | shift | mirror_shift | random_per_model
    shift: int = 0  # shift, mirror_shift: pixels
    count: int = 0  # random_per_model: views

    @property
    def train_job(self) -> TrainJob:
        """The trained model behind the queried one (a derived model names it as its `source`)."""
        return getattr(self.model, "source", self.model)

    @property
    def label(self) -> str:
        return FP32_LABEL if isinstance(self.model, TrainJob) else self.model.label

    @property
    def recipe(self) -> dict:
        if isinstance(self.model, TrainJob):
            return {"method": FP32_LABEL, "bits": 32, "last_layer_bits": None}
        return self.model.recipe

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.train_job.data, store)
        model = self.model.load(store)
        for name, images in (("logits.npy", data.x_train), ("logits_test.npy", data.x_test)):
            # random_per_model views are seeded by the queried model's own key: they differ across models
            views = query_views(images, data.normalize, self.queries, shift=self.shift, count=self.count,
                                seed=view_seed(self.model.key))
            logits = torch.stack([predict_logits(model, v) for v in views], dim=1)  # (N, Q, C)
            np.save(out / name, logits.numpy().astype(np.float32))
            with open(out / "log.txt", "a") as log:
                print(f"{name}: {tuple(logits.shape)} logits from {len(views)} '{self.queries}' views", file=log)
        return {"views": len(views)}

    def scores(self, store: Store, labels: np.ndarray, split: str = "train") -> np.ndarray:
        from .lira import logit_scores

        name = "logits.npy" if split == "train" else "logits_test.npy"
        return logit_scores(np.load(store.require(self, "query results", "attack") / name), labels)


# ---------------------------------------------------------------- attack

@dataclass(frozen=True)
class AttackJob(StudyJob):
    """Every attack on every FP32 and quantized target, under every threat model."""
    kind: ClassVar[str] = "attack"
    targets: tuple[QueryJob, ...]
    shadows: tuple[QueryJob, ...]
    attacks: tuple[str, ...]
    threat_models: tuple[str, ...]

    def compute(self, store: Store, out: Path) -> dict:
        from .attack import attack_all

        data = load_data(self.targets[0].train_job.data, store)
        rows, scores, members = attack_all(store, self, data.y_train.numpy(), data.y_test.numpy())
        import pandas as pd

        pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
        (out / "log.txt").write_text(f"{len(rows)} (threat model, target, recipe, attack) rows from "
                                     f"{len(self.targets)} target and {len(self.shadows)} shadow models\n")
        np.save(out / "scores.npy", np.stack(scores))
        np.save(out / "members.npy", np.stack(members))
        return {"rows": len(rows)}


@dataclass(frozen=True)
class ComparisonAttackJob(StudyJob):
    """One group of targets (a control or a defence at one setting) attacked by one shadow pool.

    The group's label, method and setting are given (a fewer-epochs control is a TrainJob whose
    own label would read "fp32"); rows and arrays are laid out as the main attack job's.
    """
    kind: ClassVar[str] = "attack_group"
    label: str
    method: str  # noise | epochs | dp | prune
    setting: float  # the method's knob: relative weight error, epochs, noise multiplier, sparsity
    threat_model: str  # fp_shadows | matched_shadows (shadows trained or degraded the same way)
    targets: tuple[QueryJob, ...]
    shadows: tuple[QueryJob, ...]
    attacks: tuple[str, ...]

    def compute(self, store: Store, out: Path) -> dict:
        import pandas as pd

        from . import metrics, threat
        from .attack import shadow_pool

        data = load_data(self.targets[0].train_job.data, store)
        labels, test_labels = data.y_train.numpy(), data.y_test.numpy()
        population = test_labels if "rmia" in self.attacks else None
        pool = shadow_pool(store, list(self.shadows), labels, population)
        rows, scores, members = [], [], []
        for query in self.targets:
            meta = store.meta(query.model)
            keep = query.train_job.keep(store)
            t_test = None if population is None else query.scores(store, test_labels, "test")
            for attack, score in threat.attack_target(pool, query.scores(store, labels), self.attacks, t_test).items():
                rows.append({"threat_model": self.threat_model, "target": query.train_job.index, "label": self.label,
                             "method": self.method, "bits": 32, "last_layer_bits": None, "setting": self.setting,
                             "attack": attack, "test_acc": meta["test_acc"], "epsilon": meta.get("epsilon"),
                             **metrics.attack_metrics(score, keep)})
                scores.append(score)
                members.append(keep)
        pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
        np.save(out / "scores.npy", np.stack(scores))
        np.save(out / "members.npy", np.stack(members))
        return {"rows": len(rows)}


def describe(job: StudyJob) -> str:
    """A short human name for progress lines and error reports."""
    if job.kind in ("train_dp", "control", "prune"):  # controls and defences name their setting
        model = job if job.kind == "train_dp" else job.source
        return f"{job.kind} {model.role} {model.index} {job.label}"
    if isinstance(job, ComparisonAttackJob):
        return f"attack {job.label} ({job.threat_model})"
    if isinstance(job, TrainJob):
        return f"train {job.role} {job.index}"
    if isinstance(job, QuantizeJob):
        return f"quantize {job.source.role} {job.source.index} {job.label}"
    if isinstance(job, QueryJob):
        return f"query {job.train_job.role} {job.train_job.index} {job.label}"
    return job.kind

