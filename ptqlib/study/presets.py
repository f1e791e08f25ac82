"""The readers of the config: YAML presets, a stage notebook's parameters, and retired keys.

`load_preset(path)` reads params/<name>.yaml; `from_notebook(globals())` reads the notebook's
`preset` file and then every parameter Papermill injected. Both pass through `parse`, which
names the replacement of a key (or value) earlier presets used, then validates with the schema
(`study.config.validate`).
"""
from __future__ import annotations

import textwrap
import types
from pathlib import Path

import yaml

from ptqlib.errors import ConfigError
from ptqlib.study.config import FIELD_NAMES, RULES, StudyConfig, resolve_path, validate

# Keys earlier presets used: what to write instead.
RETIRED = {
    "bn_reestimate": "renamed: list the methods in bn_retune (e.g. bn_retune: [obc]); "
                     "bn_retune_momentum: null gives the exact average",
    "clip_norm": "removed: the grid search always minimises the L2.4 error (the paper's)",
    "symmetric": "removed: the grid is always asymmetric per channel (the paper's)",
    "first_layer_bits": "removed: use layer_bits, e.g. layer_bits: {conv1: 8}",
    "gptq_block": "removed: GPTQ always uses blocks of 128 columns",
    "adaround_batch": "removed: AdaRound/BRECQ always use batches of 32 (the paper's)",
    "adaround_warmup": "removed: the regulariser is always off for the first 20% (the paper's)",
    "adaround_beta_start": "removed: beta is always annealed 20 -> 2 (the paper's)",
    "adaround_beta_end": "removed: beta is always annealed 20 -> 2 (the paper's)",
}
# Values earlier presets used: (key, value) -> what to write instead.
RETIRED_VALUES = {
    ("queries", "random"): "'random' was renamed 'random_per_model' (views drawn afresh for every model)",
}


def parse(raw: dict) -> StudyConfig:
    """A flat dict of parameters -> the validated config; retired keys and values name their replacement."""
    if isinstance(raw, dict):
        for name, value in raw.items():
            if name in RETIRED:
                raise ConfigError(f"{name}: {RETIRED[name]}")
            if isinstance(value, str) and (name, value) in RETIRED_VALUES:
                raise ConfigError(f"{name}: {RETIRED_VALUES[name, value]}")
    return validate(raw)


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
        raise ConfigError(f"{path}: the preset is empty; a preset holds at least `name: <word>` "
                          "and the keys it changes (see params/default.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return raw


def load_preset(path: str | Path) -> StudyConfig:
    """Read and validate a preset; `name` defaults to the file's stem."""
    raw = read_preset(path)
    raw.setdefault("name", Path(path).stem)
    try:
        return parse(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


_NOTEBOOK_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open", "preset"}


def from_notebook(namespace: dict) -> StudyConfig:
    """The config of a stage notebook: its `preset` file, then every parameter injected by Papermill.

    Every public, non-module, non-callable global counts as a parameter, so a misspelt key
    injected by Papermill is reported rather than silently ignored.
    """
    raw = {}
    if namespace.get("preset"):
        path = resolve_path(f"params/{namespace['preset']}.yaml")
        raw = {"name": Path(path).stem, **read_preset(path)}
    raw.update({k: v for k, v in namespace.items()
                if not k.startswith("_") and k not in _NOTEBOOK_NAMES
                and not isinstance(v, types.ModuleType) and not callable(v)})
    return parse(raw)


def yaml_value(value) -> str:
    """A default as a preset writes it: null, true, [a, b], {conv1: 8}."""
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def key_listing(width: int = 100) -> str:
    """Every key as a preset line, `key: default  # doc`, wrapped at `width` columns, with the
    accepted values of a key that has a fixed set (for `python -m ptqlib keys`)."""
    defaults, lines = StudyConfig(), []
    for name in FIELD_NAMES:
        rule = RULES[name]
        head = f"{name}: {yaml_value(getattr(defaults, name))}"
        accepted = rule["choices"] or rule["each"]
        doc = rule["doc"] + (f" (accepted: {', '.join(yaml_value(v) for v in accepted)})" if accepted else "")
        column = max(len(head) + 2, 34)
        wrapped = textwrap.wrap(doc, width=width - column - 2) or [""]
        lines.append(f"{head:{column}}# {wrapped[0]}")
        lines += [f"{'':{column}}# {more}" for more in wrapped[1:]]
    return "\n".join(lines)
