"""Config validation: every bad preset gives exit code 2, one clear line, and writes nothing."""
import pytest

from ptqlib.errors import ConfigError
from ptqlib.study import config, presets
from ptqlib.study.config import StudyConfig, validate

BAD_PRESETS = [
    # (yaml text, substring the one-line message must contain)
    ("bitz: [4, 2]\n", "bitz: unknown key; did you mean 'bits'?"),
    ("bits: [4, 9]\n", "bits: 9 is not a valid bit-width"),
    ("bits: [1.5]\n", "bits: 1.5 is not a valid bit-width"),
    ("num_shadows: 7\n", "num_shadows: 7 is invalid"),
    ("num_shadows: 2\n", "num_shadows: 2 must be >= 4"),
    ("num_targets: 0\n", "num_targets: 0 must be >= 1"),
    ("epochs: ten\n", "epochs: expected an integer, got 'ten'"),
    ("lr: -0.1\n", "lr: -0.1 must be > 0"),
    ("methods: [rtn, magic]\n", "methods: 'magic' is not one of"),
    ("attacks: [online, psychic]\n", "attacks: 'psychic' is not one of"),
    ("dataset: mnist\n", "dataset: 'mnist' is not one of"),
    ("arch: resnet18\n", "arch: 'resnet18' does not fit the 8x8 digits"),
    ("last_layer_bits: [null, 12]\n", "last_layer_bits: 12 is not a valid bit-width"),
    ("layer_bits: {classifier: 0}\n", "layer_bits.classifier: 0 is not a valid bit-width"),
    ("download: maybe\n", "download: expected true or false"),
    ("bits: [4, 2\nepochs: 3\n", "YAML syntax error at line"),
    ("test_fraction: 1.5\n", "test_fraction: 1.5 must be < 1"),
    ("methods: [adaround]\ncalib_samples: 2000\n",
     "calib_samples: 2000 is larger than a target's members (673 examples on digits); use at most 673"),
    ("methods: [obc]\ncalib_source: holdout\ncalib_samples: 500\n",
     "calib_samples: 500 is larger than the held-out test split (450 examples on digits)"),
    ("dataset: cifar10\narch: resnet18\ndata_root: /nonexistent\n",
     "data_root: /nonexistent/cifar-10-batches-py not found; expected torchvision's CIFAR-10 python layout"),
    ("dataset: tinyimagenet\narch: resnet18\ndata_root: /nonexistent\n",
     "data_root: /nonexistent/tiny-imagenet-200 not found"),
    ("executor: slurm\n", "executor: 'slurm' is not one of ['serial', 'process', 'ray']"),
    ("scale_widths: [0.5, 1]\n", "scale_widths: applies only to arch airbench_small, not 'digits_cnn'; use []"),
    ("dataset: imagefolder\narch: airbench_small\nscale_widths: [1, -2]\n",
     "scale_widths: -2 is not a width factor; use numbers > 0"),
    ("threat_models: [psychic]\n", "threat_models: 'psychic' is not one of"),
    ("queries: random_per_model\nquery_count: 0\n", "query_count: 0 must be >= 1"),
    ("dataset: cifar10\narch: digits_cnn\n", "arch: 'digits_cnn' only fits dataset 'digits'"),
    ("adaround_beta_end: 0.5\n", "adaround_beta_end: removed: beta is always annealed 20 -> 2"),
    # keys of earlier presets name what replaced them
    ("bn_reestimate: true\n", "bn_reestimate: renamed: list the methods in bn_retune"),
    ("queries: random\n", "queries: 'random' was renamed 'random_per_model'"),
    ("symmetric: true\n", "symmetric: removed: the grid is always asymmetric"),
    # the protocol keys
    ("obc_hessian: exact\n", "obc_hessian: 'exact' is not one of ['sequential', 'fp']"),
    ("obc_calib_rounds: 0\n", "obc_calib_rounds: 0 must be >= 1"),
    ("obc_damp: -1\n", "obc_damp: -1.0 must be >= 0"),
    ("bn_retune: [magic]\n", "bn_retune: 'magic' is not one of"),
    ("bn_retune_source: test\n", "bn_retune_source: 'test' is not one of ['pool', 'members']"),
    ("bn_retune_momentum: fast\n", "bn_retune_momentum: expected a number or null"),
    ("train_precision: fp16\n", "train_precision: 'fp16' is not one of ['bf16', 'fp32']"),
    ("brecq_lambda: 0\n", "brecq_lambda: 0.0 must be > 0"),
    ("methods: [obc]\nobc_calib_samples: 2048\n", "obc_calib_samples: 2048 is larger than a target's members"),
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
    cfg = validate({"methods": ["rtn"], "bits": [8, 4, 1.58], "last_layer_bits": [None, 8]})
    labels = [(r["bits"], r["last_layer_bits"]) for r in cfg.recipes()]
    # 8 + 8-bit last layer is the plain 8-bit recipe, so it is not repeated
    assert labels == [(8, None), (4, None), (4, 8), (1.58, None), (1.58, 8)]
    assert StudyConfig().name == "default"


def test_scalar_where_list_expected_and_types_coerced():
    cfg = validate({"bits": 4, "lr": 1, "methods": "rtn"})
    assert cfg.bits == (4,) and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.methods == ("rtn",)


def test_notebook_namespace_rejects_injected_unknown_key():
    from ptqlib.study import config, presets
    ns = {"epochs": 3, "epochz": 4, "In": [], "_": None, "np": config}
    with pytest.raises(ConfigError, match="epochz: unknown key; did you mean 'epochs'"):
        presets.from_notebook(ns)


def test_presets_in_repo_are_valid():
    from pathlib import Path

    from ptqlib.study.presets import load_preset
    for path in sorted(Path(__file__).resolve().parent.parent.glob("params/*.yaml")):
        load_preset(path)


def test_notebook_parameters_cell_is_a_preset_and_defaults_are_the_default_study():
    """Stage notebooks read params/<preset>.yaml; with no injected key they run the default study."""
    import ast
    from pathlib import Path

    import nbformat

    from ptqlib.study import config
    root = Path(__file__).resolve().parent.parent
    for nb_path in sorted((root / "notebooks").glob("0[1-5]_*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, nb_path
        names = [n.targets[0].id for n in ast.parse(cells[0].source).body]
        assert names == ["preset"], nb_path
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert presets.from_notebook({"preset": "default"}) == presets.load_preset(root / "params/default.yaml") \
        == StudyConfig()
    # papermill -f params/smoke.yaml injects the smoke keys over the notebook's preset: the smoke study
    injected = {"preset": "default", **presets.read_preset(root / "params/smoke.yaml")}
    assert presets.from_notebook(injected) == presets.load_preset(root / "params/smoke.yaml")
    # -p overrides one key of the chosen preset
    assert presets.from_notebook({"preset": "smoke", "epochs": 7}).epochs == 7
    assert presets.from_notebook({"preset": "smoke"}).name == "smoke"


def test_every_key_is_declared_once_with_a_doc():
    from ptqlib.study import config
    for name, rule in config.RULES.items():
        assert rule["doc"] and len(rule["doc"]) > 10, name
    lines = presets.key_listing().splitlines()
    assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == list(config.FIELD_NAMES)
    assert max(len(line) for line in lines) <= 100
    assert "methods: [rtn, adaround, brecq, obc]" in presets.key_listing()
    assert "gptq" in next(line for line in lines if line.startswith("methods:"))  # accepted values are listed
    assert "last_layer_bits: [null, 8]" in presets.key_listing()  # YAML, not Python (None)


def test_empty_preset_is_an_error(tmp_path, cli):
    preset = tmp_path / "empty.yaml"
    preset.write_text("# nothing here\n")
    proc = cli("run", str(preset))
    assert proc.returncode == 2
    assert "the preset is empty" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_relative_paths_resolve_from_the_repository_root(tmp_path, monkeypatch):
    from ptqlib.study import config
    monkeypatch.chdir(tmp_path)  # as a notebook opened in notebooks/ would be
    cfg = validate({"store": "artifacts", "data_root": "../shared/data/x", "reports": str(tmp_path / "r")})
    assert cfg.store_path == config.REPO_ROOT / "artifacts"
    assert cfg.data_path == config.REPO_ROOT / "../shared/data/x"
    assert cfg.report_dir == tmp_path / "r" / "default"


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
