"""One epoch of ResNet-18 on a tiny fake CIFAR-10, through the real runner and train notebook."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def write_fake_cifar10(root: Path, train: int = 64, test: int = 32) -> None:
    """torchvision's CIFAR-10 python layout: five training pickles and one test pickle (str keys, as
    torchvision reads the real Python 2 pickles)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_batch = train // 5 + 1
    labels = np.arange(5 * per_batch) % 10
    for b in range(5):
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": labels[b * per_batch:(b + 1) * per_batch].tolist()}
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(entry))
    entry = {"data": rng.integers(0, 256, (test, 3072), dtype=np.uint8), "labels": (np.arange(test) % 10).tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(entry))


def test_one_epoch_resnet18_on_fake_cifar10(tmp_path):
    write_fake_cifar10(tmp_path / "data")
    preset = tmp_path / "fakecifar.yaml"
    preset.write_text(f"""
name: fakecifar
store: {tmp_path / 'store'}
reports: {tmp_path / 'reports'}
dataset: cifar10
data_root: {tmp_path / 'data'}
train_subset: 64
arch: resnet18
num_targets: 1
num_shadows: 4
epochs: 1
batch_size: 32
augment: crop_flip
methods: [rtn]
bits: [4]
queries: identity
threads: 2
""")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PTQLIB_VERIFY_CHECKSUMS": "0"}  # fake files fail MD5
    proc = subprocess.run([sys.executable, "-m", "ptqlib", "run", str(preset), "--stages", "train"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "reports" / "fakecifar" / "01_train.html").is_file()
    # the dataset was cached once in the store and one target model was trained on 32 members
    assert len(list((tmp_path / "store" / "dataset").glob("*/images.pt"))) == 1
    models = list((tmp_path / "store" / "train").glob("*/model.pt"))
    assert len(models) == 1
    assert int(np.load(models[0].parent / "keep.npy").sum()) == 32
