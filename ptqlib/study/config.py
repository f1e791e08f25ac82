"""The study's configuration schema: every key, its default, rule and doc -> one frozen `StudyConfig`.

Every key is declared once, below, with its default, its rule (type, allowed values or
bounds) and a one-line doc. The defaults ARE the default study (digits, offline, 2 CPU cores):
a preset in params/ holds only its differences, and a notebook opened without parameters
runs the default study. `validate(raw)` turns a flat dict of literals into the config; its
readers (YAML presets, notebook parameters, retired keys) are in `study.presets`. Every error
is a `ConfigError` whose message is one line naming the key and what is valid.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ptqlib.errors import ConfigError

VALID_BITS = (1.58, 2, 3, 4, 5, 6, 7, 8)
STAGES = ("train", "shadows", "quantize", "attack", "analysis", "extras")  # extras: only when a preset turns one on
# The repository root: relative paths in a preset (store, reports, data_root) are resolved from
# here, so the command line and a notebook opened in notebooks/ see the same store.
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def key(default, doc: str, *, choices: tuple | None = None, each: tuple | None = None,
        at_least: float | None = None, above: float | None = None, below: float | None = None,
        kind: str | None = None):
    """A config key: its default, one-line doc and rule, kept beside its field.

    choices: allowed values; each: allowed values of every list item; at_least / above / below:
    numeric bounds (inclusive, exclusive, exclusive); kind: 'bits', 'bits_or_null' (list items),
    'layer_bits' (mapping layer -> bits), 'optional_float' (a number or null).
    """
    default_factory = (lambda: dict(default)) if isinstance(default, dict) else None
    meta = {"doc": doc, "choices": choices, "each": each, "at_least": at_least, "above": above,
            "below": below, "kind": kind}
    if default_factory:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


ATTACKS = ("online", "online_fixed", "offline", "offline_fixed", "offline_one_sided", "global",
           "online_fixed_residual", "offline_fixed_residual", "offline_one_sided_fixed", "rmia")
METHODS = ("rtn", "adaround", "brecq", "obc", "gptq")  # = tuple(ptq.QUANTIZERS), tested; no torch import here
ACT_BITS = (None, 2, 3, 4, 5, 6, 7, 8)
_PAIR_ATTACKS = ("online", "online_fixed", "offline", "offline_fixed")  # threat.BOTH_MODELS_ATTACKS
REPLACED_STEMS = ("resnet18", "resnet50", "densenet121")  # = zoo.REPLACED_STEMS (no torch import here)
FIXED_STATS_DATASETS = ("cifar10", "cifar100", "tinyimagenet")  # = data.FIXED_STATS


@dataclass(frozen=True)
class StudyConfig:
    # ---- identity and places (relative paths are resolved from the repository root)
    name: str = key("default", "the preset's name; its report goes to <reports>/<name>/")
    store: str = key("artifacts", "content-addressed job results (shared by every preset)")
    reports: str = key("reports", "folder of the rendered HTML reports")
    # ---- data and model
    dataset: str = key("digits", "digits (bundled, offline) or a folder dataset under data_root",
                       choices=("digits", "cifar10", "cifar100", "tinyimagenet", "imagefolder"))
    data_root: str = key("data", "folder holding the dataset in its standard layout")
    test_fraction: float = key(0.25, "digits: share of the 1,797 images held out as test set", above=0, below=1)
    arch: str = key("digits_cnn", "architecture (CIFAR form for the folder datasets)",
                    choices=("digits_cnn", "airbench_small", "resnet18", "resnet50", "densenet121"))
    width: float = key(1.0, "airbench_small: every layer's channels times this factor (weights grow ~ width²; "
                       "the model-scale study)", above=0)
    download: bool = key(False, "let torchvision fetch CIFAR when a network exists (never by default)")
    image_size: int = key(0, "folder datasets: resize to this square size (0 = keep the files' size)", at_least=0)
    train_subset: int = key(0, "use only the first n examples of the training pool (0 = all)", at_least=0)
    test_subset: int = key(0, "use only the first n test examples (0 = all)", at_least=0)
    normalization: str = key("pool", "per-channel mean/std: pool (the pool in use: right for any dataset and subset) | "
                             "fixed (published constants, ImageNet's for tinyimagenet: the authors')",
                             choices=("pool", "fixed"))
    stem_init: str = key("kaiming_normal", "resnet/densenet 3x3 stem: kaiming_normal (as torchvision starts every other "
                         "conv) | pytorch_default (nn.Conv2d's own: the authors')",
                         choices=("kaiming_normal", "pytorch_default"))
    # ---- membership game
    seed: int = key(0, "seeds every membership mask, model initialisation and calibration draw")
    num_targets: int = key(8, "target models, each trained on a random half of the pool", at_least=1)
    num_shadows: int = key(32, "shadow models; even, so every example is IN for exactly half", at_least=4)
    shadow_masks: str = key("argsort", "argsort (the reference; depends on num_shadows) | paired "
                            "(complementary pairs: raising num_shadows reuses every shadow)",
                            choices=("argsort", "paired"))
    # ---- training recipe
    epochs: int = key(40, "training epochs (cosine learning-rate schedule over all of them)", at_least=1)
    batch_size: int = key(64, "training batch size (also BN re-tuning's batch size)", at_least=1)
    lr: float = key(0.1, "SGD learning rate", above=0)
    lr_schedule: str = key("per_step", "cosine stepped per_step (smooth, also over few epochs) | per_epoch "
                           "(a staircase: the authors')", choices=("per_step", "per_epoch"))
    momentum: float = key(0.9, "SGD momentum", at_least=0, below=1)
    weight_decay: float = key(5e-4, "SGD weight decay", at_least=0)
    augment: str = key("none", "training augmentation (also applied to calibration images)",
                       choices=("none", "shift", "crop_flip"))
    train_precision: str = key("bf16", "CUDA training arithmetic: bf16 autocast or fp32 (the authors'); "
                               "CPU training is always fp32", choices=("bf16", "fp32"))
    torch_compile: bool = key(False, "train through torch.compile: for GPUs (a CPU pays ~25 s per process)")
    # ---- quantization: every recipe = method x bits x last_layer_bits
    methods: tuple = key(("rtn", "adaround", "brecq", "obc"), "PTQ methods",
                         each=METHODS)
    bits: tuple = key((8, 4, 2, 1.58), "body bit-widths (1.58 = ternary)", kind="bits")
    last_layer_bits: tuple = key((None, 8), "classifier bit-widths (null = same as the body)", kind="bits_or_null")
    layer_bits: dict = key({}, "per-layer overrides, layer name -> bits (e.g. {conv1: 8})", kind="layer_bits")
    calib_samples: int = key(512, "calibration images (AdaRound, BRECQ; OBC unless obc_calib_samples)",
                             at_least=1)
    calib_source: str = key("members", "members (the paper) | holdout (the test split, disjoint from the pool)",
                            choices=("members", "holdout"))
    calib_draw: str = key("training_order", "calibration images: training_order (epoch 1's first batches; kept so "
                          "stored results stay valid) | independent (a draw of their own: the authors')",
                          choices=("training_order", "independent"))
    grid_search: str = key("fine", "grid search: fine (100 shrinks of 0.8%, the range always holding 0, so 0 is exact) "
                           "| authors (80 shrinks of 1%; AdaRound/BRECQ/RTN from the raw min/max)",
                           choices=("fine", "authors"))
    batch_sampling: str = key("with_replacement", "AdaRound/BRECQ and BN re-tuning batches: with_replacement (kept so "
                              "stored results stay valid) | without_replacement (distinct images per batch; BN "
                              "re-tuning in shuffled passes: the authors')",
                              choices=("with_replacement", "without_replacement"))
    adaround_iters: int = key(300, "AdaRound/BRECQ iterations per layer or block", at_least=0)
    adaround_lr: float = key(0.03, "AdaRound/BRECQ Adam learning rate on the rounding variable", above=0)
    adaround_lambda: float = key(0.01, "AdaRound's rounding-regulariser weight (authors: 0.001)", above=0)
    brecq_lambda: float = key(0.01, "BRECQ's rounding-regulariser weight (authors: 0.01)", above=0)
    brecq_loss: str = key("mse", "BRECQ reconstruction loss", choices=("mse", "fisher"))
    obc_hessian: str = key("sequential", "OBC/GPTQ layer inputs: sequential (from the quantized prefix) | "
                           "fp (every Hessian from the full-precision model in one pass: the authors')",
                           choices=("sequential", "fp"))
    obc_calib_samples: int = key(0, "OBC/GPTQ calibration images per round (0 = calib_samples; authors: 2048)",
                                 at_least=0)
    obc_calib_rounds: int = key(1, "OBC/GPTQ: rounds of fresh augmentation over the calibration images "
                                "(authors: 10)", at_least=1)
    quantize_models: int = key(0, "quantize only targets and shadows with index < n, every recipe (0 = all); "
                               "with fewer than all shadows the recipes are scored by leave_one_out_fp only",
                               at_least=0)
    obc_models: int = key(0, "OBC/GPTQ recipes quantize only targets and shadows with index < n (0 = all); "
                          "with fewer than all shadows OBC is scored by leave_one_out_fp only", at_least=0)
    obc_bits: tuple = key((), "OBC/GPTQ recipes only at these body bit-widths (empty = bits)", kind="bits")
    obc_damp: float = key(0.01, "OBC/GPTQ relative dampening of the Hessian diagonal (authors: 0)", at_least=0)
    obc_cholesky: str = key("strict", "OBC/GPTQ Hessian inverse: strict (float64; not positive definite stops the job "
                            "naming obc_damp) | authors (float32, TF32 off, + 1*I where it fails, logged)",
                            choices=("strict", "authors"))
    bn_retune: tuple = key((), "methods after which BatchNorm statistics are re-tuned (authors: [obc])",
                           each=METHODS)
    bn_retune_source: str = key("pool", "BN re-tuning images: pool (members and non-members: the authors') "
                                "| members", choices=("pool", "members"))
    bn_retune_samples: int = key(1024, "BN re-tuning: images drawn from the source", at_least=1)
    bn_retune_steps: int = key(100, "BN re-tuning: batches of batch_size (authors: 100 of 128)", at_least=1)
    bn_retune_augment: bool = key(True, "BN re-tuning batches use the training augmentation")
    bn_retune_momentum: float | None = key(0.1, "BN re-tuning momentum (null = exact average over the batches)",
                                           kind="optional_float")
    # ---- attack
    queries: str = key("identity", "query views: identity | shift | mirror_shift (the original LiRA's) | "
                       "random_per_model (the authors': random crop+flip drawn afresh for every model)",
                       choices=("identity", "shift", "mirror_shift", "random_per_model"))
    query_shift: int = key(1, "shift, mirror_shift: every shift within +-this many pixels", at_least=0)
    query_count: int = key(2, "random_per_model: number of random views per model", at_least=1)
    attacks: tuple = key(ATTACKS[:6] + ("rmia",), "attacks scored on every target", each=ATTACKS)
    rmia_population: int = key(0, "RMIA's population: the first n held-out test points, non-members of every "
                               "model (0 = the whole test split)")
    threat_models: tuple = key(("fp_shadows",), "fp_shadows (the paper's) | matched_shadows | leave_one_out "
                               "(every pool model the target in turn, quantized like it) | leave_one_out_fp "
                               "(quantized pool model i vs the other full-precision pool models: the paper's "
                               "threat model over the pool) | both_models (the attacker holds the FP32 model "
                               "and its quantized release)",
                               each=("fp_shadows", "matched_shadows", "leave_one_out", "leave_one_out_fp",
                                     "both_models"))
    bootstrap: int = key(1000, "bootstrap resamples for the 95% intervals over targets", at_least=0)
    # ---- beyond the paper (each off by default; run by the analysis stage)
    act_bits: tuple = key((None,), "activation bit-widths combined with every weight recipe (null = FP "
                          "activations; e.g. [null, 8, 4])", each=ACT_BITS)
    act_range: str = key("minmax", "activation range calibration: minmax | mse (best shrink) | percentile "
                         "(0.01%/99.99%)", choices=("minmax", "mse", "percentile"))
    control_noise: bool = key(False, "weight-noise controls: each quantized target + Gaussian noise of the "
                              "recipe's relative weight error, per layer")
    control_epochs: tuple = key((), "fewer-epochs controls: targets trained for these epochs (e.g. [2, 5, 10])")
    dp_noise: tuple = key((), "DP-SGD (Opacus) noise multipliers; each trains targets and DP shadows (e.g. [0.5, 1, 2])")
    dp_clip: float = key(1.0, "DP-SGD per-example gradient clipping norm", above=0)
    dp_epochs: int = key(0, "DP-SGD training epochs (0 = epochs)", at_least=0)
    dp_shadows: int = key(0, "DP shadows per noise level (0 = num_shadows); even, >= 4", at_least=0)
    prune_sparsity: tuple = key((), "global magnitude pruning sparsities of targets and shadows (e.g. [0.5, 0.9])")
    canaries: int = key(0, "canary audit: pool examples turned into canaries, drawn from seed (0 = off)", at_least=0)
    canary_kind: str = key("mislabel", "canaries: mislabel (a different class) | noise (random pixels, random class)",
                           choices=("mislabel", "noise"))
    scale_widths: tuple = key((), "model scale: airbench_small widths the study is repeated at, for the extras "
                              "report's leakage reduction against model size (e.g. [0.5, 1, 1.6]; empty = off)")
    # ---- compute (never part of a job's key)
    device: str = key("auto", "auto | cpu | cuda", choices=("auto", "cpu", "cuda"))
    threads: int = key(1, "torch threads in the main process (0 = torch's default)", at_least=0)
    executor: str = key("process", "serial | process (a local pool) | ray", choices=("serial", "process", "ray"))
    workers: int = key(2, "process/ray: concurrent jobs", at_least=1)
    worker_threads: int = key(1, "process/ray: torch threads per job", at_least=1)
    gpus_per_job: float = key(0.0, "ray: fractional GPUs per job (several small models share a card)", at_least=0)
    ray_address: str = key("", "ray: empty = a local Ray started on demand; else join that cluster")

    # ---- derived values (never set in a preset)
    @property
    def store_path(self) -> Path:
        return resolve_path(self.store)

    @property
    def data_path(self) -> Path:
        return resolve_path(self.data_root)

    @property
    def report_dir(self) -> Path:
        return resolve_path(self.reports) / self.name

    def recipes(self) -> list[dict]:
        """Every (method, bits, last_layer_bits) quantization recipe, in a stable order.

        A last-layer width equal to the body width is the plain recipe, so it is dropped.
        """
        return [{"method": m, "bits": b, "last_layer_bits": last}
                for m in self.methods for b in self.bits for last in self.last_layer_bits
                if last is None or last != b]

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


FIELD_NAMES = tuple(f.name for f in fields(StudyConfig))
RULES = {f.name: f.metadata for f in fields(StudyConfig)}
_DEFAULTS = StudyConfig()
def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _fail(key_name: str, problem: str) -> None:
    raise ConfigError(f"{key_name}: {problem}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bits(key_name: str, b: Any, nullable: bool = False):
    if b is None and nullable:
        return None
    if _is_number(b) and any(abs(b - v) < 1e-9 for v in VALID_BITS):
        return 1.58 if abs(b - 1.58) < 1e-9 else int(b)
    _fail(key_name, f"{b!r} is not a valid bit-width; use {'null or ' if nullable else ''}any of {list(VALID_BITS)}")


def _as_bool(key_name: str, value: Any, kind: str | None) -> bool:
    if not isinstance(value, bool):
        _fail(key_name, f"expected true or false, got {value!r}")
    return value


def _as_int(key_name: str, value: Any, kind: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key_name, f"expected an integer, got {value!r}")
    return value


def _as_float(key_name: str, value: Any, kind: str | None) -> float | None:
    if value is None and kind == "optional_float":
        return None
    if not _is_number(value):
        _fail(key_name, f"expected a number{' or null' if kind == 'optional_float' else ''}, got {value!r}")
    return float(value)


def _as_str(key_name: str, value: Any, kind: str | None) -> str:
    if not isinstance(value, str):
        _fail(key_name, f"expected a string, got {value!r}")
    return value


def _as_list(key_name: str, value: Any, kind: str | None, non_empty: bool) -> tuple:
    if isinstance(value, (str, int, float)) or (value is None and kind == "bits_or_null"):
        value = [value]  # a scalar where a list is expected is a one-element list
    if not isinstance(value, (list, tuple)) or (len(value) == 0 and non_empty):
        _fail(key_name, f"expected a {'non-empty ' if non_empty else ''}list, got {value!r}")
    if kind in ("bits", "bits_or_null"):
        return tuple(_bits(key_name, b, kind == "bits_or_null") for b in value)
    return tuple(value)


def _as_layer_bits(key_name: str, value: Any, kind: str | None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(key_name, f"expected a mapping of layer name to bits, got {value!r}")
    return {str(k): _bits(f"{key_name}.{k}", b) for k, b in value.items()}


_COERCE = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}  # by the default's type (bool first)


def _coerce(key_name: str, value: Any, default: Any, kind: str | None) -> Any:
    """`value` as the type of the field's default, or fail naming the key."""
    if kind == "layer_bits":
        return _as_layer_bits(key_name, value, kind)
    if kind == "optional_float":
        return _as_float(key_name, value, kind)
    if isinstance(default, tuple):
        return _as_list(key_name, value, kind, non_empty=bool(default))
    return _COERCE.get(type(default), lambda k, v, _: v)(key_name, value, kind)


