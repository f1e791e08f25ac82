"""The complete real-image study's figures, from the stored run of params/cifar10-10k.yaml.

Run (after `python -m ptqlib run params/cifar10-10k.yaml`):
    .venv/bin/python benchmarks/real_study.py [--preset params/cifar10-10k.yaml] [--log RUN_LOG]
        [--attack online] [--ablation]

Reads the attack job's stored rows and scores (nothing is recomputed) and writes, per threat model
(leave-one-out with FP shadows = the paper's; with shadows quantized like the target), one row per
recipe: pooled TPR at 0.1% and 1% FPR with 95% intervals (resampling whole targets), pooled AUC,
test accuracy mean +- std over targets, targets and pooled non-members, and whether the difference
from FP32 is 'resolved' (disjoint intervals) or 'indicative' (`ptqlib.results.resolved`).
Also: the FP32 pool's train/test accuracy, every model the fit check flags (and the pooled figures
without it), the stage wall times from the run's log (--log), and with --ablation the OBC BN
re-tuning ablation (`ablation` below). Output: printed and appended to benchmarks/results/real_study.txt.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.attacks import threat  # noqa: E402
from ptqlib.attacks.lira import logit_scores  # noqa: E402
from ptqlib.data.views import query_views  # noqa: E402
from ptqlib.models.training import accuracy, fit_warning, pool_outliers, predict_logits  # noqa: E402
from ptqlib.results import resolved, stats, tables  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402
from ptqlib.study.jobs.attack import shadow_pool  # noqa: E402
from ptqlib.study.jobs.base import load_data  # noqa: E402
from ptqlib.study.plan import plan_study  # noqa: E402
from ptqlib.study.presets import load_preset  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "real_study.txt"
THREATS = {"leave_one_out_fp": "FP shadows (the paper's threat model; leave-one-out over the pool)",
           "leave_one_out": "matched shadows (every shadow quantized like the target; leave-one-out)"}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def same_models_status(df: pd.DataFrame, arrays: dict, attack: str, threat_model: str, n_boot: int) -> dict:
    """Per recipe quantized on fewer pool models than FP32's: its status vs FP32 on exactly those models."""
    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    fp_targets = set(rows[rows["label"] == "fp32"]["target"])
    out = {}
    for label, group in rows[rows["label"] != "fp32"].groupby("label", sort=False):
        targets = set(group["target"])
        if targets == fp_targets:
            continue
        sub = rows[(rows["label"] == label) | ((rows["label"] == "fp32") & rows["target"].isin(targets))]
        table = tables.leakage_table(df.loc[sub.index], arrays, attack, threat_model, n_boot=n_boot)
        st = resolved.versus_fp32(table).set_index("label").loc[label]
        fp = table[table["label"] == "fp32"].iloc[0]
        out[label] = (f"  [vs FP32 on models {sorted(targets)}: TPR {pct(fp['tpr@0.001'])} / {pct(fp['tpr@0.01'])}, "
                      f"{st['status@0.001']} / {st['status@0.01']}]")
    return out


def recipe_rows(df: pd.DataFrame, arrays: dict, attack: str, threat_model: str, n_boot: int) -> list[str]:
    table = tables.leakage_table(df, arrays, attack, threat_model, n_boot=n_boot)
    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    status = resolved.versus_fp32(table).set_index("label")
    same = same_models_status(df, arrays, attack, threat_model, n_boot)
    lines = [f"{'recipe':<18} {'TPR@0.1% [95% CI]':>24} {'TPR@1% [95% CI]':>24} {'AUC':>6} "
             f"{'test acc % (mean +- std)':>24} {'models':>6} {'non-members':>11}  vs FP32 @0.1% / @1%"]
    for _, r in table.iterrows():
        cells = [f"{pct(r[f'tpr@{x:g}'])} [{pct(r[f'tpr@{x:g}_ci_low'])}, {pct(r[f'tpr@{x:g}_ci_high'])}]"
                 for x in (0.001, 0.01)]
        vs = "" if r["label"] == "fp32" else \
            f"  {status.loc[r['label'], 'status@0.001']} / {status.loc[r['label'], 'status@0.01']}"
        n_out = int(rows.loc[rows["label"] == r["label"], "n_nonmembers"].sum())  # pooled, exact
        lines.append(f"{r['label']:<18} {cells[0]:>24} {cells[1]:>24} {r['auc']:6.4f} "
                     f"{pct(r['test_acc']) + ' +- ' + pct(r['test_acc_std']):>24} {int(r['targets']):>6} "
                     f"{n_out:>11}{vs}{same.get(r['label'], '')}")
    return lines


