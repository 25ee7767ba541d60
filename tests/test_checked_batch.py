"""The device reader's batches are CheckedBatches (their split's ids were range-checked when read), and
the models skip their per-step id check for those only: a plain Batch is still checked."""
import numpy as np
import pytest

from dataio.device_reader import DeviceBatchReader
from dataio.schema import Batch, CheckedBatch
from models import ModelConfig, Schema, build_model


def test_device_reader_yields_checked_batches(data_dir):
    batch = next(DeviceBatchReader(data_dir, "train", 64, xp=np, seed=1).iter_epoch(0))
    assert isinstance(batch, CheckedBatch) and isinstance(batch, Batch)


def test_the_id_check_is_skipped_for_checked_batches_only():
    model = build_model("lr", Schema((4, 6), 0), ModelConfig(embed_dim=2))
    sparse = np.array([[1, 2], [3, 5]], dtype=np.int32)
    dense, label = np.zeros((2, 0), np.float32), np.zeros(2, np.float32)
    want = sparse.astype(np.int64) + np.array([0, 4])
    for batch in (Batch(sparse, dense, label), CheckedBatch(sparse, dense, label)):
        assert np.array_equal(model.batch_ids(batch), want)
    bad = np.array([[1, 2], [3, 6]], dtype=np.int32)            # 6 is outside the second field's 6 rows
    with pytest.raises(ValueError, match="outside its vocabulary"):
        model.batch_ids(Batch(bad, dense, label))
    model.batch_ids(CheckedBatch(bad, dense, label))            # trusted: no check, no host read-back
    with pytest.raises(ValueError, match="expected"):           # the shape is still checked
        model.batch_ids(CheckedBatch(sparse[:, :1], dense, label))
