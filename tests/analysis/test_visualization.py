"""Display normalization against Captum's own (`visualize_image_attr`'s `_normalize_attr`), and the
shared threshold against a plain NumPy reading of its definition."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lenscape.analysis.visualization import SIGNS, normalized, signed_map, threshold

maps = arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(2, 9), st.integers(2, 9)),
    elements=st.floats(-5, 5, allow_nan=False, width=32),
)


@settings(max_examples=200, deadline=None)
@given(attr=maps, sign=st.sampled_from(SIGNS), perc=st.sampled_from([0, 2, 10, 50]))
def test_matches_captums_normalization(attr, sign, perc):
    from captum.attr._utils.visualization import _normalize_attr

    m = signed_map(attr, sign)
    limit = threshold([m], perc)
    if limit == 0:  # Captum refuses to divide by 0; we show zeros
        assert not normalized(m, limit, sign).any()
        return
    try:
        expected = _normalize_attr(attr.sum(0), sign, perc)
    except IndexError:  # Captum's own rounding slip at outlier_perc 0: we take the largest |value|
        assert perc == 0 and limit == np.abs(m).max()
        return
    assert np.allclose(normalized(m, limit, sign), expected, atol=1e-12)


def test_signs_and_the_shared_threshold_by_hand():
    attr = np.array([[[1.0, -3.0], [0.5, 0.0]], [[1.0, 1.0], [-2.5, 0.0]]])  # channel sums: [[2, -2], [-2, 0]]
    assert signed_map(attr, "all").tolist() == [[2, -2], [-2, 0]]
    assert signed_map(attr, "absolute_value").tolist() == [[2, 2], [2, 0]]
    assert signed_map(attr, "positive").tolist() == [[2, 0], [0, 0]]
    assert signed_map(attr, "negative").tolist() == [[0, -2], [-2, 0]]
    # |values| 1, 2, 3, 4: cumulative 1, 3, 6, 10; 98% of 10 is first reached at 4, 60% (perc 40) at 3
    a, b = np.array([[1.0, -4.0]]), np.array([[2.0, 3.0]])
    assert threshold([a, b], 2) == 4.0 and threshold([a, b], 40) == 3.0 and threshold([a], 2) == 4.0
    assert normalized(np.array([[-4.0, -1.0]]), 4.0, "negative").tolist() == [[1.0, 0.25]]
    assert normalized(np.array([[6.0, -1.0]]), 3.0, "all").tolist() == [[1.0, -1 / 3]]
    assert threshold([np.zeros((2, 2))], 2) == 0.0
    with pytest.raises(ValueError, match="sign"):
        signed_map(attr, "abs")
    with pytest.raises(ValueError, match="outlier_perc"):
        threshold([a], 120)


def test_threshold_edges_by_hand():
    # leading zeros and a total of exactly 1 are ordinary maps, not all-zero ones
    assert threshold([np.array([0.0, 0.0, 0.0, 5.0])]) == 5.0
    assert threshold([np.full(4, 0.25)]) == 0.25
    assert threshold([np.zeros((2, 2))]) == 0.0
    # the default is Captum's 2%: on 1..1000 it differs from 3%
    m = np.arange(1.0, 1001.0)
    assert threshold([m]) == threshold([m], 2.0) != threshold([m], 3.0)
    # 100% and 0% are percentages; 100.5 is not
    assert threshold([m], 100) == 1.0 and threshold([m], 0) == 1000.0
    with pytest.raises(ValueError):
        threshold([m], 100.5)
    # a total that rounding leaves a hair short of 100% of itself: the largest value, not the smallest
    t = next(t for t in np.linspace(0.01, 0.02, 100001) if ((3e-3 + t) * 0.01) * 100.0 > np.cumsum([1e-3, 2e-3, t])[-1])
    assert threshold([np.array([t, 1e-3, 2e-3])], 0) == t


def test_channels_are_summed_in_double_precision_and_zero_maps_keep_their_shape():
    half = np.full((2, 1, 2), 40000, dtype=np.float16)  # 80,000 overflows float16
    assert signed_map(half, "all").tolist() == [[80000.0, 80000.0]]
    assert normalized(np.zeros((3, 4)), 0.0).shape == (3, 4)
    # beyond the threshold, both ends are clipped: to [-1, 1] for "all", [0, 1] for one sign
    assert normalized(np.array([[-5.0, -1.0, 5.0]]), 2.0, "all").tolist() == [[-1.0, -0.5, 1.0]]
    assert normalized(np.array([[-5.0, -1.0, 0.0]]), 2.0, "negative").tolist() == [[1.0, 0.5, -0.0]]
