"""RMIA's ties at the top, before and after breaking them by the likelihood ratio, on a stored study.

Reads the stored query logits of a study (planned from its preset with ptqlib.study.plan; nothing is
trained, queried or written) and scores every target with offline RMIA against the FP shadows,
with the whole held-out split as population, three ways:
- old: the paper's fraction of population points below the target point (ptqlib before issue #24);
- new: that fraction plus t(ratio) / |Z| (ptqlib.attacks.rmia's default: ties broken by the ratio);
- ratio: the likelihood ratio p(x | target) / p(x) alone.
Within one target `new` must rank exactly as `ratio`; pooled over targets it differs.
Also checks that `old` reproduces the RMIA rows of the stored attack job, if the store holds one.

    python benchmarks/rmia_ties.py --store /path/to/artifacts   # writes benchmarks/results/rmia_ties.txt
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ptqlib.results import metrics
from ptqlib.attacks import rmia
from ptqlib.results import stats
from ptqlib.attacks import threat
from ptqlib.study.jobs.attack import by_label, shadow_pool
from ptqlib.study.config import REPO_ROOT
from ptqlib.study.presets import load_preset
from ptqlib.study.jobs import load_data
from ptqlib.study.plan import plan_study
from ptqlib.runtime.store import Store

RESULTS = Path(__file__).parent / "results" / "rmia_ties.txt"
WAYS = ("old", "new", "ratio")
FIGURES = ("tpr@0.001", "tpr@0.01", "auc")


class ReadOnlyStore(Store):
    """A store that is only read: a corrupt job is an error here, never removed."""

    def is_valid(self, job) -> bool:
        if not self.is_complete(job):
            return False
        self.verify(job)
        return True


def score_target(pool: threat.ShadowPool, pool_probs_x: np.ndarray, scores: np.ndarray, test_scores: np.ndarray):
    """{way: membership scores} of one target: old (fraction), new (tie-broken), ratio."""
    return {"old": threat.rmia_scores(pool, scores, test_scores, tie_break=False),
            "new": threat.rmia_scores(pool, scores, test_scores),
            "ratio": rmia.true_label_probs(scores) / pool_probs_x}


def attack_rows(store: Store, cfg) -> tuple[pd.DataFrame, dict, int]:
    """One row per (recipe, target, way) with the figures, the arrays per (label, way), |Z|."""
    p = plan_study(cfg)
    data = load_data(p.attack.targets[0].train_job.data, store)
    labels, test_labels = data.y_train.numpy(), data.y_test.numpy()
    shadows, targets = by_label(p.attack.shadows), by_label(p.attack.targets)
    pool = shadow_pool(store, shadows["fp32"], labels, test_labels)
    p_x = rmia.offline_reference_probs(rmia.true_label_probs(pool.scores), pool.keep)
    rows, arrays = [], {}
    for label, queries in targets.items():
        for query in queries:
            keep = query.train_job.keep(store)
            by_way = score_target(pool, p_x, query.scores(store, labels), query.scores(store, test_labels, "test"))
            old = by_way["old"]
            top = old == old.max()
            for way, score in by_way.items():
                rows.append({"label": label, "target": query.train_job.index, "way": way,
                             "top_members": int((top & keep).sum()), "top_nonmembers": int((top & ~keep).sum()),
                             **metrics.attack_metrics(score, keep)})
                arrays.setdefault((label, way), []).append((score, keep))
    return pd.DataFrame(rows), arrays, len(test_labels)


def stored_rmia_rows(store: Store, cfg) -> pd.DataFrame | None:
    """The RMIA rows of a stored attack job over exactly this plan's queries (any code version)."""
    inputs = list(plan_study(cfg).attack.inputs)
    for params in sorted((store.root / "attack").glob("*/params.json")):
        if json.loads(params.read_text())["inputs"] == inputs:
            df = pd.read_csv(params.parent / "metrics.csv", keep_default_na=False, na_values=[""])
            return df[(df["attack"] == "rmia") & (df["threat_model"] == "fp_shadows")]
    return None


def pct(x: float) -> str:
    return f"{100 * x:6.2f}"


