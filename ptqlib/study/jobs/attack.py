"""The attack jobs: every target scored by every attack under every threat model (`AttackJob`),
and one group of controls or defences attacked by one shadow pool (`GroupAttackJob`).

Shadow pools are read from the store one recipe at a time: a recipe's pool serves both the
matched-shadows and the leave-one-out threat models, then is dropped; only the full-precision
pool stays in memory throughout.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ptqlib.attacks import threat
from ptqlib.results import metrics
from ptqlib.runtime.progress import progress
from ptqlib.runtime.store import Store
from ptqlib.study.jobs.base import StudyJob, load_data
from ptqlib.study.jobs.query import QueryJob


def by_label(queries) -> dict[str, list]:
    """Query jobs grouped by recipe label, in order of first appearance."""
    groups: dict[str, list] = {}
    for q in queries:
        groups.setdefault(q.label, []).append(q)
    return groups


def shadow_pool(store: Store, queries: list, labels: np.ndarray, test_labels: np.ndarray | None
                ) -> threat.ShadowPool:
    """The stored scores and membership of a list of queried models."""
    return threat.ShadowPool(
        np.stack([q.scores(store, labels) for q in queries]),
        np.stack([q.train_job.keep(store) for q in queries]),
        None if test_labels is None else np.stack([q.scores(store, test_labels, "test") for q in queries]))


def rmia_row_fields(attack: str, n_test: int, requested: int) -> dict:
    """RMIA rows record the population count they used (`rmia_population`); other rows nothing."""
    return {"rmia_population": threat.rmia_population_size(n_test, requested)} if attack == "rmia" else {}


def attack_all(store: Store, job: AttackJob, labels: np.ndarray, test_labels: np.ndarray):
    """(metric rows, membership scores per row, true membership per row) of the whole attack stage."""
    rows, score_rows, member_rows = [], [], []
    population = test_labels if "rmia" in job.attacks else None  # RMIA's reference population

    def record(threat_model: str, query, keep: np.ndarray, scores_by_attack: dict) -> None:
        test_acc = store.meta(query.model)["test_acc"]
        for attack, score in scores_by_attack.items():
            rows.append({"threat_model": threat_model, "target": query.train_job.index, "label": query.label,
                         **query.recipe, "attack": attack, "test_acc": test_acc,
                         **metrics.attack_metrics(score, keep),
                         **rmia_row_fields(attack, len(test_labels), job.rmia_population)})
            score_rows.append(score)
            member_rows.append(keep)

    shadows, targets = by_label(job.shadows), by_label(job.targets)
    fp_pool = shadow_pool(store, shadows["fp32"], labels, population)
    both = "both_models" in job.threat_models
    fp_targets = {q.train_job.index: q for q in targets.get("fp32", [])} if both else {}
    for label in progress(list(dict.fromkeys([*targets, *shadows])), "attack recipes"):
        matched = "matched_shadows" in job.threat_models and label in targets
        # matched leave-one-out needs the whole pool quantized (obc_models may quantize only a few)
        loo = "leave_one_out" in job.threat_models and len(shadows.get(label, ())) == len(shadows["fp32"])
        loo_fp = "leave_one_out_fp" in job.threat_models and label in shadows
        s_pool = shadow_pool(store, shadows[label], labels, population) \
            if label != "fp32" and (matched or loo or loo_fp or (both and label in targets)) else fp_pool
        group = targets.get(label, [])
        t_pool = shadow_pool(store, group, labels, population) if group else None
        for k, query in enumerate(group):
            t_test = None if t_pool.test_scores is None else t_pool.test_scores[k]
            for threat_model, attackers in (("fp_shadows", fp_pool), ("matched_shadows", s_pool)):
                if threat_model in job.threat_models:
                    record(threat_model, query, t_pool.keep[k],
                           threat.attack_target(attackers, t_pool.scores[k], job.attacks, t_test,
                                                rmia_population=job.rmia_population))
        if both and group:
            pair = None if label == "fp32" else _pair_stats(fp_pool, shadows["fp32"], s_pool, shadows[label])
            for k, query in enumerate(group):
                if label == "fp32":  # the FP32 model alone: the row both_models is read against
                    scores = threat.attack_target(fp_pool, t_pool.scores[k], threat.both_models_attacks(job.attacks))
                else:
                    fp_scores = fp_targets[query.train_job.index].scores(store, labels)
                    scores = threat.attack_both_models(pair, fp_scores, t_pool.scores[k], job.attacks)
                record("both_models", query, t_pool.keep[k], scores)
        if loo:
            for k, scores in threat.leave_one_out(s_pool, job.attacks, job.rmia_population):
                record("leave_one_out", shadows[label][k], s_pool.keep[k], scores)
        if loo_fp:
            fp_index = {q.train_job.index: j for j, q in enumerate(shadows["fp32"])}
            sources = [fp_index[q.train_job.index] for q in shadows[label]]
            for k, scores in threat.leave_one_out_fp(fp_pool, s_pool, sources, job.attacks, job.rmia_population):
                record("leave_one_out_fp", shadows[label][k], s_pool.keep[k], scores)
    return rows, score_rows, member_rows


def _pair_stats(fp_pool: threat.ShadowPool, fp_queries: list, q_pool: threat.ShadowPool, q_queries: list):
    """Bivariate LiRA statistics of each FP shadow beside its own quantized copy (paired by model index)."""
    row = {q.train_job.index: i for i, q in enumerate(fp_queries)}
    order = np.array([row[q.train_job.index] for q in q_queries])
    return threat.fit_pair_stats(fp_pool.scores[order], q_pool.scores, q_pool.keep)


def save_attack(out: Path, rows: list[dict], scores: list, members: list, log: str,
                population: int | None) -> dict:
    """metrics.csv (one row per threat model, target, recipe, attack), scores.npy and members.npy;
    the meta records how many held-out points RMIA used as its population (when it ran)."""
    pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
    np.save(out / "scores.npy", np.stack(scores))
    np.save(out / "members.npy", np.stack(members))
    (out / "log.txt").write_text(log + (f"RMIA population: {population} held-out points\n" if population else ""))
    return {"rows": len(rows), **({"rmia_population": population} if population else {})}


class PopulationKey:
    """The RMIA population of an attack job: 0 (the whole held-out split) stays out of the key."""
    rmia_population: int
    KEY_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = ("rmia_population",)

    def population_used(self, n_test: int) -> int | None:
        """How many held-out points RMIA used as its population (None without RMIA)."""
        return threat.rmia_population_size(n_test, self.rmia_population) if "rmia" in self.attacks else None


@dataclass(frozen=True)
class AttackJob(PopulationKey, StudyJob):
    """Every attack on every FP32 and quantized target, under every threat model."""
    kind: ClassVar[str] = "attack"
    VERSION: ClassVar[int] = 3  # 3: RMIA's ties broken by the likelihood ratio
    targets: tuple[QueryJob, ...]
    shadows: tuple[QueryJob, ...]
    attacks: tuple[str, ...]
    threat_models: tuple[str, ...]
    rmia_population: int = 0  # RMIA: the first n held-out points (0 = all); in the key only when set

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.targets[0].train_job.data, store)
        rows, scores, members = attack_all(store, self, data.y_train.numpy(), data.y_test.numpy())
        return save_attack(out, rows, scores, members,
                           f"{len(rows)} (threat model, target, recipe, attack) rows from "
                           f"{len(self.targets)} target and {len(self.shadows)} shadow models\n",
                           self.population_used(len(data.y_test)))


@dataclass(frozen=True)
class GroupAttackJob(PopulationKey, StudyJob):
    """One group of targets (a control or a defence at one setting) attacked by one shadow pool.

    The group's label, family and setting are given (a fewer-epochs control is a TrainJob whose
    own label would read "fp32"); rows and arrays are laid out as the main attack job's.
    """
    kind: ClassVar[str] = "attack_group"
    VERSION: ClassVar[int] = 2  # 2: RMIA's ties broken by the likelihood ratio
    label: str
    family: str  # noise | epochs | dp | prune
    setting: float  # the family's knob: relative weight error, epochs, noise multiplier, sparsity
    threat_model: str  # fp_shadows | matched_shadows (shadows trained or degraded the same way)
    targets: tuple[QueryJob, ...]
    shadows: tuple[QueryJob, ...]
    attacks: tuple[str, ...]
    rmia_population: int = 0  # as AttackJob's

    def describe(self) -> str:
        return f"attack {self.label} ({self.threat_model})"

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.targets[0].train_job.data, store)
        labels, test_labels = data.y_train.numpy(), data.y_test.numpy()
        population = test_labels if "rmia" in self.attacks else None
        pool = shadow_pool(store, list(self.shadows), labels, population)
        rows, scores, members = [], [], []
        for query in self.targets:
            meta = store.meta(query.model)
            keep = query.train_job.keep(store)
            t_test = None if population is None else query.scores(store, test_labels, "test")
            by_attack = threat.attack_target(pool, query.scores(store, labels), self.attacks, t_test,
                                             rmia_population=self.rmia_population)
            for attack, score in by_attack.items():
                rows.append({"threat_model": self.threat_model, "target": query.train_job.index, "label": self.label,
                             "method": self.family, "bits": 32, "last_layer_bits": None, "setting": self.setting,
                             "attack": attack, "test_acc": meta["test_acc"], "epsilon": meta.get("epsilon"),
                             **metrics.attack_metrics(score, keep),
                             **rmia_row_fields(attack, len(test_labels), self.rmia_population)})
                scores.append(score)
                members.append(keep)
        return save_attack(out, rows, scores, members, f"{len(rows)} (target, attack) rows: {len(self.targets)} "
                           f"{self.label} targets vs {len(self.shadows)} shadows ({self.threat_model})\n",
                           self.population_used(len(test_labels)))
