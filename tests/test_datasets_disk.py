"""On-disk datasets: each test writes a tiny fake dataset in exactly the real layout."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ptqlib.data import disk as datasets_disk
from ptqlib.errors import ConfigError
from ptqlib.study.config import validate
from ptqlib.data.images import channel_stats, load_dataset
from ptqlib.runtime.store import Store
from ptqlib.study.jobs import load_data
from ptqlib.study.plan import data_spec


@pytest.fixture(autouse=True)
def fake_cifar_checksums(monkeypatch):
    """The fake CIFAR pickles here cannot pass torchvision's MD5 check: study configs skip it."""
    monkeypatch.setenv(datasets_disk.VERIFY_ENV, "0")


def config(tmp_path, dataset, root, **kw):
    """`load_dataset`'s keyword arguments as a study would pass them (the store under tmp_path)."""
    return {"dataset": dataset, "root": root, "store": tmp_path / "store", "verify": False, **kw}


def disk(options: dict) -> dict:
    """The subset of `config(...)` that `check_available` takes."""
    return {k: options[k] for k in ("root", "store", "verify") if k in options} | (
        {"image_size": options["image_size"]} if "image_size" in options else {})


# ---------------------------------------------------------------- CIFAR

def write_cifar_batch(path, images, labels, label_key="labels"):
    """A pickle like CIFAR's: uint8 rows of 3072 (R plane, G plane, B plane). The real files are
    Python 2 pickles whose str keys torchvision reads (encoding latin1) as these str keys."""
    entry = {"batch_label": "fake", "data": images.reshape(len(images), -1), label_key: list(labels),
             "filenames": ["x.png"] * len(images)}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def fake_cifar10(root, per_batch=6, test=5):
    """Image i of the training set has every pixel of channel c equal to (i + 40 c) % 256."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    def images(start, n):
        v = (np.arange(start, start + n)[:, None] + 40 * np.arange(3)[None]) % 256
        return np.broadcast_to(v[:, :, None, None], (n, 3, 32, 32)).astype(np.uint8)
    for b in range(5):
        idx = np.arange(b * per_batch, (b + 1) * per_batch)
        write_cifar_batch(folder / f"data_batch_{b + 1}", images(idx[0], per_batch), idx % 10)
    write_cifar_batch(folder / "test_batch", images(200, test), (np.arange(test) + 3) % 10)
    return root


def test_cifar10_layout(tmp_path):
    root = fake_cifar10(tmp_path / "data")
    data = load_dataset(**config(tmp_path, "cifar10", root))
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (5, 3, 32, 32) and data.y_train.dtype == torch.int64
    assert data.num_classes == 10 and data.shape == (3, 32, 32)
    # batches concatenated in order 1..5; channels are planes (R, G, B), not interleaved pixels
    assert data.x_train[:, 0, 0, 0].tolist() == list(range(30))
    assert data.x_train[7, 1].unique().tolist() == [47] and data.x_train[7, 2].unique().tolist() == [87]
    assert data.y_train.tolist() == [i % 10 for i in range(30)]
    # train and test are different files
    assert data.x_test[:, 0, 0, 0].tolist() == list(range(200, 205))
    assert data.y_test.tolist() == [3, 4, 5, 6, 7]
    mean, std = channel_stats(data.x_train)
    assert torch.allclose(data.mean, mean) and torch.allclose(data.std, std)
    assert data.mean[0] == pytest.approx(14.5 / 255, abs=1e-6)


def test_cifar_subsets_take_the_first_examples(tmp_path):
    root = fake_cifar10(tmp_path / "data")
    data = load_dataset(**config(tmp_path, "cifar10", root, train_subset=8, test_subset=2))
    assert data.x_train[:, 0, 0, 0].tolist() == list(range(8))
    assert data.y_test.tolist() == [3, 4]
    assert data.mean[0] == pytest.approx(3.5 / 255, abs=1e-6)  # statistics of the pool in use


def test_cifar_image_size_resizes_like_an_image_folder(tmp_path):
    """image_size resizes CIFAR's arrays with PIL's bilinear filter, as ImageFolder files are resized;
    a resized copy is another dataset (its own identity and cache entry)."""
    root = fake_cifar10(tmp_path / "data")
    full = load_dataset(**config(tmp_path, "cifar10", root))
    small = load_dataset(**config(tmp_path, "cifar10", root, image_size=16))
    assert small.x_train.shape == (30, 3, 16, 16) and small.x_test.shape == (5, 3, 16, 16)
    assert small.x_train.dtype == torch.uint8 and small.y_train.tolist() == full.y_train.tolist()
    expected = np.asarray(Image.fromarray(full.x_train[7].permute(1, 2, 0).numpy()).resize((16, 16), Image.BILINEAR))
    assert np.array_equal(small.x_train[7].permute(1, 2, 0).numpy(), expected)
    assert datasets_disk.dataset_identity("cifar10", image_size=16) != datasets_disk.dataset_identity("cifar10")
    assert len(list((tmp_path / "store" / "dataset").glob("*/images.pt"))) == 2


def test_cifar_root_may_be_the_dataset_folder_itself(tmp_path):
    root = fake_cifar10(tmp_path / "data")
    data = load_dataset(**config(tmp_path, "cifar10", root / "cifar-10-batches-py"))
    assert len(data.y_train) == 30


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    x = np.zeros((4, 3072), dtype=np.uint8)
    for split, fine in (("train", [99, 0, 42, 7]), ("test", [5, 6, 7, 8])):
        entry = {"data": x, "fine_labels": fine, "coarse_labels": [1, 1, 1, 1]}
        (folder / split).write_bytes(pickle.dumps(entry))
    data = load_dataset(**config(tmp_path, "cifar100", tmp_path / "data"))
    assert data.num_classes == 100
    assert data.y_train.tolist() == [99, 0, 42, 7] and data.y_test.tolist() == [5, 6, 7, 8]


def test_missing_cifar_folder_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset(**config(tmp_path, "cifar10", tmp_path / "nowhere"))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data_batch_1..5" in msg and "cifar-10-python.tar.gz" in msg and "download: true" in msg
    assert not (tmp_path / "nowhere").exists()  # never a silent download


def test_missing_cifar_file_is_named(tmp_path):
    root = fake_cifar10(tmp_path / "data")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="lacks data_batch_3"):
        datasets_disk.check_available("cifar10", **disk(config(tmp_path, "cifar10", root)))


@pytest.mark.parametrize("content", [
    b"this is not a pickle",
    pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]}),
    pickle.dumps({"images": 1}),
    pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 10]}),
])
def test_malformed_cifar_file_is_named(tmp_path, content):
    root = fake_cifar10(tmp_path / "data")
    bad = root / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(content)
    (bad.parent / "batches.meta").write_bytes(b"")
    # unverified (fake pickles): torchvision's reader fails, the folder is named, before any training
    with pytest.raises(ConfigError, match="could not be read by torchvision's CIFAR10|expected uint8 images and "
                                          "one label in 0..9") as err:
        datasets_disk.check_available("cifar10", **disk(config(tmp_path, "cifar10", root)))
    assert str(bad.parent) in str(err.value) and "\n" not in str(err.value)
    # verified (real data): the MD5 check names the very file
    with pytest.raises(ConfigError, match="fails torchvision's MD5 check") as err:
        datasets_disk.check_available("cifar10", root, store=None, verify=True)
    assert "data_batch_1" in str(err.value) and "\n" not in str(err.value)


def test_verified_cifar_needs_the_metadata_file_and_checks_every_file(tmp_path, monkeypatch):
    root = fake_cifar10(tmp_path / "data")
    checked = []
    from torchvision.datasets import utils

    monkeypatch.setattr(utils, "check_integrity", lambda path, md5: checked.append(Path(path).name) or True)
    with pytest.raises(ConfigError, match="batches.meta is missing"):
        datasets_disk.check_available("cifar10", root, verify=True)
    (root / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"] * 10}))
    checked.clear()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_load_meta", lambda self: None)
    datasets_disk.check_available("cifar10", root, store=None, verify=True)
    assert checked == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def test_reader_returns_exactly_torchvisions_arrays_and_labels(tmp_path, monkeypatch):
    """Real-format pickles (random pixels and labels) read by ptqlib and by torchvision's CIFAR10."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        raw[name] = (rng.integers(0, 256, (7, 3072), dtype=np.uint8), rng.integers(0, 10, 7).tolist())
        write_cifar_batch(folder / name, raw[name][0], raw[name][1])
    data = load_dataset("cifar10", root=tmp_path / "data", store=tmp_path / "store", verify=False)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_load_meta", lambda self: None)
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        ref = torchvision.datasets.CIFAR10(str(tmp_path / "data"), train=split == "train")
        assert torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(ref.data)) and y.tolist() == ref.targets
    # and the rows are planes: image 3 of batch 1, green channel = bytes 1024..2047 of its row
    assert np.array_equal(data.x_train[3, 1].numpy().ravel(), raw["data_batch_1"][0][3, 1024:2048])
    assert data.y_test.tolist() == raw["test_batch"][1]


