"""The scaling rules reproduce the reference README's published tables."""
import math

import pytest

from engine.scaling import AVAZU_BASE, CRITEO_BASE, REFERENCE_DEFAULTS, scale_hyperparameters

# bytedance/LargeBatchCTR README, Criteo: (batch, lr, l2, zeta); the README prints lr cut to 2 decimals
CRITEO_TABLE = [(1024, 8e-4, 1e-5), (2048, 11.31e-4, 2e-5), (4096, 16e-4, 4e-5), (8192, 22.62e-4, 8e-5),
                (16384, 32e-4, 16e-5), (32768, 45.25e-4, 32e-5), (65536, 64e-4, 64e-5),
                (131072, 90.50e-4, 128e-5)]
# bytedance/LargeBatchCTR README, Avazu: (batch, lr, l2, zeta); its 128K row is tuned by hand
AVAZU_TABLE = [(1024, 1e-4, 1e-5, 1e-3), (2048, 1.41e-4, 2e-5, 1e-3), (4096, 2e-4, 4e-5, 1e-4),
               (8192, 2.83e-4, 8e-5, 1e-4), (16384, 4e-4, 16e-5, 1e-4), (32768, 5.66e-4, 32e-5, 1e-4),
               (65536, 8e-4, 64e-5, 1e-4), (131072, 16e-4, 96e-5, 1e-4)]


@pytest.mark.parametrize("bs,lr,l2", CRITEO_TABLE)
def test_cowclip_rule_reproduces_criteo_table(bs, lr, l2):
    hp = scale_hyperparameters("cowclip", bs)
    assert abs(hp["lr"] - lr) < 0.01e-4          # within the README's last printed digit
    assert hp["l2"] == pytest.approx(l2, rel=1e-12)
    assert hp["lr_embed"] == 1e-4 and hp["bound"] == 1e-5 and hp["clip"] == 1.0 and hp["warmup"] == 1.0


def test_criteo_128k_rounds_to_published_command():
    assert scale_hyperparameters("cowclip", 131072)["lr"] == pytest.approx(90.5096e-4, abs=1e-8)
    assert round(scale_hyperparameters("cowclip", 131072)["lr"] * 1e4, 2) == 90.51


@pytest.mark.parametrize("bs,lr,l2,bound", AVAZU_TABLE)
def test_cowclip_rule_reproduces_avazu_table(bs, lr, l2, bound):
    hp = scale_hyperparameters("cowclip", bs, AVAZU_BASE)
    assert abs(hp["lr"] - lr) < 0.01e-4 and hp["l2"] == pytest.approx(l2) and hp["bound"] == bound
    assert hp["lr_embed"] == 1e-4 and hp["clip"] == 1.0


def test_auto_is_the_reference_baseline_at_the_base_batch_and_cowclip_elsewhere():
    base = scale_hyperparameters("auto", 1024)
    assert {k: base[k] for k in ("lr", "lr_embed", "l2", "clip", "bound", "warmup")} == \
        {k: REFERENCE_DEFAULTS[k] for k in ("lr", "lr_embed", "l2", "clip", "bound", "warmup")}
    assert scale_hyperparameters("auto", 8192) == scale_hyperparameters("cowclip", 8192)
    assert scale_hyperparameters("auto", 4096, dict(CRITEO_BASE, bs=4096))["clip"] == 0.0


def test_other_rules():
    s = 32
    assert scale_hyperparameters("none", 1024 * s)["lr"] == CRITEO_BASE["lr"]
    sq = scale_hyperparameters("sqrt", 1024 * s)
    assert sq["lr_embed"] == pytest.approx(1e-4 * math.sqrt(s)) and sq["clip"] == 0.0
    lin = scale_hyperparameters("linear", 1024 * s)
    assert lin["lr"] == pytest.approx(8e-4 * s) and lin["l2"] == 1e-5
    with pytest.raises(ValueError):
        scale_hyperparameters("cubic", 2048)