def _check_rule(key_name: str, value: Any, rule: dict) -> None:
    if rule["choices"] and value not in rule["choices"]:
        _fail(key_name, f"{value!r} is not one of {list(rule['choices'])}")
    for item in value if rule["each"] else ():
        if item not in rule["each"]:
            _fail(key_name, f"{item!r} is not one of {list(rule['each'])}")
    if value is None or not _is_number(value):
        return
    if rule["at_least"] is not None and value < rule["at_least"]:
        _fail(key_name, f"{value} must be >= {rule['at_least']:g}")
    if rule["above"] is not None and value <= rule["above"]:
        _fail(key_name, f"{value} must be > {rule['above']:g}")
    if rule["below"] is not None and value >= rule["below"]:
        _fail(key_name, f"{value} must be < {rule['below']:g}")


def validate(raw: dict) -> StudyConfig:
    """Validate a flat dict of parameters into a frozen `StudyConfig` (raises `ConfigError`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"preset: expected a mapping of keys to values, got {type(raw).__name__}")
    values = {}
    for name, value in raw.items():
        if name not in FIELD_NAMES:
            close = difflib.get_close_matches(str(name), FIELD_NAMES, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "`python -m ptqlib keys` lists every key"
            _fail(str(name), f"unknown key; {hint}")
        values[name] = _coerce(name, value, getattr(_DEFAULTS, name), RULES[name]["kind"])
        _check_rule(name, values[name], RULES[name])
    v = {**{f: getattr(_DEFAULTS, f) for f in FIELD_NAMES}, **values}
    _check_combinations(v)
    return StudyConfig(**v)


def _check_combinations(v: dict) -> None:
    """Rules that involve more than one key."""
    if not v["name"] or any(c in v["name"] for c in "/\\ "):
        _fail("name", f"{v['name']!r} must be a non-empty word without '/', '\\' or spaces")
    if v["num_shadows"] % 2:
        _fail("num_shadows", f"{v['num_shadows']} is invalid (odd); need an even number >= 4 so every example "
                             "is IN for exactly half of the shadows (with >= 2 IN and 2 OUT scores)")
    if v["query_shift"] > 4:
        _fail("query_shift", f"{v['query_shift']} must lie in 0..4 pixels")
    if v["dataset"] == "digits" and v["arch"] != "digits_cnn":
        _fail("arch", f"{v['arch']!r} does not fit the 8x8 digits; use 'digits_cnn'")
    if v["dataset"] != "digits" and v["arch"] == "digits_cnn":
        _fail("arch", f"'digits_cnn' only fits dataset 'digits'; use one of "
                      f"{[a for a in RULES['arch']['choices'] if a != 'digits_cnn']}")
    if "both_models" in v["threat_models"] and not any(a in _PAIR_ATTACKS for a in v["attacks"]):
        _fail("threat_models", f"both_models scores only the attacks {list(_PAIR_ATTACKS)}; add one of them "
                               f"to attacks (now {list(v['attacks'])})")
    if v["width"] != 1 and v["arch"] != "airbench_small":
        _fail("width", f"{v['width']:g} applies only to arch airbench_small, not {v['arch']!r}; use 1")
    if v["stem_init"] != "kaiming_normal" and v["arch"] not in REPLACED_STEMS:
        _fail("stem_init", f"{v['stem_init']!r} applies only to the archs with a replaced stem {list(REPLACED_STEMS)}, "
                           f"not {v['arch']!r}; use 'kaiming_normal'")
    if v["normalization"] == "fixed" and v["dataset"] not in FIXED_STATS_DATASETS:
        _fail("normalization", f"'fixed' has constants only for {list(FIXED_STATS_DATASETS)}, not "
                               f"{v['dataset']!r}; use 'pool'")
    _check_calibration(v)
    _check_rmia_population(v)
    _check_extras(v)


def _check_extras(v: dict) -> None:
    """Number lists the `key` rules cannot express (the extras' keys)."""
    for item in v["control_epochs"]:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            _fail("control_epochs", f"{item!r} is not a number of epochs; use integers >= 1")
    for item in v["dp_noise"]:
        if not _is_number(item) or item <= 0:
            _fail("dp_noise", f"{item!r} is not a noise multiplier; use numbers > 0")
    for item in v["prune_sparsity"]:
        if not _is_number(item) or not 0 < item < 1:
            _fail("prune_sparsity", f"{item!r} is not a sparsity; use numbers in (0, 1)")
    if v["dp_shadows"] and (v["dp_shadows"] % 2 or v["dp_shadows"] < 4):
        _fail("dp_shadows", f"{v['dp_shadows']} is invalid; use 0 (= num_shadows) or an even number >= 4")
    sizes = split_sizes(v)
    if v["canaries"] and sizes and v["canaries"] > sizes[0] // 2:
        _fail("canaries", f"{v['canaries']} is more than half the training pool ({sizes[0]} examples on "
                          f"{v['dataset']}); canaries must be a minority: use at most {sizes[0] // 2}")
    for item in v["scale_widths"]:
        if not _is_number(item) or item <= 0:
            _fail("scale_widths", f"{item!r} is not a width factor; use numbers > 0 (1 = the standard widths)")
    if v["scale_widths"] and v["arch"] != "airbench_small":
        _fail("scale_widths", f"applies only to arch airbench_small, not {v['arch']!r}; use []")
    if any(isinstance(b, bool) for b in v["act_bits"]):
        _fail("act_bits", f"{list(v['act_bits'])} holds a boolean; use null or bit-widths {list(ACT_BITS[1:])}")


# training pool and test split sizes of the datasets whose sizes are known before loading them
_KNOWN_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "tinyimagenet": (100_000, 10_000)}