# ---------------------------------------------------------------- TinyImageNet

WNIDS = ["n09999999", "n01443537", "n02000000"]  # deliberately not in sorted order


def fake_tinyimagenet(root, per_class=3):
    """Training image j of class wnid w is filled with value 10 * rank(w) + j; val images 100 + i."""
    base = root / "tiny-imagenet-200"
    for w in WNIDS:
        rank = sorted(WNIDS).index(w)
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for j in range(per_class):
            Image.new("RGB", (64, 64), (10 * rank + j,) * 3).save(base / "train" / w / "images" / f"{w}_{j}.JPEG", quality=100)
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(["n02000000", "n09999999", "n01443537", "n02000000"]):
        Image.new("L", (64, 64), 100 + 10 * i).save(base / "val" / "images" / f"val_{i}.JPEG", quality=100)  # grayscale too
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "wnids.txt").write_text("\n".join(WNIDS))
    return root


def test_tinyimagenet_layout(tmp_path):
    root = fake_tinyimagenet(tmp_path / "data")
    data = load_dataset(**config(tmp_path, "tinyimagenet", root))
    assert data.x_train.shape == (9, 3, 64, 64) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (4, 3, 64, 64) and data.num_classes == 3
    # classes sorted by wnid: n01443537 -> 0, n02000000 -> 1, n09999999 -> 2, in both splits
    value = data.x_train[:, :, 32, 32].float().mean(1)
    label = data.y_train
    assert torch.allclose(value, (10 * label + torch.tensor([0, 1, 2] * 3)).float(), atol=2)
    assert sorted(label.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.y_test.tolist() == [1, 2, 0, 1]
    assert (data.x_test[:, 0, 32, 32].float() - torch.tensor([100, 110, 120, 130.])).abs().max() <= 2


def test_tinyimagenet_subset_keeps_every_class(tmp_path):
    root = fake_tinyimagenet(tmp_path / "data")
    data = load_dataset(**config(tmp_path, "tinyimagenet", root, train_subset=3, test_subset=2))
    assert sorted(data.y_train.tolist()) == [0, 1, 2]
    assert len(data.y_test) == 2


def test_tinyimagenet_is_decoded_once(tmp_path, monkeypatch):
    root = fake_tinyimagenet(tmp_path / "data")
    cfg = config(tmp_path, "tinyimagenet", root)
    first = load_dataset(**cfg)
    assert len(list((tmp_path / "store" / "dataset").glob("*/images.pt"))) == 1
    monkeypatch.setattr(datasets_disk, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_dataset(**cfg)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)


def test_tinyimagenet_missing_annotations(tmp_path):
    root = fake_tinyimagenet(tmp_path / "data")
    (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(ConfigError, match="val_annotations.txt not found.*tiny-imagenet-200.zip"):
        load_dataset(**config(tmp_path, "tinyimagenet", root))


def test_tinyimagenet_malformed_image_is_named(tmp_path):
    root = fake_tinyimagenet(tmp_path / "data")
    bad = root / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError) as err:
        load_dataset(**config(tmp_path, "tinyimagenet", root))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- ImageFolder

def fake_imagefolder(root, size=(12, 10)):
    """train/{cat,ant,bee} and test/{ant,cat}; pixel value = 50 * class rank + file index."""
    for split, counts in (("train", {"cat": 2, "ant": 3, "bee": 1}), ("test", {"ant": 1, "cat": 2})):
        for c, n in counts.items():
            (root / split / c).mkdir(parents=True)
            for j in range(n):
                rank = ["ant", "bee", "cat"].index(c)
                Image.new("RGB", size, (50 * rank + j, 0, 255)).save(root / split / c / f"img{j}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_layout(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    data = load_dataset(**config(tmp_path, "imagefolder", root))
    assert data.x_train.shape == (6, 3, 10, 12) and data.x_train.dtype == torch.uint8  # (N, C, H, W)
    assert data.num_classes == 3
    # classes sorted by folder name: ant 0, bee 1, cat 2; red channel = 50 * class + index
    assert sorted(zip(data.y_train.tolist(), data.x_train[:, 0, 0, 0].tolist())) == [
        (0, 0), (0, 1), (0, 2), (1, 50), (2, 100), (2, 101)]
    assert (data.x_train[:, 2] == 255).all()
    assert sorted(zip(data.y_test.tolist(), data.x_test[:, 0, 0, 0].tolist())) == [(0, 0), (2, 100), (2, 101)]


def test_imagefolder_resize_and_subset(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    data = load_dataset(**config(tmp_path, "imagefolder", root, image_size=8, train_subset=3))
    assert data.x_train.shape == (3, 3, 8, 8) and data.x_test.shape == (3, 3, 8, 8)
    assert sorted(data.y_train.tolist()) == [0, 1, 2]


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    Image.new("RGB", (20, 20)).save(root / "test" / "ant" / "odd.png")
    with pytest.raises(ConfigError, match="odd.png is 20x20 pixels.*image_size"):
        load_dataset(**config(tmp_path, "imagefolder", root))


def test_imagefolder_missing_split(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    import shutil

    shutil.rmtree(root / "test")
    with pytest.raises(ConfigError) as err:
        load_dataset(**config(tmp_path, "imagefolder", root))
    assert str(root / "test") in str(err.value) and "train/<class>" in str(err.value)


def test_dataset_identity_separates_subsets_and_folders(tmp_path):
    a = datasets_disk.dataset_identity("cifar10", root="x", train_subset=100)
    b = datasets_disk.dataset_identity("cifar10", root="y", train_subset=200)
    assert a != b
    c = datasets_disk.dataset_identity("imagefolder", root=tmp_path / "one")
    d = datasets_disk.dataset_identity("imagefolder", root=tmp_path / "two")
    assert c != d


@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_bad_image_fails_validation_before_any_training(tmp_path, damage):
    root = fake_imagefolder(tmp_path / "mydata")
    bad = root / "train" / "ant" / "x.jpg"
    if damage == "truncated":  # a real JPEG cut in half: its header opens, its pixels do not decode
        Image.new("RGB", (12, 10), (10, 200, 30)).save(bad, quality=95)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:
        bad.write_text("not an image at all")
    with pytest.raises(ConfigError) as err:
        datasets_disk.check_available("imagefolder", **disk(config(tmp_path, "imagefolder", root)))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "store").glob("dataset/*/images.pt"))  # nothing cached


def test_check_available_decodes_once_into_the_cache(tmp_path, monkeypatch):
    root = fake_imagefolder(tmp_path / "mydata")
    cfg = config(tmp_path, "imagefolder", root)
    folder = datasets_disk.check_available(cfg["dataset"], **disk(cfg))
    assert (folder / "images.pt").is_file()
    monkeypatch.setattr(datasets_disk, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    assert load_dataset(**cfg).x_train.shape == (6, 3, 10, 12)


def test_cli_stops_on_a_bad_image_with_exit_2(tmp_path, cli):
    root = fake_imagefolder(tmp_path / "mydata")
    bad = root / "test" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    preset = tmp_path / "bad.yaml"
    preset.write_text(f"name: bad\nstore: {tmp_path / 'store'}\nreports: {tmp_path / 'reports'}\n"
                      f"dataset: imagefolder\ndata_root: {root}\narch: resnet18\n")
    proc = cli("run", str(preset), "--stages", "train", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], proc.stderr
    assert not (tmp_path / "reports").exists() and not (tmp_path / "store" / "train").exists()


def test_the_study_path_loads_what_plain_arguments_load(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    cfg = validate({"dataset": "imagefolder", "arch": "resnet18", "data_root": str(root), "methods": ["rtn"],
                    "store": str(tmp_path / "store"), "image_size": 8, "train_subset": 4})
    spec = data_spec(cfg)
    a = load_data(spec, Store(cfg.store_path))
    b = load_dataset("imagefolder", root=root, store=tmp_path / "store", image_size=8, train_subset=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) and torch.equal(a.mean, b.mean)
    assert spec.identity() == datasets_disk.dataset_identity("imagefolder", train_subset=4, root=root, image_size=8)
