"""The reference pipeline (bytedance/LargeBatchCTR data_utils.py), re-expressed for tests and benchmarks.

pandas.read_csv, fillna("-1") + LabelEncoder per categorical field, fillna(0) + MinMaxScaler on the
dense fields. Needs pandas and scikit-learn (test/benchmark-only dependencies; imported lazily).
Returns the encoded frame's arrays rather than writing feather files.
"""
from __future__ import annotations

import numpy as np

from dataio.avazu_format import AVAZU_SPARSE
from dataio.criteo_format import CRITEO_DENSE, CRITEO_SPARSE


def reference_encode(dataset: str, path: str) -> dict[str, np.ndarray]:
    """{"sparse" (N, F) int64, "dense" (N, D) float64, "label" (N,)} as the reference computes them."""
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler

    if dataset == "criteo":
        data = pd.read_csv(path, delimiter="\t", header=None)
        data.columns = ["label"] + CRITEO_DENSE + CRITEO_SPARSE
        sparse, dense, target = CRITEO_SPARSE, CRITEO_DENSE, "label"
    else:
        data = pd.read_csv(path, dtype={"id": str})
        sparse, dense, target = AVAZU_SPARSE, [], "click"
    data[sparse] = data[sparse].fillna("-1")
    for feat in sparse:
        data[feat] = LabelEncoder().fit_transform(data[feat])
    if dense:
        data[dense] = data[dense].fillna(0)
        data[dense] = MinMaxScaler(feature_range=(0, 1)).fit_transform(data[dense])
    return {"sparse": data[sparse].to_numpy(np.int64),
            "dense": data[dense].to_numpy(np.float64) if dense else np.empty((len(data), 0)),
            "label": data[target].to_numpy()}
