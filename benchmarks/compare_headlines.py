"""Does a rerun reproduce a committed study? Compare two headline.csv files row by row.

Usage: python benchmarks/compare_headlines.py COMMITTED.csv RERUN.csv [--note TEXT] [--out FILE]

For every recipe without a decoupled last layer (each attack and threat model): test accuracy,
pooled TPR@1%FPR and AUC in both, the two 95% intervals, the resolved/indicative labels at 1% FPR,
and whether the rerun's value lies inside the committed interval.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEY = ["attack", "threat model", "recipe"]


def compare(committed: pd.DataFrame, rerun: pd.DataFrame) -> str:
    m = committed.merge(rerun, on=KEY, suffixes=(" committed", " rerun"))
    m = m[m["last layer bits committed"].isna()].copy()
    for side in ("committed", "rerun"):
        m[f"1% CI {side}"] = [f"[{lo}, {hi}]" for lo, hi in zip(m[f"TPR@1%FPR low {side}"], m[f"TPR@1%FPR high {side}"])]
    cols = KEY[2:] + [f"{c} {side}" for c in ("test acc %", "TPR@1%FPR %", "AUC %") for side in ("committed", "rerun")]
    cols += ["1% CI committed", "1% CI rerun", "vs FP32 @1% committed", "vs FP32 @1% rerun"]
    same = (m["vs FP32 @1% committed"].fillna("") == m["vs FP32 @1% rerun"].fillna("")).all()
    tpr = (m["TPR@1%FPR % rerun"] - m["TPR@1%FPR % committed"]).abs().max()
    acc = (m["test acc % rerun"] - m["test acc % committed"]).abs().max()
    inside = m["TPR@1%FPR % rerun"].between(m["TPR@1%FPR low committed"], m["TPR@1%FPR high committed"]).sum()
    return "\n".join([
        m[cols].fillna("").to_string(index=False), "",
        f"resolved/indicative label at 1% FPR the same on every row: {same}",
        f"largest |difference|: pooled TPR@1%FPR {tpr:.2f} points, test accuracy {acc:.2f} points",
        f"rows whose rerun value lies inside the committed 95% interval: {inside} of {len(m)}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("committed", type=Path)
    parser.add_argument("rerun", type=Path)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, help="results file the comparison is appended to")
    args = parser.parse_args()
    for path in (args.committed, args.rerun):
        if not path.is_file():
            print(f"error: {path}: no such file (a study's headline.csv, e.g. reports/default/headline.csv)")
            return 2
    text = (args.note + "\n\n" if args.note else "") + compare(pd.read_csv(args.committed), pd.read_csv(args.rerun)) + "\n"
    if args.out:  # appended, as every benchmark's results file: earlier measurements stay
        with open(args.out, "a") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