def report(df: pd.DataFrame, arrays: dict, n_population: int, stored: pd.DataFrame | None, cfg, store: Store
           ) -> list[str]:
    wide = df.pivot_table(index=["label", "target"], columns="way", values=list(FIGURES), sort=False)
    n_targets, n_out = df["target"].nunique(), int(df["n_nonmembers"].min())
    lines = [f"RMIA offline on the '{cfg.name}' study ({cfg.dataset}, {n_targets} targets, {cfg.num_shadows} FP "
             f"shadows, a = {rmia.DEFAULT_A}), population |Z| = {n_population} held-out points",
             f"from the stored query logits in {store.root}",
             "old = the paper's fraction of z below x (ties at the top); new = fraction + t(ratio) / |Z| "
             "(ptqlib's score now); ratio = p(x|target) / p(x) alone",
             f"TPR at FPR strictly below 0.1% / 1% (per target {n_out} non-members: at most "
             f"{int(np.ceil(0.001 * n_out)) - 1} / {int(np.ceil(0.01 * n_out)) - 1} false positives), in %"]
    if stored is not None:
        old = df[df["way"] == "old"].set_index(["label", "target"])
        mine = old.loc[list(zip(stored["label"], stored["target"])), list(FIGURES)].to_numpy()
        diff = np.abs(mine - stored[list(FIGURES)].to_numpy()).max()
        lines.append(f"check: 'old' reproduces the stored attack job's {len(stored)} RMIA rows: "
                     f"max |difference| of TPR@0.1%, TPR@1%, AUC = {diff:.1e}")
    same = all(np.array_equal(metrics.roc(n, k)[1], metrics.roc(r, k)[1]) and
               np.array_equal(metrics.roc(n, k)[0], metrics.roc(r, k)[0])
               for (label, way), pairs in arrays.items() if way == "new"
               for (n, k), (r, _) in zip(pairs, arrays[(label, "ratio")]))
    lines.append(f"check: per target, 'new' and 'ratio' give the identical ROC on every recipe: {same}")

    fp = wide.loc["fp32"]
    lines += ["", "FP32 targets, FP shadows: old / new / ratio",
              f"{'target':>6}  {'top ties m/n':>12}  {'TPR@0.1%':^20}  {'TPR@1%':^20}  {'AUC':^20}"]
    ties = df[(df["label"] == "fp32") & (df["way"] == "old")].set_index("target")
    three = lambda get: "  ".join(" ".join(pct(get(f, w)) for w in WAYS) for f in FIGURES)  # noqa: E731
    for target, row in fp.iterrows():
        t = ties.loc[target]
        lines.append(f"{target:>6}  {f'{t.top_members}/{t.top_nonmembers}':>12}  "
                     + three(lambda f, w: row[f, w]))
    mean = fp.mean()
    lines.append(f"{'mean':>6}  {'':>12}  " + three(lambda f, w: mean[f, w]))
    pooled = {w: stats.pooled_metrics(*zip(*arrays[("fp32", w)])) for w in WAYS}
    lines.append(f"{'pooled':>6}  {'':>12}  " + three(lambda f, w: pooled[w][f]))
    lines.append(f"(top ties: members / non-members sharing the old top score; pooled: one ROC over the "
                 f"{n_targets} targets, where 'ratio' is not on a common scale)")
    zero = {w: int((fp["tpr@0.001", w] == 0).sum()) for w in WAYS}
    lines.append(f"targets with TPR@0.1% = 0: old {zero['old']}, new {zero['new']}, ratio {zero['ratio']} "
                 f"of {len(fp)}")

    lines += ["", f"Every recipe, FP shadows: mean over the {n_targets} targets (targets at TPR@0.1% = 0) and pooled "
              f"over them; old -> new, in %",
              f"{'recipe':<24} {'TPR@0.1% mean':>20} {'(zeros)':>9} {'TPR@0.1% pooled':>17} {'TPR@1% mean':>17} "
              f"{'TPR@1% pooled':>17} {'AUC mean':>17}"]
    for label in dict.fromkeys(df["label"]):
        g = wide.loc[label]
        pool_w = {w: stats.pooled_metrics(*zip(*arrays[(label, w)])) for w in ("old", "new")}
        z = [int((g["tpr@0.001", w] == 0).sum()) for w in ("old", "new")]
        cell = lambda a, b: f"{pct(a)} -> {pct(b)}"  # noqa: E731
        lines.append(f"{label:<24} {cell(g['tpr@0.001', 'old'].mean(), g['tpr@0.001', 'new'].mean()):>20} "
                     f"{f'{z[0]} -> {z[1]}':>9} "
                     f"{cell(pool_w['old']['tpr@0.001'], pool_w['new']['tpr@0.001']):>17} "
                     f"{cell(g['tpr@0.01', 'old'].mean(), g['tpr@0.01', 'new'].mean()):>17} "
                     f"{cell(pool_w['old']['tpr@0.01'], pool_w['new']['tpr@0.01']):>17} "
                     f"{cell(g['auc', 'old'].mean(), g['auc', 'new'].mean()):>17}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the store (artifacts folder) holding the study's queries")
    parser.add_argument("--preset", default=str(REPO_ROOT / "params" / "default.yaml"))
    parser.add_argument("--out", default=str(RESULTS), help="where to write the figures ('' = print only)")
    args = parser.parse_args()
    cfg = load_preset(args.preset)
    store = ReadOnlyStore(Path(args.store))
    df, arrays, n_population = attack_rows(store, cfg)
    text = "\n".join(report(df, arrays, n_population, stored_rmia_rows(store, cfg), cfg, store)) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
