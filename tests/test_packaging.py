"""environment.yml (conda) lists the same packages as pyproject.toml (pip)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("notebook", "dev"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {_name(r) for r in dep["pip"]}
        else:
            listed.add(_name(dep))
    listed -= {"python", "pip"}
    assert listed == wanted


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make study" in readme


def test_digits_study_processes_do_not_import_torchvision_or_sklearn():
    """Every stage kernel, job worker and the runner start without torchvision (~2.5 s) or scikit-learn
    (~1.2 s): they are imported where files on disk, a CIFAR-form net, digits or a ROC need them."""
    import subprocess
    import sys

    code = ("import sys, ptqlib.runner, ptqlib.study.jobs, ptqlib.study.stages, ptqlib.results.tables, "
            "ptqlib.models.zoo; print(sorted(m for m in ('torchvision', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from ptqlib.models.zoo import build_model

    assert type(build_model("resnet18", 10)).__name__ == "CifarResNet"  # the lazy path still builds the nets
