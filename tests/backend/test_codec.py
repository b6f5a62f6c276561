import numpy as np
import pytest
import torch

from lenscape.analysis.summary import SummaryConfig
from lenscape.backend.codec import decode, encode


def test_round_trip_of_nested_results():
    obj = {
        "a": np.arange(6).reshape(2, 3),
        "t": torch.ones(2),
        "cfg": SummaryConfig(n_samples=3),
        "nested": [1, 2.5, "x", None, (True, {"k": np.float32(1.5)})],
    }
    out = decode(encode(obj))
    assert np.array_equal(out["a"], obj["a"]) and torch.equal(out["t"], obj["t"])
    assert out["cfg"] == SummaryConfig(n_samples=3)
    assert out["nested"] == [1, 2.5, "x", None, (True, {"k": 1.5})]


def test_refuses_foreign_types():
    with pytest.raises(TypeError):
        encode({"f": object()})
    with pytest.raises(TypeError):
        encode(np.array([object()], dtype=object))
