"""The job interface: small frozen records whose fields are everything that determines their result.

Every job kind is a frozen dataclass deriving from `StudyJob`, in its own module, with beside it:
- `kind` and `VERSION`: the job's name in the store and its code version (bump `VERSION` when a
  change alters the kind's results, so old artifacts are never reused; a change to one quantization
  method's arithmetic bumps that method's entry of `ptq.methods.METHOD_VERSIONS` instead, which
  enters only its own quantize jobs' keys);
- its fields: what determines the result (input jobs are fields too; `NOT_IN_KEY` lists fields that
  only say where or how fast it runs);
- `compute(store, out)`: reads only the record and its inputs' stored results, writes into `out`,
  returns the meta dict;
- `describe()`: a short human name for progress lines and error reports.

A job whose result is a model (`ModelJob`) also says which trained model it derives from
(`train_job`), how to `load` it, its members (`keep`), its `label` and `recipe`, and whether it
was `pruned`.
The key is a hash of kind, version, own fields and the keys of the input jobs.
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

from ptqlib.data.canaries import insert_canaries
from ptqlib.data.disk import VERIFY_ENV, dataset_identity
from ptqlib.data.images import ImageData, load_dataset
from ptqlib.models.zoo import build_model
from ptqlib.runtime.store import Store, job_key

FP32_LABEL = "fp32"


def _holds_jobs(value) -> bool:
    return isinstance(value, StudyJob) or (isinstance(value, tuple) and bool(value)
                                           and all(isinstance(v, StudyJob) for v in value))


class StudyJob:
    """What every job record shares: `kind`, `VERSION`, `params`, `inputs`, `key`, `run`, `describe`."""
    kind: ClassVar[str]
    VERSION: ClassVar[int] = 1
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ()
    # fields added after results were stored: in the key only when set away from their declared default,
    # so a job that leaves them alone keeps the key (and the stored result) it had before they existed
    KEY_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = ()

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
            if f.name in self.NOT_IN_KEY or _holds_jobs(value) or (
                    f.name in self.KEY_ONLY_WHEN_SET and value == f.default):
                continue
            out[f.name] = value.identity() if isinstance(value, DataSpec) else value
        return out

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(j.key for j in self.input_jobs)

    @cached_property
    def key(self) -> str:
        return job_key(self.kind, self.params, self.inputs, version=self.VERSION)

    def run(self, store: Store) -> Path:
        """Compute the job into the store (skipped when already complete); its directory."""
        return store.run(self, lambda out: self.compute(store, out))

    def compute(self, store: Store, out: Path) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


class ModelJob(StudyJob):
    """A job whose result is a model (model.pt): trained, quantized, degraded or pruned."""

    @property
    def train_job(self):
        """The trained model this one derives from (a TrainJob is its own)."""
        return self.source.train_job

    @property
    def label(self) -> str:
        raise NotImplementedError

    @property
    def recipe(self) -> dict:
        raise NotImplementedError

    @property
    def pruned(self) -> bool:
        """Whether this model's zero weights were forced by pruning (quantizing it keeps them zero)."""
        return self.source.pruned

    def load(self, store: Store) -> torch.nn.Module:
        """The stored model, in eval mode, on the CPU."""
        trained = self.train_job
        model = trained.new_model(load_data(trained.data, store))
        path = store.require(self, "model") / "model.pt"
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

    def keep(self, store: Store) -> np.ndarray:
        """The membership mask of the model (that of the trained model it derives from)."""
        return self.train_job.keep(store)

    def describe(self) -> str:
        trained = self.train_job
        return f"{self.kind} {trained.role} {trained.index} {self.label}"


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
    canaries: int = 0  # pool examples turned into canaries (data.canaries.insert_canaries); 0 = none
    canary_kind: str = "mislabel"
    canary_seed: int = 0

    def identity(self) -> dict:
        """What identifies the examples (not where they lie, except for an ImageFolder) and their
        normalisation. The normalisation (when not the pool's) and the canary fields (when there are
        canaries) enter only when set, so a study without them keeps its keys.
        """
        if self.dataset == "digits":
            out = {"dataset": "digits", "test_fraction": self.test_fraction}
        else:
            out = dataset_identity(self.dataset, train_subset=self.train_subset, test_subset=self.test_subset,
                                   root=self.data_root, image_size=self.image_size)
        if self.normalization != "pool":
            out = {**out, "normalization": self.normalization}
        if self.canaries:
            out = {**out, "canaries": self.canaries, "canary_kind": self.canary_kind, "canary_seed": self.canary_seed}
        return out


_DATA: dict[tuple, ImageData] = {}


def load_data(spec: DataSpec, store: Store) -> ImageData:
    """The dataset, loaded once per process (folder datasets are cached as tensors in the store)."""
    cache_key = (spec, str(store.root))
    if cache_key not in _DATA:
        verify = os.environ.get(VERIFY_ENV, "1") != "0"  # tests on fake CIFAR files switch the MD5 check off
        data = load_dataset(spec.dataset, root=spec.data_root, store=store, test_fraction=spec.test_fraction,
                            image_size=spec.image_size, train_subset=spec.train_subset, test_subset=spec.test_subset,
                            download=spec.download, verify=verify, normalization=spec.normalization)
        _DATA[cache_key] = insert_canaries(data, spec.canaries, spec.canary_kind, spec.canary_seed)
    return _DATA[cache_key]


def full_precision_recipe(method: str) -> dict:
    """The recipe row of an unquantized model (FP32, a control or a defence): `method` names it."""
    return {"method": method, "bits": 32, "last_layer_bits": None}


def new_model(arch: str, data: ImageData, stem_init: str = "kaiming_normal", width: float = 1.0) -> torch.nn.Module:
    """A freshly initialised `arch` (its channels times `width`) for the dataset's image shape and class count."""
    c, h, _ = data.shape
    return build_model(arch, data.num_classes, c, h, stem_init, width)


def save_model(model: torch.nn.Module, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    (path / "model.pt").write_bytes(buf.getvalue())
