"""Every report figure renders from a smoke store; the finding and the index page say what the table says."""
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ptqlib.results import tables as analysis
from ptqlib.results import figures, finding
from ptqlib.study import config, presets
from ptqlib.results import metrics
from ptqlib.study import stages as pipeline
from ptqlib.results import index as report  # noqa: E402
from ptqlib.runner import PAGES  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke study built once per session (run_all is idempotent), and its attack results."""
    store = tmp_path_factory.getbasetemp() / "smoke_store"
    cfg = config.validate({**presets.read_preset(ROOT / "params" / "smoke.yaml"), "store": str(store),
                           "reports": str(tmp_path_factory.getbasetemp() / "reports"), "name": "smoke"})
    pipeline.run_all(cfg)
    results, arrays = pipeline.load_attack_results(cfg, Store(cfg.store))
    return cfg, results, arrays, analysis.leakage_table(results, arrays, n_boot=20)


def _figures(smoke):
    cfg, results, arrays, table = smoke
    return {"leakage_by_bits": figures.leakage_by_bits(results, arrays, table=table),
            "privacy_utility": figures.privacy_utility_plot(
                table, reference=analysis.paper_reference("cifar100", "resnet18")),
            "roc_panels": figures.roc_panels(results, arrays)}


def test_every_report_figure_renders_with_labels_and_short_legends(smoke):
    for name, fig in _figures(smoke).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=60)
        assert buf.tell() > 5_000, name
        for ax in fig.axes:
            assert ax.get_xlabel(), f"{name}: an axis without an x label"
            legend = ax.get_legend()
            if legend is not None:
                assert len(legend.get_texts()) <= figures.MAX_LEGEND_ENTRIES, name
        assert fig.axes[0].get_ylabel(), f"{name}: no y label"
        matplotlib.pyplot.close(fig)


def test_leakage_table_is_the_pooled_roc_of_each_recipe(smoke):
    _, results, arrays, table = smoke
    rows = results[(results["attack"] == "online") & (results["threat_model"] == "fp_shadows")]
    for _, r in table.iterrows():
        idx = rows.index[rows["label"] == r["label"]].to_numpy()
        slow = metrics.attack_metrics(np.concatenate(arrays["scores"][idx]), np.concatenate(arrays["members"][idx]))
        assert r["tpr@0.01"] == slow["tpr@0.01"] and r["n_nonmembers"] == slow["n_nonmembers"]
        assert r["tpr@0.01_target_mean"] == pytest.approx(rows.loc[idx, "tpr@0.01"].mean())
        assert r["tpr@0.01_ci_low"] <= r["tpr@0.01_ci_high"]
    assert table["label"].iloc[0] == "fp32" and len(table) == 1 + len(smoke[0].recipes())


def test_finding_on_the_smoke_study_quotes_its_table(smoke):
    table = smoke[3]
    sentence = finding.finding(table)
    fpr, _ = finding.headline_fpr(table)
    fp = table[table["method"] == "fp32"].iloc[0]
    assert f"{100 * fp[f'tpr@{fpr:g}']:.1f}%" in sentence and f"pooled over {int(fp['targets'])} models" in sentence
    digits = 2 if fpr < 0.01 else 1  # TPRs at 0.1% FPR are quoted to two decimals
    quoted = {float(x) for x in re.findall(r"(\d+\.\d+)%(?! FPR| of non-members| \(pooled)", sentence)}  # TPRs, not FPRs
    assert quoted <= {round(100 * v, digits) for v in table[f"tpr@{fpr:g}"]}
    assert f"a random guess would find {100 * fpr:g}%" in sentence


def leakage_rows(n_nonmembers):
    """A hand-made leakage table: FP32 at 6.4%, AdaRound 1.58b at 1.4% losing 0.3 pt, RTN 1.58b at 0.5%
    losing 9 pt, RTN 4b as leaky as FP32."""
    rows = [("fp32", 32, 0.990, 0.064), ("rtn", 4, 0.989, 0.064), ("adaround", 1.58, 0.987, 0.014),
            ("rtn", 1.58, 0.900, 0.005)]
    return pd.DataFrame([{"attack": "online", "method": m, "bits": b, "last_layer_bits": np.nan,
                          "label": "fp32" if m == "fp32" else f"{m} {b:g}b", "targets": 8, "test_acc": acc,
                          "tpr@0.001": tpr / 4, "tpr@0.01": tpr, "n_nonmembers": n_nonmembers}
                         for m, b, acc, tpr in rows])


def test_finding_names_the_best_affordable_recipe_and_the_lowest_leak():
    sentence = finding.finding(leakage_rows(5392))  # 8 x 674 digits non-members: resolves 1%, not 0.1%
    assert sentence.startswith(
        "The attack, LiRA online (it compares an example's score with shadow models trained with and without that "
        "example), finds 6.4% of the full-precision (FP32) model's training members when it may wrongly accuse 1% "
        "of non-members; a random guess would find 1% (pooled over 8 models). 1.58-bit AdaRound, which loses 0.3 "
        "percentage points of test accuracy, lowers that to 1.4%.")
    assert "The lowest leak, 0.5%, comes from 1.58-bit RTN, which loses 9.0 percentage points of test accuracy." \
        in sentence
    assert "indicative" not in sentence and "resolved" not in sentence  # no intervals in this table


def with_intervals(table, half_widths):
    """`table` with pooled 95% intervals of the given half-width per recipe at both FPRs."""
    table = table.copy()
    for x in metrics.LOW_FPRS:
        table[f"tpr@{x:g}_ci_low"] = table[f"tpr@{x:g}"] - half_widths
        table[f"tpr@{x:g}_ci_high"] = table[f"tpr@{x:g}"] + half_widths
    return table


def test_finding_says_resolved_or_indicative_from_the_intervals():
    # AdaRound 1.4% +- 0.4 vs FP32 6.4% +- 0.4: disjoint; RTN 1.58b 0.5% +- 0.4: disjoint as well
    resolved = finding.finding(with_intervals(leakage_rows(5392), np.array([0.004] * 4)))
    assert "lowers that to 1.4% — resolved: the 95% intervals do not overlap (1.0–1.8 against FP32's 6.0–6.8)" \
        in resolved
    # wide intervals (+- 3 pt) overlap FP32's: the same cut is only indicative
    wide = finding.finding(with_intervals(leakage_rows(5392), np.array([0.03] * 4)))
    assert "lowers that to 1.4% — indicative only: the 95% intervals overlap" in wide
    assert "number 0 at 0.1% FPR and 0 at 1% FPR; every other difference is indicative" in wide


def test_finding_uses_the_lowest_resolvable_fpr_and_says_indicative_when_none_is():
    assert "finds 1.60% of the full-precision" in finding.finding(leakage_rows(100_000))  # 100 false positives at 0.1%
    thin = finding.finding(leakage_rows(674))  # one target's non-members: 6.7 false positives at 1%
    assert "indicative" in thin and "674 pooled non-members" in thin


def test_index_opens_with_the_finding_then_the_headline_figure_then_the_table(smoke, tmp_path):
    cfg, results, arrays, table = smoke
    (tmp_path / "finding.txt").write_text(finding.finding(table) + "\n")
    analysis.headline(table).to_csv(tmp_path / "headline.csv", index=False)
    for name, fig in _figures(smoke).items():
        fig.savefig(tmp_path / f"{name}.png", dpi=40)
    page = report.write_index(cfg, tmp_path, {"train": ("done", 1.0), "attack": ("failed", 2.0)}, PAGES).read_text()
    positions = [page.index(s) for s in (finding.finding(table)[:40], "src='leakage_by_bits.png'",
                                         "<table", "src='privacy_utility.png'", "04_attack.html")]
    assert positions == sorted(positions)
    assert "class='failed'" in page


def test_index_without_analysis_outputs_says_so(smoke, tmp_path):
    page = report.write_index(smoke[0], tmp_path, {}, PAGES).read_text()
    assert "No finding yet" in page and "<img" not in page


def default_sized_table():
    """FP32 + 4 methods x 4 bit widths x (plain, 8-bit last): the default study's 33 recipes, leakage
    falling with bits, FP32 8% [7, 9]; 8-bit and 4-bit recipes overlap FP32's interval, the rest do not."""
    rows = [("fp32", 32, np.nan, 0.99, 0.08)]
    for method in ("rtn", "adaround", "brecq", "obc"):
        for bits, tpr in ((8, 0.08), (4, 0.075), (2, 0.04), (1.58, 0.02)):
            rows += [(method, bits, last, 0.98, tpr) for last in (np.nan, 8)]
    table = pd.DataFrame([{"attack": "online", "threat_model": "fp_shadows", "method": m, "bits": b,
                           "last_layer_bits": last, "label": "fp32" if m == "fp32" else f"{m} {b:g}b" + (
                               "" if np.isnan(last) else " + 8b last"), "targets": 8, "n_nonmembers": 5392,
                           "test_acc": acc, "test_acc_std": 0.004, "tpr@0.001": tpr / 4, "tpr@0.01": tpr,
                           "auc": 0.6} for m, b, last, acc, tpr in rows])
    return with_intervals(table, np.full(len(table), 0.01))


