"""Every layer's and model's backward against float64 finite differences of its own forward."""
import pytest

from models import MODELS
from validate.audit import gradcheck


def test_every_layer_backward_matches_finite_differences():
    rows = gradcheck.check_layers()
    assert len(rows) >= 30
    bad = [(what, p, err) for what, p, err in rows if not err <= gradcheck.TOLERANCE]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_backward_matches_finite_differences(name):
    rows = gradcheck.check_model(name)
    bad = [(p, err) for _, p, err in rows if not err <= gradcheck.TOLERANCE]
    assert not bad, bad


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    # the check must be able to fail: break FM's backward by a factor and expect a large error
    from engine.layers import fm

    real = fm.fm_backward
    monkeypatch.setattr(fm, "fm_backward", lambda dout, cache: 1.01 * real(dout, cache))
    rows = gradcheck.check_layers()
    assert dict(((w, p), e) for w, p, e in rows)[("fm", "emb")] > 1e-3


def test_check_batch_has_repeated_single_and_once_seen_ids():
    batch = gradcheck.check_batch()
    field0, field1, field2 = batch.sparse[:, 0], batch.sparse[:, 1], batch.sparse[:, 2]
    assert len(set(field0.tolist())) < len(field0)          # repeats within a field
    assert len(set(field1.tolist())) == len(field1)         # ids seen once
    assert set(field2.tolist()) == {0}                      # a field with a single id