def stage_times(log: Path | None) -> list[str]:
    if log is None or not log.is_file():
        return ["stage times: no run log given"]
    text = log.read_text(errors="replace").replace("\r", "\n")
    found = re.findall(r"\[\d/\d\] (\w+).*?\n\s+(done|failed) in ([0-9.]+) s", text, flags=re.S)
    total = sum(float(t) for _, _, t in found)
    real = re.search(r"real\s+(\S+)", text)
    return ([f"stage wall times: " + ", ".join(f"{s} {float(t):.0f} s ({st})" for s, st, t in found)]
            + [f"sum of stages {total:.0f} s = {total / 60:.1f} min; whole command (time): "
               f"{real.group(1) if real else '?'}"])


def fit_lines(store: Store, cfg, attack_df: pd.DataFrame, arrays: dict, attack: str) -> list[str]:
    p = plan_study(cfg)
    models = [*p.targets, *p.shadows]
    metas = {(j.role, j.index): store.meta(j) for j in models}
    num_classes = next(iter(metas.values())).get("num_classes", 10)
    pool = [metas[("shadow", j.index)] for j in p.shadows]
    train, test = np.array([m["train_acc"] for m in pool]), np.array([m["test_acc"] for m in pool])
    lines = [f"FP32 pool ({len(pool)} models, {pool[0]['train_examples']} members each): train "
             f"{pct(train.mean())} +- {pct(train.std(ddof=1))}% (min {pct(train.min())}), test "
             f"{pct(test.mean())} +- {pct(test.std(ddof=1))}% (range {pct(test.min())}-{pct(test.max())}%)"]
    for (role, index), m in metas.items():
        lines.append(f"   {role} {index:2d}: train {pct(m['train_acc'])}%, test {pct(m['test_acc'])}%, "
                     f"{m.get('wall_s', float('nan')):.0f} s")
    misfits = [(role, i, m) for (role, i), m in metas.items()
               if fit_warning(m["train_acc"], m["test_acc"], num_classes)]
    outliers = pool_outliers({(role, i): m["train_acc"] for (role, i), m in metas.items()})
    misfits += [(role, i, metas[(role, i)]) for role, i in outliers if all((role, i) != (r, j) for r, j, _ in misfits)]
    if not misfits:
        lines.append("fit check, every model on its own and against the pool's median: no model flagged")
        return lines
    for role, i, m in misfits:
        lines.append(f"fit check: {role} {i} did not fit (train {pct(m['train_acc'])}%, test {pct(m['test_acc'])}%; "
                     f"pool median train {pct(float(np.median(train)))}%): flagged by the pool-median rule")
    pool_misfits = {i for role, i, _ in misfits if role == "shadow"}
    for tm in THREATS:
        rows = attack_df[(attack_df["threat_model"] == tm) & (attack_df["attack"] == attack)]
        if rows.empty or not pool_misfits:
            continue
        kept = attack_df.index.isin(rows.index[~rows["target"].isin(pool_misfits)])
        sub = attack_df[kept].reset_index(drop=True)
        sub_arrays = {k: v[kept] for k, v in arrays.items()}
        full = tables.leakage_table(attack_df, arrays, attack, tm, 0).set_index("label")
        without = tables.leakage_table(sub, sub_arrays, attack, tm, 0).set_index("label")
        lines.append(f"{tm}: pooled TPR@0.1% / @1% with vs without pool model(s) {sorted(pool_misfits)} as a target "
                     f"(they stay among the others' shadows):")
        for label in without.index:
            a, b = full.loc[label], without.loc[label]
            lines.append(f"   {label:<26} {pct(a['tpr@0.001'])} / {pct(a['tpr@0.01'])}  ->  "
                         f"{pct(b['tpr@0.001'])} / {pct(b['tpr@0.01'])}  ({int(b['targets'])} models)")
    return lines