def test_index_tables_fit_at_a_glance_and_flag_only_unresolved_leaks(smoke, tmp_path):
    head = analysis.headline(default_sized_table())
    head.to_csv(tmp_path / "headline.csv", index=False)
    page = report.write_index(smoke[0], tmp_path, {}, PAGES).read_text()
    tables = re.findall(r"<table>.*?</table>", page, flags=re.S)
    main, decoupled = tables[0], tables[1]
    assert main.count("<tr") <= 12 + 2  # FP32 + 4 methods, plus two header rows
    assert "<h3>With an 8-bit last layer</h3>" in page and decoupled.count("<tr") == main.count("<tr")
    # the leak read at 1% FPR (5,392 non-members do not resolve 0.1%): 8- and 4-bit overlap FP32 [7, 9] -> flagged
    body = main.split("</tr>", 3)[3]  # after the two header rows and FP32's row
    assert body.count("⚠") == 4 * 2  # 4 methods x (8-bit, 4-bit)
    assert "7.50 ⚠" in body and "4.00</td>" in body and "2.00</td>" in body
    assert page.count("not resolved from FP32") == 1  # one footnote
    assert "leak 8.00% [7.00, 9.00]" in main and "a random guess finds 1%" in page
    assert "white-space:nowrap" in page


def test_a_recipe_on_few_models_neither_lowers_the_headline_fpr_nor_enters_the_ranking():
    """48,000 FP32 non-members resolve 0.1% FPR; an OBC row on one model (3,000) cannot: the finding
    still reads 0.1% and ranks only the recipes that resolve it."""
    table = leakage_rows(48_000)
    obc = table.iloc[[2]].assign(method="obc", label="obc 1.58b", tpr=0.0, n_nonmembers=3000, targets=1)
    obc["tpr@0.001"] = 0.0
    table = pd.concat([table, obc], ignore_index=True)
    assert finding.headline_fpr(table) == (0.001, False)
    sentence = finding.finding(table)
    assert "wrongly accuse 0.1% of non-members" in sentence and "OBC" not in sentence


def test_attack_overview_counts_and_names_the_rmia_population():
    rows = pd.DataFrame([{"threat_model": "fp_shadows", "target": t, "label": label, "attack": attack,
                          "rmia_population": 450 if attack == "rmia" else np.nan}
                         for t in range(2) for label in ("fp32", "rtn 4b") for attack in ("online", "rmia")])
    text = analysis.attack_overview(rows)
    assert text.startswith("Scored 2 target models x 2 recipes x 2 attacks (8 results) under FP shadows (paper).")
    assert "population of 450 held-out points" in text
    assert "RMIA" not in analysis.attack_overview(rows[rows["attack"] == "online"])
