"""Config validation: every bad preset gives exit code 2, one clear line, and writes nothing."""
import pytest

from ptqlib.config import ConfigError, StudyConfig, validate

BAD_PRESETS = [
    # (yaml text, substring the one-line message must contain)
    ("bitz: [4, 2]\n", "bitz: unknown key; did you mean 'bits'?"),
    ("bits: [4, 9]\n", "bits: 9 is not a valid bit-width"),
    ("bits: [1.5]\n", "bits: 1.5 is not a valid bit-width"),
    ("num_shadows: 7\n", "num_shadows: 7 is invalid"),
    ("num_shadows: 2\n", "num_shadows: 2 is invalid"),
    ("num_targets: 0\n", "num_targets: 0 is too small"),
    ("epochs: ten\n", "epochs: expected an integer, got 'ten'"),
    ("lr: -0.1\n", "lr: -0.1 must be positive"),
    ("methods: [rtn, magic]\n", "methods: 'magic' is not one of"),
    ("attacks: [online, psychic]\n", "attacks: 'psychic' is not one of"),
    ("dataset: mnist\n", "dataset: 'mnist' is not one of"),
    ("arch: resnet18\n", "arch: 'resnet18' does not fit the 8x8 digits"),
    ("last_layer_bits: [null, 12]\n", "last_layer_bits: 12 is not a valid bit-width"),
    ("layer_bits: {classifier: 0}\n", "layer_bits.classifier: 0 is not a valid bit-width"),
    ("symmetric: maybe\n", "symmetric: expected true or false"),
    ("bits: [4, 2\nepochs: 3\n", "YAML syntax error at line"),
    ("test_fraction: 1.5\n", "test_fraction: 1.5 must lie strictly between 0 and 1"),
    ("methods: [adaround]\ncalib_samples: 2000\n",
     "calib_samples: 2000 is larger than a target's members (673 examples on digits); use at most 673"),
    ("methods: [obc]\ncalib_source: holdout\ncalib_samples: 500\n",
     "calib_samples: 500 is larger than the held-out test split (450 examples on digits)"),
    ("dataset: cifar10\narch: resnet18\ndata_root: /nonexistent\n",
     "data_root: /nonexistent/cifar-10-batches-py not found; expected torchvision's CIFAR-10 python layout"),
    ("dataset: tinyimagenet\narch: resnet18\ndata_root: /nonexistent\n",
     "data_root: /nonexistent/tiny-imagenet-200 not found"),
    ("executor: slurm\n", "executor: 'slurm' is not one of ['serial', 'process', 'ray']"),
    ("threat_models: [psychic]\n", "threat_models: 'psychic' is not one of"),
    ("queries: random\nquery_count: 0\n", "query_count: 0 must be at least 1"),
    ("dataset: cifar10\narch: digits_cnn\n", "arch: 'digits_cnn' only fits dataset 'digits'"),
    ("adaround_beta_end: 0.5\n", "adaround_beta_end: 0.5 must be >= 1"),
]


@pytest.mark.parametrize("text,message", BAD_PRESETS)
def test_bad_preset_exit_code_and_message(tmp_path, cli, text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text(f"store: {tmp_path / 'store'}\nreports: {tmp_path / 'reports'}\n" + text)
    proc = cli("run", str(preset))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert str(preset) in lines[0]  # names the file
    assert not (tmp_path / "store").exists() and not (tmp_path / "reports").exists()


def test_top_level_list_is_rejected(tmp_path, cli):
    preset = tmp_path / "list.yaml"
    preset.write_text("- just\n- a list\n")
    proc = cli("run", str(preset))
    assert proc.returncode == 2 and "expected a mapping of keys to values" in proc.stderr


def test_missing_preset_and_unknown_stage(tmp_path, cli):
    proc = cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "preset file not found" in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(f"store: {tmp_path / 's'}\nreports: {tmp_path / 'r'}\n")
    proc = cli("run", str(good), "--stages", "train,dance")
    assert proc.returncode == 2 and "--stages: unknown stage 'dance'" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_defaults_and_derived_recipes():
    cfg = validate({"bits": [8, 4, 1.58], "last_layer_bits": [None, 8]})
    labels = [(r["bits"], r["last_layer_bits"]) for r in cfg.recipes()]
    # 8 + 8-bit last layer is the plain 8-bit recipe, so it is not repeated
    assert labels == [(8, None), (4, None), (4, 8), (1.58, None), (1.58, 8)]
    assert StudyConfig().name == "default"


def test_scalar_where_list_expected_and_types_coerced():
    cfg = validate({"bits": 4, "lr": 1, "methods": "rtn"})
    assert cfg.bits == (4,) and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.methods == ("rtn",)


def test_notebook_namespace_rejects_injected_unknown_key():
    from ptqlib import config
    ns = {"epochs": 3, "epochz": 4, "In": [], "_": None, "np": config}
    with pytest.raises(ConfigError, match="epochz: unknown key; did you mean 'epochs'"):
        config.from_notebook(ns)


def test_presets_in_repo_are_valid():
    from pathlib import Path

    from ptqlib.config import load_preset
    for path in sorted(Path(__file__).resolve().parent.parent.glob("params/*.yaml")):
        load_preset(path)


def test_notebook_parameter_cells_match_config_defaults():
    """The parameters cell of every notebook holds exactly the config's keys and defaults."""
    import ast
    from pathlib import Path

    import nbformat

    from ptqlib.config import FIELD_NAMES
    defaults = StudyConfig().as_dict()
    for nb_path in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, nb_path
        values = {}
        for node in ast.parse(cells[0].source).body:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        assert set(values) == set(FIELD_NAMES), nb_path
        for k, v in values.items():
            assert v == defaults[k], (nb_path, k)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_malformed_cifar_fails_before_compute(tmp_path, cli):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    preset = tmp_path / "c.yaml"
    preset.write_text(f"dataset: cifar10\narch: resnet18\ndata_root: {tmp_path / 'data'}\n"
                      f"store: {tmp_path / 'store'}\nreports: {tmp_path / 'reports'}\n")
    proc = cli("run", str(preset))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data_batch_1 is not a readable CIFAR pickle" in lines[0]
    assert not (tmp_path / "store").exists() and not (tmp_path / "reports").exists()