def ablation(store: Store, cfg, attack: str, labels_wanted: tuple[str, ...] = (), n_boot: int = 200) -> list[str]:
    """OBC's BN re-tuning on the pool (the study's), on the members only, and none, on the OBC models.

    The stored OBC model was re-tuned on the pool; re-tuning resets every BN's statistics, so the
    members variant is the stored model re-tuned again from the members (same batches' generator),
    and the none variant carries the full-precision model's BN statistics (quantization changes only
    weights). Each is queried with the study's views and attacked with the FP pool minus its source.
    The pool variant is re-tuned again too and must equal the stored model (checked). One row per
    recipe and variant, pooled over the OBC models (95% interval resampling models) when there are
    several; `labels_wanted` limits the recipes (e.g. "obc 1.58b").
    """
    p = plan_study(cfg)
    data = load_data(p.shadows[0].data, store)
    labels = data.y_train.numpy()
    fp_queries = [q for q in p.queries if q.model in p.shadows]
    fp_pool = shadow_pool(store, fp_queries, labels, None)
    obc = [q for q in p.quantized_shadows if q.method in ("obc", "gptq") and q.bn_retune is not None
           and (not labels_wanted or q.label in labels_wanted)]
    views = dict(mode=cfg.queries, shift=cfg.query_shift if cfg.queries in ("shift", "mirror_shift") else 0)
    variants = ("pool (authors)", "members", "none")
    runs = {}  # (label, variant) -> lists of scores, members, accuracies
    reproduced = 0
    for q in obc:
        stored = q.load(store)
        fp_model = q.source.load(store)
        members = q.keep(store)
        retuned = copy.deepcopy(stored)
        q.retune(retuned, data, members)
        reproduced += all(torch.equal(a, b) for a, b in zip(stored.state_dict().values(), retuned.state_dict().values()))
        members_model = copy.deepcopy(stored)
        dataclasses.replace(q, bn_retune=dataclasses.replace(q.bn_retune, source="members")).retune(
            members_model, data, members)
        none_model = copy.deepcopy(stored)
        bn_state = {k: v for k, v in fp_model.state_dict().items() if "running" in k or "num_batches" in k}
        none_model.load_state_dict({**none_model.state_dict(), **bn_state})
        for name, model in zip(variants, (stored, members_model, none_model)):
            logits = torch.stack([predict_logits(model, v) for v in
                                  query_views(data.x_train, data.normalize, **views)], dim=1)
            scores = logit_scores(logits.numpy().astype(np.float32), labels)
            score = threat.attack_target(fp_pool, scores, [attack], exclude=q.train_job.index)[attack]
            run = runs.setdefault((q.label, name), {"scores": [], "members": [], "acc": []})
            run["scores"].append(score)
            run["members"].append(members)
            run["acc"].append(accuracy(model, data))
        print(f"   ablation: {q.label}, model {q.train_job.index} done", flush=True)
    models = sorted({q.train_job.index for q in obc})
    lines = [f"OBC BN re-tuning ablation ({attack}, FP shadows = the other {len(fp_queries) - 1} FP pool models; "
             f"pooled over OBC models {models}, 95% intervals resampling models):",
             f"   {'recipe':<20} {'BN re-tuning':<14} {'test % (mean)':>13} {'TPR@0.1% [95% CI]':>22} "
             f"{'TPR@1% [95% CI]':>22}"]
    for (label, name), run in runs.items():
        sc, mem = np.stack(run["scores"]), np.stack(run["members"])
        tpr = stats.pooled_low_fpr_tprs(sc, mem)
        ci = tables._pooled_ci(sc, mem, n_boot) if len(sc) > 1 else {}
        cells = [f"{pct(tpr[f'tpr@{x:g}'])} [{pct(ci.get(f'tpr@{x:g}_ci_low', np.nan))}, "
                 f"{pct(ci.get(f'tpr@{x:g}_ci_high', np.nan))}]" for x in (0.001, 0.01)]
        lines.append(f"   {label:<20} {name:<14} {pct(np.mean(run['acc'])):>13} {cells[0]:>22} {cells[1]:>22}")
    lines.append(f"   (re-tuning a stored model on the pool again reproduces it exactly: {reproduced} of {len(obc)})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default=str(ROOT / "params" / "cifar10-10k.yaml"))
    ap.add_argument("--log", default=None)
    ap.add_argument("--attack", default="online")
    ap.add_argument("--n-boot", type=int, default=200)  # as the report (tables.POOLED_BOOTSTRAP)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--ablation-labels", default="", help="comma-separated OBC recipes for the ablation (default: all)")
    ap.add_argument("--out", default=str(OUT), help="results file the figures are appended to")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_preset(args.preset)
    store = Store(cfg.store_path)
    job = plan_study(cfg).attack
    out = store.require(job, "attack results")
    df = pd.read_csv(out / "metrics.csv")
    arrays = {"scores": np.load(out / "scores.npy"), "members": np.load(out / "members.npy")}
    lines = [f"real_study: {args.preset}, attack {args.attack}, {time.strftime('%Y-%m-%d %H:%M')}",
             *stage_times(Path(args.log) if args.log else None),
             *fit_lines(store, cfg, df, arrays, args.attack)]
    for tm, title in THREATS.items():
        if (df["threat_model"] == tm).any():
            lines += ["", f"{title}:", *recipe_rows(df, arrays, args.attack, tm, args.n_boot)]
    if args.ablation:
        wanted = tuple(x.strip() for x in args.ablation_labels.split(",") if x.strip())
        lines += ["", *ablation(store, cfg, args.attack, wanted, args.n_boot)]
    lines.append(f"(real_study.py wall {time.perf_counter() - t0:.0f} s)")
    text = "\n".join(lines) + "\n\n"
    print(text)
    with open(args.out, "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