def split_sizes(v: dict) -> tuple[int, int] | None:
    """(training pool, test split) sizes implied by the config, or None if only the data knows."""
    if v["dataset"] == "digits":
        test = math.ceil(1797 * v["test_fraction"])  # as sklearn's train_test_split rounds
        return 1797 - test, test
    if v["dataset"] not in _KNOWN_SIZES:
        return None
    pool, test = _KNOWN_SIZES[v["dataset"]]
    return (min(pool, v["train_subset"] or pool), min(test, v["test_subset"] or test))


def _check_rmia_population(v: dict) -> None:
    """0 (the whole test split) or a count of test points that the test split holds."""
    n, sizes = v["rmia_population"], split_sizes(v)
    if sizes is None and n < 0:
        _fail("rmia_population", f"{n} is invalid; use 0 (the whole test split) or a count of test points >= 1")
    if sizes is not None and not 0 <= n <= sizes[1]:
        _fail("rmia_population", f"{n} is invalid; use 0 (the whole test split: {sizes[1]} points on "
                                 f"{v['dataset']}) or a count in 1..{sizes[1]}")


def _check_calibration(v: dict) -> None:
    """The calibration images must fit in the calibration source (methods that calibrate only)."""
    sizes = split_sizes(v)
    if sizes is None:
        return
    available = sizes[0] // 2 if v["calib_source"] == "members" else sizes[1]
    where = "a target's members" if v["calib_source"] == "members" else "the held-out test split"
    wanted = [("calib_samples", v["calib_samples"], ("adaround", "brecq", "obc", "gptq")),
              ("obc_calib_samples", v["obc_calib_samples"], ("obc", "gptq"))]
    for name, n, users in wanted:
        if any(m in users for m in v["methods"]) and n > available:
            _fail(name, f"{n} is larger than {where} ({available} examples on {v['dataset']}); "
                        f"use at most {available}")
