"""Reference implementations used only by the tests: LiRA written the plain way, one example at
a time (slow, obviously correct), and the reference code's IN/OUT split."""
import numpy as np
from scipy.stats import norm

from ptqlib.attacks import lira


def attack(name, shadow, keep, target):
    """One named attack the library's one way: fit the shadow statistics, score the target."""
    return lira.score_attacks(lira.fit_shadow_stats(shadow, keep), target, [name])[name]


def slow_lira(name, shadow, keep, target):
    """Straightforward per-example loops; IN/OUT lists in model order, truncated to the min count."""
    m, n, q = shadow.shape
    ins = [[i for i in range(m) if keep[i, j]] for j in range(n)]
    outs = [[i for i in range(m) if not keep[i, j]] for j in range(n)]
    k_in, k_out = min(map(len, ins)), min(map(len, outs))
    ins, outs = [x[:k_in] for x in ins], [x[:k_out] for x in outs]
    in_vals = [[[shadow[i, j, a] for i in ins[j]] for a in range(q)] for j in range(n)]
    out_vals = [[[shadow[i, j, a] for i in outs[j]] for a in range(q)] for j in range(n)]
    mu_in = [[np.median(v) for v in row] for row in in_vals]
    mu_out = [[np.median(v) for v in row] for row in out_vals]
    all_in = [x for row in in_vals for v in row for x in v]
    all_out = [x for row in out_vals for v in row for x in v]
    res_in = [x - mu_in[j][a] for j in range(n) for a in range(q) for x in in_vals[j][a]]
    res_out = [x - mu_out[j][a] for j in range(n) for a in range(q) for x in out_vals[j][a]]
    eps = 1e-30
    result = []
    for j in range(n):
        terms = []
        for a in range(q):
            t = target[j, a]
            sd_in, sd_out = np.std(in_vals[j][a]), np.std(out_vals[j][a])
            if name in ("online_fixed",):
                sd_in = sd_out = np.std(all_in)
            if name in ("offline_fixed", "offline_one_sided_fixed"):
                sd_out = np.std(all_out)
            if name.endswith("fixed_residual"):
                sd_in, sd_out = np.std(res_in), np.std(res_out)
            if name.startswith("online"):
                terms.append(norm.logpdf(t, mu_in[j][a], sd_in + eps) - norm.logpdf(t, mu_out[j][a], sd_out + eps))
            elif name.startswith("offline_one_sided"):
                terms.append(norm.logcdf(t, mu_out[j][a], sd_out + eps))
            elif name.startswith("offline"):
                terms.append(-norm.logpdf(t, mu_out[j][a], sd_out + eps))
            else:
                terms.append(t)
        result.append(np.mean(terms))
    return np.array(result)



def split_in_out(shadow_scores, shadow_keep):
    """IN and OUT score arrays (k_in, N, Q) and (k_out, N, Q), truncated to the smallest count per
    side, models in order: the reference code's argsort + gather."""
    keep = np.asarray(shadow_keep, dtype=bool)
    k_in, k_out = int(keep.sum(axis=0).min()), int((~keep).sum(axis=0).min())
    in_first = np.argsort(~keep, axis=0, kind="stable")[:k_in]   # model ids, IN models first
    out_first = np.argsort(keep, axis=0, kind="stable")[:k_out]
    return (np.take_along_axis(shadow_scores, in_first[..., None], axis=0),
            np.take_along_axis(shadow_scores, out_first[..., None], axis=0))
