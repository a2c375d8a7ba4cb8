import gzip

import numpy as np
import pytest

from lsnn.reference.errors import ConfigError
import torch

from lsnn.reference.tasks import SMNIST, StoreRecall, accuracy, decisions, make_task
from lsnn.reference.tasks.idx import IDXError, read_idx, write_idx
from lsnn.reference.tasks.smnist import encode


def test_store_recall_structure():
    task = StoreRecall()
    rng = np.random.default_rng(1)
    X, target = task.batch(32, rng)
    assert X.shape == (task.T, 32, task.n_in) and X.dtype == torch.float32
    assert set(X.unique().tolist()) <= {0.0, 1.0}
    G, S = task.n_per_group, task.steps_per_period
    store_ch, recall_ch = slice(2 * G, 3 * G), slice(3 * G, 4 * G)
    for b in range(32):
        per_period = X[:, b].reshape(task.n_periods, S, -1).sum(1)  # spikes per period and channel
        store = per_period[:, store_ch].sum(1).nonzero().flatten()
        recall = per_period[:, recall_ch].sum(1).nonzero().flatten()
        assert len(store) == 1 and len(recall) == 1
        s, r = int(store[0]), int(recall[0])
        # at least one second from the end of the store period to the recall cue
        assert (r - s - 1) * task.period_ms >= 1000
        value = int(per_period[s, :2 * G].reshape(2, G).sum(1).argmax())
        asked = target[:, b][target[:, b] >= 0]
        assert len(asked) == S and (asked == value).all()
        assert (target[r * S:(r + 1) * S, b] == value).all()
        assert per_period[r, :2 * G].sum() == 0  # the value is not shown at recall


def test_store_recall_heldout_is_fixed_and_differs_from_training():
    task = StoreRecall(heldout_size=16)
    a = [x for x, _ in task.heldout(8)]
    b = [x for x, _ in task.heldout(8)]
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    train, _ = task.batch(8, np.random.default_rng(0))
    assert not torch.equal(train, a[0])


def test_store_recall_rejects_impossible_delay():
    with pytest.raises(ConfigError, match="cannot hold"):
        StoreRecall(n_periods=5)


def test_threshold_crossing_encoding_by_hand():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 0, 1] = 255  # pixel 1 rises to white, pixel 2 falls back
    X = encode(img, n_in=80, cue_steps=4)
    L = 39
    assert X.shape == (788, 1, 80)
    assert X[1, 0, :L].sum() == L and X[1, 0, L:2 * L].sum() == 0  # every onset channel at pixel 1
    assert X[2, 0, L:2 * L].sum() == L and X[2, 0, :L].sum() == 0  # every offset channel at pixel 2
    assert X[:784, 0].sum() == 2 * L
    assert (X[784:, 0, 2 * L:] == 1).all() and X[784:, 0, :2 * L].sum() == 0  # cue channels
    mid = np.zeros((1, 28, 28), np.uint8)
    mid[0, 0, 0] = 128  # crosses the thresholds below 128 only
    n_below = int((np.linspace(0, 255, L + 2)[1:-1] <= 128).sum())
    assert encode(mid, 80, 0)[0, 0, :L].sum() == n_below


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    np.testing.assert_array_equal(read_idx(path), arr)


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(IDXError, match="holds 3 bytes"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(IDXError, match="bad magic"):
        read_idx(bad)
    (tmp_path / "c.gz").write_bytes(gzip.compress(b"x" * 10)[:12])
    with pytest.raises(IDXError, match="corrupt gzip"):
        read_idx(tmp_path / "c.gz")
    with pytest.raises(FileNotFoundError, match="no-such"):
        read_idx(tmp_path / "no-such")


def test_smnist_loads_tiny_idx_files(tiny_mnist):
    task = make_task("smnist", data_dir=str(tiny_mnist), cue_steps=8)
    X, target = task.batch(5, np.random.default_rng(0))
    assert X.shape == (792, 5, 80) and target.shape == (792, 5)
    assert (target[:784] == -1).all() and (target[784:] >= 0).all()
    batches = list(task.heldout(5))
    assert [x.shape[1] for x, _ in batches] == [5, 5, 2]


def test_smnist_missing_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        SMNIST(data_dir=str(tmp_path)).batch(1, np.random.default_rng(0))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        SMNIST(data_dir=str(tmp_path / "absent")).batch(1, np.random.default_rng(0))


def test_decisions_average_each_window():
    # two sequences; seq 0 has two windows (labels 1 then 0), seq 1 one window (label 2)
    target = torch.tensor([[-1, 2], [1, 2], [1, -1], [-1, -1], [0, -1]])
    Y = torch.zeros(5, 2, 3)
    Y[1, 0, 1], Y[2, 0, 0] = 3.0, 1.0  # window mean favours class 1
    Y[4, 0, 2] = 1.0  # wrong for label 0
    Y[0, 1, 2] = Y[1, 1, 2] = 1.0
    pred, labels = decisions(Y, target)
    assert labels.tolist() == [1, 0, 2] and pred.tolist() == [1, 2, 2]
    assert accuracy(Y, target) == (2, 3)


@pytest.mark.parametrize("name", ["store-recall", "smnist", "l2l-regression"])
def test_rows_of_a_batch_are_that_batch_s_rows(name, tiny_mnist):
    """What each of several processes draws (its rows) joins up to the one-process batch, and the
    generator ends where the whole batch leaves it (the next batch is the same too)."""
    task = make_task(name, **({"data_dir": tiny_mnist} if name == "smnist" else {}))
    whole_rng, part_rngs = np.random.default_rng(3), [np.random.default_rng(3) for _ in range(2)]
    for _ in range(2):
        X, target = task.batch(6, whole_rng)
        parts = [task.batch(6, rng, slice(3 * r, 3 * r + 3)) for r, rng in enumerate(part_rngs)]
        assert all(p[0].shape[1] == 3 for p in parts)
        torch.testing.assert_close(torch.cat([p[0] for p in parts], 1), X, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([p[1] for p in parts], 1), target, rtol=0, atol=0, equal_nan=True)
