"""Quantize one trained model with one recipe (`QuantizeJob`): method, bits, last-layer bits, and
the protocol's optional steps (BatchNorm re-tuning, activation quantization)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ptqlib.data.images import ImageData
from ptqlib.data.views import augment_batch
from ptqlib.models.training import accuracy
from ptqlib.models.zoo import quantizable_layers
from ptqlib.ptq import layer_bits_plan, quantize_model, recipe_label
from ptqlib.ptq.activations import attach_activation_quantizers, quantize_activations
from ptqlib.ptq.bn import retune_batchnorm, retune_indices
from ptqlib.ptq.methods import METHOD_VERSIONS, keep_pruned_zeros
from ptqlib.runtime.store import Store
from ptqlib.study.jobs.base import ModelJob, load_data, save_model

CALIBRATION_STREAM = 4  # calib_draw independent: the calibration generator's own seed stream


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
class QuantizeJob(ModelJob):
    """Quantize one trained (or pruned) model with one recipe (method, bits, last-layer bits)."""
    kind: ClassVar[str] = "quantize"
    VERSION: ClassVar[int] = 5
    KEY_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = ("calib_draw",)
    source: ModelJob
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
        if p["bn_retune"] is not None and p["bn_retune"]["sampling"] == "with_replacement":
            del p["bn_retune"]["sampling"]
        if METHOD_VERSIONS.get(self.method, 1) > 1:  # the method's own code version (ptq.methods)
            p["method_version"] = METHOD_VERSIONS[self.method]
        return p

    @property
    def label(self) -> str:
        label = recipe_label(self.method, self.bits, self.last_layer_bits)
        return label if self.act_bits is None else f"{label} a{self.act_bits}"

    @property
    def recipe(self) -> dict:
        recipe = {"method": self.method, "bits": self.bits, "last_layer_bits": self.last_layer_bits}
        return recipe if self.act_bits is None else {**recipe, "act_bits": self.act_bits}

    @property
    def pruned(self) -> bool:
        return False  # quantization keeps a pruned source's zeros; the quantized model itself is not pruned

    # ---- the steps of `compute`, in order

    def calibration_set(self, data: ImageData, members: np.ndarray) -> torch.Tensor | list[torch.Tensor]:
        """`calib_samples` normalised images with the training augmentation (uint8 first, as in training).

        From the model's own members (the paper) or the test split (disjoint from the pool). With
        several rounds, the same images under fresh augmentation, one tensor per round. The
        generator is the one training starts from (training_order: the members' pick is then epoch
        1's order) or one of the calibration's own (independent).
        """
        trained = self.train_job
        seed = trained.model_seed
        if self.calib_draw == "independent":
            seed = int(np.random.SeedSequence([seed, CALIBRATION_STREAM]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        pool = data.x_train[torch.from_numpy(members)] if self.calib_source == "members" else data.x_test
        pick = torch.randperm(len(pool), generator=gen)[: self.calib_samples]
        rounds = [data.normalize(augment_batch(pool[pick], trained.augment, gen)) for _ in range(self.calib_rounds)]
        return rounds[0] if self.calib_rounds == 1 else rounds

    def retune_batches(self, data: ImageData, members: np.ndarray):
        """The batches BN statistics are re-tuned on, drawn from a generator of this model's own."""
        spec, trained = self.bn_retune, self.train_job
        gen = torch.Generator().manual_seed(trained.model_seed + 1)
        pool = data.x_train if spec.source == "pool" else data.x_train[torch.from_numpy(members)]
        images = pool[torch.randperm(len(pool), generator=gen)[: spec.samples]]
        augment = trained.augment if spec.augment else "none"
        for pick in retune_indices(len(images), spec.batch_size, spec.steps, gen, spec.sampling):
            yield data.normalize(augment_batch(images[pick], augment, gen))

    def retune(self, qmodel: torch.nn.Module, data: ImageData, members: np.ndarray) -> None:
        with torch.no_grad():
            retune_batchnorm(qmodel, self.retune_batches(data, members), momentum=self.bn_retune.momentum)

    def quantize_activations(self, qmodel: torch.nn.Module, calib, out: Path) -> None:
        """After BN re-tuning: the ranges see the final weights and statistics."""
        act_calib = calib[0] if isinstance(calib, list) else calib
        act_ranges = quantize_activations(qmodel, self.act_bits, act_calib, self.act_range)
        torch.save({"bits": self.act_bits, "ranges": act_ranges}, out / "act_ranges.pt")

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.train_job.data, store)
        model, members = self.source.load(store), self.keep(store)
        names = [n for n, _ in quantizable_layers(model)]
        bits_by_layer = layer_bits_plan(names, self.bits, self.last_layer_bits, dict(self.layer_bits))
        calib = self.calibration_set(data, members) if self.calib_samples else None
        qmodel, qweights = quantize_model(model, self.method, bits_by_layer, calib, **dict(self.options))
        if self.source.pruned:  # a pruned source: its zeros stay zero (OBC may revive them)
            keep_pruned_zeros(model, qmodel, qweights)
        if self.bn_retune is not None:
            self.retune(qmodel, data, members)
        save_model(qmodel, out)
        if self.act_bits is not None:
            self.quantize_activations(qmodel, calib, out)
        save_grids(qweights, out)
        rel_err = relative_weight_errors(model, qweights)
        algorithm = {n: getattr(q, "algorithm", self.method) for n, q in qweights.items()}
        stats = {n: getattr(q, "stats", None) for n, q in qweights.items()}
        write_log(out, qweights, algorithm, rel_err, stats)
        trained = self.train_job
        added = {n: st["identity_added"] for n, st in stats.items() if (st or {}).get("identity_added")}
        return {"test_acc": accuracy(qmodel, data), "bits_plan": bits_by_layer, "relative_weight_error": rel_err,
                "label": self.label, "algorithm": algorithm, "method_stats": stats,
                "bn_retuned": self.bn_retune is not None, "act_bits": self.act_bits,
                "source": {"role": trained.role, "index": trained.index},
                **({"identity_added": added} if added else {})}

    def load(self, store: Store) -> torch.nn.Module:
        model = super().load(store)
        if self.act_bits is not None:
            saved = torch.load(store.require(self, "model") / "act_ranges.pt", weights_only=True)
            attach_activation_quantizers(model, saved["ranges"], saved["bits"])
        return model


