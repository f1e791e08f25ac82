"""Bad places and bad files stop `python -m ptqlib run` before any work: exit 2, one line naming the
key and the path, nothing written anywhere."""
from pathlib import Path

import pytest
from PIL import Image

from ptqlib.errors import ConfigError
from ptqlib.study.config import validate
from ptqlib.runner import check_places

from test_datasets_disk import fake_imagefolder


def snapshot(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def places(tmp_path: Path, **keys) -> str:
    keys = {"name": "bad", "store": str(tmp_path / "store"), "reports": str(tmp_path / "reports"), **keys}
    return "".join(f"{k}: {v}\n" for k, v in keys.items())


def run_bad(tmp_path: Path, cli, text: str):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    before = snapshot(tmp_path)
    proc = cli("run", str(preset), "--stages", "train", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and not proc.stdout.strip(), proc.stdout + proc.stderr
    assert snapshot(tmp_path) == before  # nothing written, nothing touched
    return lines[0]


def test_store_that_is_a_file_stops_before_any_stage(tmp_path, cli):
    (tmp_path / "store").write_text("an existing file")
    line = run_bad(tmp_path, cli, places(tmp_path))
    assert f"store: {tmp_path / 'store'} is a file, not a folder" in line


def test_reports_that_is_a_file_stops_before_any_stage(tmp_path, cli):
    (tmp_path / "reports").write_text("an existing file")
    line = run_bad(tmp_path, cli, places(tmp_path))
    assert f"reports: {tmp_path / 'reports'} is a file, not a folder" in line


def test_corrupt_jpeg_in_an_imagefolder_leaves_the_store_empty(tmp_path, cli):
    root = fake_imagefolder(tmp_path / "mydata")
    bad = root / "train" / "ant" / "broken.jpg"
    Image.new("RGB", (12, 10), (10, 200, 30)).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # its header opens, its pixels do not decode
    line = run_bad(tmp_path, cli, places(tmp_path, dataset="imagefolder", data_root=root, arch="resnet18"))
    assert f"data_root: {bad} could not be read as an image" in line
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("case", ["store_under_a_file", "store_not_writable", "reports_under_a_file",
                                  "data_root_is_a_file"])
def test_places_are_checked_before_anything_is_written(tmp_path, case):
    (tmp_path / "file").write_text("a file")
    keys, key, expected = {}, case.split("_")[0] if not case.startswith("data_root") else "data_root", ""
    if case == "store_under_a_file":
        keys["store"] = str(tmp_path / "file" / "store")
        expected = f"store: {tmp_path / 'file' / 'store'} cannot be created: {tmp_path / 'file'} is a file"
    elif case == "store_not_writable":
        keys["store"] = "/proc/ptqlib-store"  # no process may create files in /proc, root included
        expected = "store: /proc/ptqlib-store cannot be written"
    elif case == "reports_under_a_file":
        keys["reports"] = str(tmp_path / "file" / "reports")
        expected = f"reports: {tmp_path / 'file' / 'reports'} cannot be created: {tmp_path / 'file'} is a file"
    else:
        keys.update(dataset="cifar10", arch="resnet18", data_root=str(tmp_path / "file"))
        expected = f"data_root: {tmp_path / 'file'} is a file, not a folder"
    cfg = validate({"store": str(tmp_path / "store"), "reports": str(tmp_path / "reports"), **keys})
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_places(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}: ") and expected in message and "\n" not in message
    assert snapshot(tmp_path) == before
    assert not Path("/proc/ptqlib-store").exists()


def test_writable_places_pass_and_leave_no_probe_behind(tmp_path):
    (tmp_path / "store").mkdir()
    cfg = validate({"store": str(tmp_path / "store"), "reports": str(tmp_path / "new" / "reports")})
    check_places(cfg)
    assert list((tmp_path / "store").iterdir()) == [] and list(tmp_path.iterdir()) == [tmp_path / "store"]
