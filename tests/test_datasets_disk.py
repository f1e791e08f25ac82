"""On-disk datasets: each test writes a tiny fake dataset in exactly the real layout."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ptqlib import datasets_disk
from ptqlib.config import ConfigError, validate
from ptqlib.data import channel_stats, load_dataset


def config(tmp_path, dataset, root, **kw):
    return validate({"dataset": dataset, "arch": "resnet18", "data_root": str(root),
                     "store": str(tmp_path / "store"), **kw})


# ---------------------------------------------------------------- CIFAR

def write_cifar_batch(path, images, labels, label_key=b"labels"):
    """A pickle like torchvision's: uint8 rows of 3072 (R plane, G plane, B plane)."""
    entry = {b"batch_label": b"fake", b"data": images.reshape(len(images), -1), label_key: list(labels),
             b"filenames": [b"x.png"] * len(images)}
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
    data = load_dataset(config(tmp_path, "cifar10", root))
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
    data = load_dataset(config(tmp_path, "cifar10", root, train_subset=8, test_subset=2))
    assert data.x_train[:, 0, 0, 0].tolist() == list(range(8))
    assert data.y_test.tolist() == [3, 4]
    assert data.mean[0] == pytest.approx(3.5 / 255, abs=1e-6)  # statistics of the pool in use


def test_cifar_root_may_be_the_dataset_folder_itself(tmp_path):
    root = fake_cifar10(tmp_path / "data")
    data = load_dataset(config(tmp_path, "cifar10", root / "cifar-10-batches-py"))
    assert len(data.y_train) == 30


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    x = np.zeros((4, 3072), dtype=np.uint8)
    for split, fine in (("train", [99, 0, 42, 7]), ("test", [5, 6, 7, 8])):
        entry = {b"data": x, b"fine_labels": fine, b"coarse_labels": [1, 1, 1, 1]}
        (folder / split).write_bytes(pickle.dumps(entry))
    data = load_dataset(config(tmp_path, "cifar100", tmp_path / "data"))
    assert data.num_classes == 100
    assert data.y_train.tolist() == [99, 0, 42, 7] and data.y_test.tolist() == [5, 6, 7, 8]


def test_missing_cifar_folder_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset(config(tmp_path, "cifar10", tmp_path / "nowhere"))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data_batch_1..5" in msg and "cifar-10-python.tar.gz" in msg and "download: true" in msg
    assert not (tmp_path / "nowhere").exists()  # never a silent download


def test_missing_cifar_file_is_named(tmp_path):
    root = fake_cifar10(tmp_path / "data")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="lacks data_batch_3"):
        datasets_disk.check_available(config(tmp_path, "cifar10", root))


@pytest.mark.parametrize("content, problem", [
    (b"this is not a pickle", "not a readable CIFAR pickle"),
    (pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}), "expected uint8 \\(N, 3072\\)"),
    (pickle.dumps({b"images": 1}), "has no b'data'"),
])
def test_malformed_cifar_file_is_named(tmp_path, content, problem):
    root = fake_cifar10(tmp_path / "data")
    bad = root / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as err:
        load_dataset(config(tmp_path, "cifar10", root))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


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
    data = load_dataset(config(tmp_path, "tinyimagenet", root))
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
    data = load_dataset(config(tmp_path, "tinyimagenet", root, train_subset=3, test_subset=2))
    assert sorted(data.y_train.tolist()) == [0, 1, 2]
    assert len(data.y_test) == 2


def test_tinyimagenet_is_decoded_once(tmp_path, monkeypatch):
    root = fake_tinyimagenet(tmp_path / "data")
    cfg = config(tmp_path, "tinyimagenet", root)
    first = load_dataset(cfg)
    assert len(list((tmp_path / "store" / "dataset").glob("*/images.pt"))) == 1
    monkeypatch.setattr(datasets_disk, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_dataset(cfg)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)


def test_tinyimagenet_missing_annotations(tmp_path):
    root = fake_tinyimagenet(tmp_path / "data")
    (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(ConfigError, match="val_annotations.txt not found.*tiny-imagenet-200.zip"):
        load_dataset(config(tmp_path, "tinyimagenet", root))


def test_tinyimagenet_malformed_image_is_named(tmp_path):
    root = fake_tinyimagenet(tmp_path / "data")
    bad = root / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError) as err:
        load_dataset(config(tmp_path, "tinyimagenet", root))
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
    data = load_dataset(config(tmp_path, "imagefolder", root))
    assert data.x_train.shape == (6, 3, 10, 12) and data.x_train.dtype == torch.uint8  # (N, C, H, W)
    assert data.num_classes == 3
    # classes sorted by folder name: ant 0, bee 1, cat 2; red channel = 50 * class + index
    assert sorted(zip(data.y_train.tolist(), data.x_train[:, 0, 0, 0].tolist())) == [
        (0, 0), (0, 1), (0, 2), (1, 50), (2, 100), (2, 101)]
    assert (data.x_train[:, 2] == 255).all()
    assert sorted(zip(data.y_test.tolist(), data.x_test[:, 0, 0, 0].tolist())) == [(0, 0), (2, 100), (2, 101)]


def test_imagefolder_resize_and_subset(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    data = load_dataset(config(tmp_path, "imagefolder", root, image_size=8, train_subset=3))
    assert data.x_train.shape == (3, 3, 8, 8) and data.x_test.shape == (3, 3, 8, 8)
    assert sorted(data.y_train.tolist()) == [0, 1, 2]


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    Image.new("RGB", (20, 20)).save(root / "test" / "ant" / "odd.png")
    with pytest.raises(ConfigError, match="odd.png is 20x20 pixels.*image_size"):
        load_dataset(config(tmp_path, "imagefolder", root))


def test_imagefolder_missing_split(tmp_path):
    root = fake_imagefolder(tmp_path / "mydata")
    import shutil

    shutil.rmtree(root / "test")
    with pytest.raises(ConfigError) as err:
        load_dataset(config(tmp_path, "imagefolder", root))
    assert str(root / "test") in str(err.value) and "train/<class>" in str(err.value)


def test_dataset_identity_separates_subsets_and_folders(tmp_path):
    a = datasets_disk.dataset_identity(config(tmp_path, "cifar10", "x", train_subset=100))
    b = datasets_disk.dataset_identity(config(tmp_path, "cifar10", "y", train_subset=200))
    assert a != b
    c = datasets_disk.dataset_identity(config(tmp_path, "imagefolder", tmp_path / "one"))
    d = datasets_disk.dataset_identity(config(tmp_path, "imagefolder", tmp_path / "two"))
    assert c != d