def save_grids(qweights: dict, out: Path) -> None:
    """Every layer's codes, scales and zero points (grid.pt), the quantized model's exact content."""
    torch.save({n: {"codes": q.codes.to(torch.uint8 if q.grid.levels <= 256 else torch.int32),
                    "scale": q.grid.scale, "zero": q.grid.zero, "levels": q.grid.levels}
                for n, q in qweights.items()}, out / "grid.pt")


def relative_weight_errors(model: torch.nn.Module, qweights: dict) -> dict[str, float]:
    """||w_q - w|| / ||w|| per quantized layer."""
    weights = {n: m.weight.detach() for n, m in quantizable_layers(model)}
    return {n: float((q.weight(weights[n].shape) - weights[n]).norm() / weights[n].norm())
            for n, q in qweights.items()}


def write_log(out: Path, qweights: dict, algorithm: dict, rel_err: dict, stats: dict) -> None:
    with open(out / "log.txt", "w") as log:
        for n, q in qweights.items():
            print(f"{n}: {q.grid.levels} levels by {algorithm[n]}, relative weight error {rel_err[n]:.4f}, "
                  f"stats {stats[n]}", file=log)
            if (stats[n] or {}).get("identity_added"):
                print(f"{n}: Hessian not positive definite in float32; added {stats[n]['identity_added']:g} * I "
                      "and quantized (obc_cholesky: authors, as the OBC authors' trueobs.py)", file=log)
