"""The headline figure and the paper's published points drawn beside ours."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import pandas as pd  # noqa: E402

from ptqlib.results import figures  # noqa: E402
from ptqlib.results import tables as analysis  # noqa: E402


def summary_rows(n_nonmembers=48_000):
    """A leakage table (pooled figures with intervals): 48,000 pooled non-members resolve 0.1% FPR."""
    rows = []
    for method, bits, acc, tpr in [("fp32", 32, 0.99, 0.03), ("rtn", 4, 0.99, 0.02), ("rtn", 1.58, 0.92, 0.0),
                                   ("obc", 1.58, 0.98, 0.001)]:
        rows.append({"attack": "online", "threat_model": "fp_shadows", "method": method, "bits": bits,
                     "last_layer_bits": np.nan, "label": "fp32" if method == "fp32" else f"{method} {bits}b",
                     "test_acc": acc, "test_acc_std": 0.001, "tpr@0.001": tpr, "tpr@0.001_ci_low": 0.8 * tpr,
                     "tpr@0.001_ci_high": 1.2 * tpr + 1e-4, "tpr@0.01": 5 * tpr, "tpr@0.01_ci_low": 4 * tpr,
                     "tpr@0.01_ci_high": 6 * tpr + 1e-3, "targets": 16, "n_nonmembers": n_nonmembers})
    return pd.DataFrame(rows)


def test_paper_reference_is_shipped_for_cifar100_resnet18_only():
    ref = analysis.paper_reference("cifar100", "resnet18")
    assert ref is not None and len(ref) == 10
    assert set(ref["method"]) == {"fp32", "adaround", "brecq", "obc"}
    fp = ref[ref["method"] == "fp32"].iloc[0]
    assert fp["test_acc_pct"] == 70.05 and 0 < fp["tpr_at_0.1pct_fpr"] < 1  # a fraction, drawn as %
    assert analysis.paper_reference("digits", "digits_cnn") is None
    assert analysis.paper_reference("cifar100", "densenet121") is None
    assert analysis.paper_reference("cifar100", "resnet18", attack="rmia") is None  # only LiRA online is published


def test_privacy_utility_plot_draws_the_reference_points():
    ref = analysis.paper_reference("cifar100", "resnet18")
    fig = figures.privacy_utility_plot(summary_rows(), reference=ref)
    ax = fig.axes[0]
    assert any("auto_last_8bit" in t.get_text() for t in fig.texts)  # names the variant it compares with
    labels = ax.get_legend_handles_labels()[1]
    assert "the paper's Fig. 1" in labels and "FP32" in labels
    notes = [t.get_text() for t in ax.texts]
    named = [n for note in notes for n in note.split(", ")]
    assert sorted(named) == sorted(["FP32"] + [f"{m} {b:g}b" for m in ("adaround", "brecq", "obc") for b in (4, 2, 1.58)])
    assert len(notes) < len(ref)  # FP32 and the three 4-bit points overlap: one label for the group
    # the paper's smallest TPR (0.11%, BRECQ 1.58b) sits at its value, not at a floor made from ours
    (crosses,) = [c for c in ax.collections if c.get_label() == "the paper's Fig. 1"]
    assert crosses.get_offsets()[:, 1].min() == pytest.approx(100 * 0.0011)
    # a zero TPR (RTN 1.58b here) is drawn at the floor, not dropped from the log axis
    ys = [y for bars in ax.containers for y in np.atleast_1d(bars.lines[0].get_ydata())]
    assert len(ys) == 3 and min(ys) > 0  # the three quantized recipes; FP32 is the reference line
    (fp_line,) = [line for line in ax.lines if line.get_label() == "FP32"]
    assert fp_line.get_ydata()[0] == pytest.approx(100 * 0.03)


def test_privacy_utility_plot_without_reference():
    ax = figures.privacy_utility_plot(summary_rows()).axes[0]
    assert "the paper's Fig. 1" not in ax.get_legend_handles_labels()[1] and not ax.texts


def test_privacy_utility_plot_draws_the_pooled_leak_at_the_resolved_fpr_with_its_interval():
    """5,392 pooled non-members resolve 1% FPR, not 0.1%: the y axis is TPR@1%, the paper's TPR@0.1%
    points are left out (another metric), and each bar spans the recipe's pooled 95% interval."""
    ref = analysis.paper_reference("cifar100", "resnet18")
    fig = figures.privacy_utility_plot(summary_rows(5392), reference=ref)
    ax = fig.axes[0]
    assert "1% FPR" in ax.get_ylabel() and "the paper's Fig. 1" not in ax.get_legend_handles_labels()[1]
    obc = [bars for bars in ax.containers if bars.lines[0].get_ydata()[0] == pytest.approx(100 * 0.005)]
    (segments,) = [c.get_segments() for c in obc[0].lines[2]]
    assert segments[0][:, 1].min() == pytest.approx(100 * 0.004) and segments[0][:, 1].max() == pytest.approx(100 * 0.007)


def test_every_method_keeps_its_colour_whichever_methods_a_study_runs():
    assert figures._method_colours(["obc"])["obc"] == figures._method_colours(["rtn", "adaround", "obc"])["obc"]
    colours = figures._method_colours(["rtn", "adaround", "brecq", "obc", "gptq"])
    assert len(set(colours.values())) == 5
