"""The study's typed configuration: one flat dict of literals -> one frozen `StudyConfig`.

The same validation serves the runner (which checks a YAML preset before any stage starts)
and each notebook (whose parameters cell holds flat literals, validated in the next cell).
Every error is a `ConfigError` whose message is one line naming the key and what is valid.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

VALID_BITS = (1.58, 2, 3, 4, 5, 6, 7, 8)
DATASETS = ("digits", "cifar10", "cifar100", "tinyimagenet", "imagefolder")
ARCHS = ("digits_cnn", "resnet18", "resnet50", "densenet121")
METHODS = ("rtn", "adaround", "brecq", "obc", "gptq")
ATTACKS = ("online", "online_fixed", "offline", "offline_fixed", "offline_one_sided", "global",
           "online_fixed_residual", "offline_fixed_residual", "offline_one_sided_fixed", "rmia")
QUERY_MODES = ("identity", "shift", "mirror_shift", "random")
EXECUTORS = ("serial", "process", "ray")
AUGMENTATIONS = ("none", "shift", "crop_flip")
THREAT_MODELS = ("fp_shadows", "matched_shadows", "leave_one_out")
CALIB_SOURCES = ("members", "holdout")
STAGES = ("train", "shadows", "quantize", "attack", "analysis")


class ConfigError(ValueError):
    """A preset or notebook parameter is invalid; the message is one line for a person."""


@dataclass(frozen=True)
class StudyConfig:
    # identity and places
    name: str = "default"
    store: str = "artifacts"
    reports: str = "reports"
    # data and model
    dataset: str = "digits"
    data_root: str = "data"
    test_fraction: float = 0.25  # digits only: share of the 1,797 images held out as test set
    arch: str = "digits_cnn"
    download: bool = False  # let torchvision fetch CIFAR when a network exists (never by default)
    image_size: int = 0  # imagefolder: resize to this square size (0 = keep the files' size)
    train_subset: int = 0  # use only the first n examples of the training pool (0 = all)
    test_subset: int = 0  # use only the first n test examples (0 = all)
    # membership game
    seed: int = 0
    num_targets: int = 8
    num_shadows: int = 32
    shadow_masks: str = "argsort"  # argsort (the reference: depends on M) | paired (raising M reuses shadows)
    # training recipe
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "none"
    # quantization
    methods: tuple = ("rtn",)
    bits: tuple = (8, 4, 2, 1.58)
    last_layer_bits: tuple = (None,)
    first_layer_bits: float | None = None
    layer_bits: dict = field(default_factory=dict)
    symmetric: bool = False
    clip_norm: float = 2.4
    calib_samples: int = 1024
    calib_source: str = "members"  # members (the paper) | holdout (test split, disjoint from the pool)
    bn_reestimate: bool = False  # re-estimate BatchNorm statistics after quantization (recorded)
    adaround_iters: int = 20000
    adaround_lambda: float = 0.01  # the paper's code used 0.001
    adaround_batch: int = 32
    adaround_lr: float = 0.001
    adaround_warmup: float = 0.2
    adaround_beta_start: float = 20.0
    adaround_beta_end: float = 2.0
    brecq_loss: str = "mse"  # mse | fisher
    obc_damp: float = 0.01  # relative dampening of the Hessian diagonal (OBC and GPTQ)
    gptq_block: int = 128
    # attack
    queries: str = "identity"
    query_shift: int = 1
    query_count: int = 2  # queries: random — number of augmented views
    attacks: tuple = ("online", "online_fixed", "offline", "offline_fixed", "offline_one_sided", "global", "rmia")
    threat_models: tuple = ("fp_shadows",)
    bootstrap: int = 1000  # resamples for the 95% intervals over targets
    # compute
    device: str = "auto"
    torch_compile: bool = False  # torch.compile each model for training: for GPUs (a CPU pays ~25 s per process to compile)
    threads: int = 0  # torch threads in the main process (serial executor); 0 = torch's default
    executor: str = "serial"  # serial | process | ray
    workers: int = 2  # process/ray: concurrent jobs
    worker_threads: int = 1  # process/ray: torch threads per job
    gpus_per_job: float = 0.0  # ray: fractional GPUs per job (several small models share a card)
    ray_address: str = ""  # ray: empty = a local Ray started on demand; else join that cluster

    # ---- derived values (never set in a preset) ----
    @property
    def store_path(self) -> Path:
        return Path(self.store)

    @property
    def report_dir(self) -> Path:
        return Path(self.reports) / self.name

    def recipes(self) -> list[dict]:
        """Every (method, bits, last_layer_bits) quantization job of the study, in a stable order.

        A last-layer width equal to the body width is the plain recipe, so it is dropped.
        """
        out = []
        for method in self.methods:
            for b in self.bits:
                for last in self.last_layer_bits:
                    if last is not None and last == b:
                        continue
                    out.append({"method": method, "bits": b, "last_layer_bits": last})
        return out

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


FIELD_NAMES = tuple(f.name for f in fields(StudyConfig))
_DEFAULTS = StudyConfig()


def _bits_ok(b: Any) -> bool:
    return isinstance(b, (int, float)) and not isinstance(b, bool) and any(abs(b - v) < 1e-9 for v in VALID_BITS)


def _canonical_bits(b):
    return 1.58 if abs(b - 1.58) < 1e-9 else int(b)


# (keys, bound, bound excluded?, what the one-line error says): the numeric keys' lower limits
LOWER_BOUNDS = [
    (("epochs", "batch_size", "calib_samples", "adaround_batch", "gptq_block", "query_count", "workers",
      "worker_threads"), 1, False, "must be at least 1"),
    (("adaround_iters", "bootstrap", "image_size", "train_subset", "test_subset", "gpus_per_job", "obc_damp",
      "weight_decay"), 0, False, "must be >= 0"),
    (("lr", "clip_norm", "adaround_lambda", "adaround_lr"), 0, True, "must be positive"),
    (("adaround_beta_start", "adaround_beta_end"), 1, False,
     "must be >= 1 (|2h - 1|^beta has an unbounded derivative below 1)"),
]


def _fail(key: str, problem: str) -> None:
    raise ConfigError(f"{key}: {problem}")


def _check_type(key: str, value: Any, default: Any) -> Any:
    """Coerce `value` to the type of the field's default, or fail naming the key."""
    if key == "first_layer_bits":
        if value is None:
            return None
        if not _bits_ok(value):
            _fail(key, f"{value!r} is not a valid bit-width; use null or one of {list(VALID_BITS)}")
        return _canonical_bits(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            _fail(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            _fail(key, f"expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, (str, int, float)) or value is None:
            value = [value]  # a scalar where a list is expected is a one-element list
        if not isinstance(value, (list, tuple)) or len(value) == 0:
            _fail(key, f"expected a non-empty list, got {value!r}")
        return tuple(value)
    if isinstance(default, dict):
        if value is None:
            return {}
        if not isinstance(value, dict):
            _fail(key, f"expected a mapping of layer name to bits, got {value!r}")
        return dict(value)
    return value


def _choice(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        _fail(key, f"{value!r} is not one of {list(valid)}")


def validate(raw: dict) -> StudyConfig:
    """Validate a flat dict of parameters into a frozen `StudyConfig` (raises `ConfigError`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"preset: expected a mapping of keys to values, got {type(raw).__name__}")
    values = {}
    for key, value in raw.items():
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(str(key), FIELD_NAMES, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(FIELD_NAMES)}"
            _fail(str(key), f"unknown key; {hint}")
        values[key] = _check_type(key, value, getattr(_DEFAULTS, key))

    v = {**{f: getattr(_DEFAULTS, f) for f in FIELD_NAMES}, **values}
    if not v["name"] or any(c in v["name"] for c in "/\\ "):
        _fail("name", f"{v['name']!r} must be a non-empty word without '/', '\\' or spaces")
    _choice("dataset", v["dataset"], DATASETS)
    _choice("arch", v["arch"], ARCHS)
    _choice("augment", v["augment"], AUGMENTATIONS)
    _choice("queries", v["queries"], QUERY_MODES)
    _choice("device", v["device"], ("auto", "cpu", "cuda"))
    _choice("executor", v["executor"], EXECUTORS)
    for m in v["methods"]:
        _choice("methods", m, METHODS)
    for a in v["attacks"]:
        _choice("attacks", a, ATTACKS)
    for t in v["threat_models"]:
        _choice("threat_models", t, THREAT_MODELS)
    _choice("calib_source", v["calib_source"], CALIB_SOURCES)
    _choice("shadow_masks", v["shadow_masks"], ("argsort", "paired"))
    _choice("brecq_loss", v["brecq_loss"], ("mse", "fisher"))
    for b in v["bits"]:
        if not _bits_ok(b):
            _fail("bits", f"{b!r} is not a valid bit-width; use any of {list(VALID_BITS)}")
    v["bits"] = tuple(_canonical_bits(b) for b in v["bits"])
    for b in v["last_layer_bits"]:
        if b is not None and not _bits_ok(b):
            _fail("last_layer_bits", f"{b!r} is not a valid bit-width; use null or any of {list(VALID_BITS)}")
    v["last_layer_bits"] = tuple(None if b is None else _canonical_bits(b) for b in v["last_layer_bits"])
    for layer, b in v["layer_bits"].items():
        if not _bits_ok(b):
            _fail(f"layer_bits.{layer}", f"{b!r} is not a valid bit-width; use any of {list(VALID_BITS)}")
    v["layer_bits"] = {str(k): _canonical_bits(b) for k, b in v["layer_bits"].items()}
    if v["num_targets"] < 1:
        _fail("num_targets", f"{v['num_targets']} is too small; need at least 1 target model")
    if v["num_shadows"] < 4 or v["num_shadows"] % 2:
        _fail("num_shadows", f"{v['num_shadows']} is invalid; need an even number >= 4 so every example "
                             "is IN for exactly half of the shadows (with >= 2 IN and 2 OUT scores)")
    if not 0.0 < v["test_fraction"] < 1.0:
        _fail("test_fraction", f"{v['test_fraction']} must lie strictly between 0 and 1")
    for keys, low, strict, says in LOWER_BOUNDS:
        for key in keys:
            if v[key] < low or (strict and v[key] == low):
                _fail(key, f"{v[key]} {says}")
    if not 0 <= v["adaround_warmup"] < 1:
        _fail("adaround_warmup", f"{v['adaround_warmup']} must lie in [0, 1)")
    if not 0 <= v["momentum"] < 1:
        _fail("momentum", f"{v['momentum']} must lie in [0, 1)")
    if not 0 <= v["query_shift"] <= 4:
        _fail("query_shift", f"{v['query_shift']} must lie in 0..4 pixels")
    if v["threads"] < 0:
        _fail("threads", f"{v['threads']} must be >= 0 (0 = let torch decide)")
    if v["dataset"] == "digits" and v["arch"] != "digits_cnn":
        _fail("arch", f"{v['arch']!r} does not fit the 8x8 digits; use 'digits_cnn'")
    if v["dataset"] != "digits" and v["arch"] == "digits_cnn":
        _fail("arch", f"'digits_cnn' only fits dataset 'digits'; use one of {list(ARCHS[1:])}")
    _check_calibration(v)
    return StudyConfig(**v)


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


def _check_calibration(v: dict) -> None:
    """calib_samples must fit in the calibration source (reconstruction methods only)."""
    sizes = split_sizes(v)
    if sizes is None or all(m == "rtn" for m in v["methods"]):
        return
    available = sizes[0] // 2 if v["calib_source"] == "members" else sizes[1]
    if v["calib_samples"] > available:
        where = "a target's members" if v["calib_source"] == "members" else "the held-out test split"
        _fail("calib_samples", f"{v['calib_samples']} is larger than {where} ({available} examples on "
                               f"{v['dataset']}); use at most {available}")


def read_preset(path: str | Path) -> dict:
    """Read a YAML preset into a flat dict; YAML errors become one line with the line number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: preset file not found; presets live in params/, e.g. params/default.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return raw


def load_preset(path: str | Path) -> StudyConfig:
    """Read and validate a preset; `name` defaults to the file's stem."""
    raw = read_preset(path)
    raw.setdefault("name", Path(path).stem)
    try:
        return validate(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


_NOTEBOOK_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def from_notebook(namespace: dict) -> StudyConfig:
    """Validate the parameters a notebook received (its parameters cell plus injected ones).

    Every public, non-module, non-callable global counts as a parameter, so a misspelt key
    injected by Papermill is reported rather than silently ignored.
    """
    import types

    raw = {k: v for k, v in namespace.items()
           if not k.startswith("_") and k not in _NOTEBOOK_NAMES
           and not isinstance(v, types.ModuleType) and not callable(v)}
    return validate(raw)
