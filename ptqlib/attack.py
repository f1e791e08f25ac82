"""The attack job's computation: every target scored by every attack under every threat model.

Shadow pools are read from the store one recipe at a time: a recipe's pool serves both the
matched-shadows and the leave-one-out threat models, then is dropped; only the full-precision
pool stays in memory throughout.
"""
from __future__ import annotations

import numpy as np

from . import metrics, threat
from .progress import progress
from .store import Store

# `queries` below are `jobs.QueryJob` records (label, recipe, model, train_job, scores()).


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


def attack_all(store: Store, job, labels: np.ndarray, test_labels: np.ndarray):
    """(metric rows, membership scores per row, true membership per row) of the whole attack stage."""
    rows, score_rows, member_rows = [], [], []
    population = test_labels if "rmia" in job.attacks else None  # RMIA's reference population

    def record(threat_model: str, query, keep: np.ndarray, scores_by_attack: dict) -> None:
        test_acc = store.meta(query.model)["test_acc"]
        for attack, score in scores_by_attack.items():
            rows.append({"threat_model": threat_model, "target": query.train_job.index, "label": query.label,
                         **query.recipe, "attack": attack, "test_acc": test_acc,
                         **metrics.attack_metrics(score, keep)})
            score_rows.append(score)
            member_rows.append(keep)

    shadows, targets = by_label(job.shadows), by_label(job.targets)
    fp_pool = shadow_pool(store, shadows["fp32"], labels, population)
    both = "both_models" in job.threat_models
    fp_targets = {q.train_job.index: q for q in targets.get("fp32", [])} if both else {}
    for label in progress(list(dict.fromkeys([*targets, *shadows])), "attack recipes"):
        matched = "matched_shadows" in job.threat_models and label in targets
        loo = "leave_one_out" in job.threat_models and label in shadows
        s_pool = shadow_pool(store, shadows[label], labels, population) \
            if label != "fp32" and (matched or loo or (both and label in targets)) else fp_pool
        group = targets.get(label, [])
        t_pool = shadow_pool(store, group, labels, population) if group else None
        for k, query in enumerate(group):
            t_test = None if t_pool.test_scores is None else t_pool.test_scores[k]
            for threat_model, attackers in (("fp_shadows", fp_pool), ("matched_shadows", s_pool)):
                if threat_model in job.threat_models:
                    record(threat_model, query, t_pool.keep[k],
                           threat.attack_target(attackers, t_pool.scores[k], job.attacks, t_test))
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
            for k, scores in threat.leave_one_out(s_pool, job.attacks):
                record("leave_one_out", shadows[label][k], s_pool.keep[k], scores)
    return rows, score_rows, member_rows


def _pair_stats(fp_pool: threat.ShadowPool, fp_queries: list, q_pool: threat.ShadowPool, q_queries: list):
    """Bivariate LiRA statistics of each FP shadow beside its own quantized copy (paired by model index)."""
    row = {q.train_job.index: i for i, q in enumerate(fp_queries)}
    order = np.array([row[q.train_job.index] for q in q_queries])
    return threat.fit_pair_stats(fp_pool.scores[order], q_pool.scores, q_pool.keep)
