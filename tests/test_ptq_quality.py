"""End-to-end quality on the digits default: the calibrated methods must beat RTN where RTN hurts.

Targets are trained with the default recipe (40 epochs) and quantized with the options the
default study's quantize jobs carry, on their calibration set.
"""
import numpy as np
import pytest
import torch

from ptqlib.study.config import StudyConfig
from ptqlib.data.images import load_digits_data
from ptqlib.models.zoo import DigitsCNN, quantizable_layers
from ptqlib.study.plan import plan_study as study_plan, quantize_job
from ptqlib.ptq import layer_bits_plan, quantize_model
from ptqlib.models.training import accuracy, train_model

TARGETS = 2
METHODS = ("rtn", "adaround", "brecq", "obc")


@pytest.fixture(scope="module")
def table():
    torch.set_num_threads(1)  # 2 OpenMP threads stall badly on a shared, oversubscribed CPU
    cfg = StudyConfig()  # the default study: AdaRound/BRECQ 300 iterations at lr 0.03, 512 calibration images
    data = load_digits_data(cfg.test_fraction)
    rows = []
    for index, target in enumerate(study_plan(cfg).targets[:TARGETS]):
        keep = target.members(len(data.y_train))
        torch.manual_seed(index)
        model = DigitsCNN()
        train_model(model, data, keep, **target.training_options(), seed=index, device=torch.device("cpu"))
        jobs = {m: quantize_job(cfg, target, {"method": m, "bits": 2, "last_layer_bits": None}) for m in METHODS}
        calib = jobs["adaround"].calibration_set(data, keep)
        names = [n for n, _ in quantizable_layers(model)]
        rows.append({("fp32", 32): accuracy(model, data)})
        for bits in (4, 2, 1.58):
            plan = layer_bits_plan(names, bits)
            for method in METHODS:
                qmodel, _ = quantize_model(model, method, plan, None if method == "rtn" else calib,
                                           **dict(jobs[method].options))
                rows[-1][(method, bits)] = accuracy(qmodel, data)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("\nmean test accuracy over", TARGETS, "targets:",
          {f"{m} {b}": round(v, 4) for (m, b), v in mean.items()})
    return mean


@pytest.mark.parametrize("bits", [2, 1.58])
@pytest.mark.parametrize("method", ["adaround", "brecq", "obc"])
def test_calibrated_methods_beat_rtn_at_low_bits(table, method, bits):
    assert table[(method, bits)] > table[("rtn", bits)], table


@pytest.mark.parametrize("method", METHODS)
def test_four_bits_is_within_one_point_of_fp32(table, method):
    assert table[(method, 4)] >= table[("fp32", 32)] - 0.01, table
