"""Compare the attack outputs of two runs of one preset (two repository roots): metrics.csv (every column),
scores.npy, members.npy, and the report's summary.csv. usage: compare_runs.py PRESET_NAME BEFORE_ROOT AFTER_ROOT
import sys, glob, pathlib
import numpy as np, pandas as pd
name, before, after = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
def attack_dir(root):
    # the attack job dir whose metrics.csv has the preset's rows: pick via the report's provenance: newest attack dir
    dirs = sorted(glob.glob(str(root / "artifacts" / "attack" / "*" / "metrics.csv")))
    return dirs
b, a = attack_dir(before), attack_dir(after)
print("attack jobs", len(b), len(a))
def load(d):
    d = pathlib.Path(d).parent
    return pd.read_csv(d / "metrics.csv"), np.load(d / "scores.npy"), np.load(d / "members.npy")
# match by row count + content
for db in b:
    mb, sb, kb = load(db)
    for da in a:
        ma, sa, ka = load(da)
        if ma.shape == mb.shape:
            same_cols = all(ma[c].equals(mb[c]) for c in mb.columns) and list(ma.columns) == list(mb.columns)
            print(pathlib.Path(db).parent.name, "->", pathlib.Path(da).parent.name, "rows", len(mb),
                  "metrics identical:", same_cols, "scores identical:", np.array_equal(sa, sb),
                  "members identical:", np.array_equal(ka, kb), "same key:", pathlib.Path(db).parent.name == pathlib.Path(da).parent.name)
sb_ = pd.read_csv(before / "reports" / name / "summary.csv"); sa_ = pd.read_csv(after / "reports" / name / "summary.csv")
print("summary.csv identical:", sb_.equals(sa_), sb_.shape)
