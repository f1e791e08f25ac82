"""Query one model on every pool and test example under the query views (`QueryJob`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ptqlib.attacks.lira import logit_scores
from ptqlib.data.views import query_views, view_seed
from ptqlib.models.training import predict_logits
from ptqlib.runtime.store import Store
from ptqlib.study.jobs.base import ModelJob, StudyJob, load_data
from ptqlib.study.jobs.train import TrainJob


@dataclass(frozen=True)
class QueryJob(StudyJob):
    """Logits of one model on every training-pool and test example, under the query views."""
    kind: ClassVar[str] = "query"
    VERSION: ClassVar[int] = 2
    model: ModelJob
    queries: str  # identity | shift | mirror_shift | random_per_model
    shift: int = 0  # shift, mirror_shift: pixels
    count: int = 0  # random_per_model: views

    @property
    def train_job(self) -> TrainJob:
        """The trained model behind the queried one."""
        return self.model.train_job

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def recipe(self) -> dict:
        return self.model.recipe

    def describe(self) -> str:
        return f"query {self.train_job.role} {self.train_job.index} {self.label}"

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
        """LiRA's per-query scores phi (N, Q) of the stored logits on one split."""
        name = "logits.npy" if split == "train" else "logits_test.npy"
        return logit_scores(np.load(store.require(self, "query results", "attack") / name), labels)
