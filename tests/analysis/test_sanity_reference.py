"""Spearman's rank correlation against SciPy, ties included."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from lenscape.analysis.sanity import spearman


def test_the_issue_example_with_ties_matches_scipy():
    a = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 2, 3, 4]], dtype=torch.float64)
    b = torch.tensor([[0, 0, 0, 0, 0, 0, 4, 3, 2, 1]], dtype=torch.float64)
    assert float(spearman(a, b)) == pytest.approx(spearmanr(a[0], b[0]).statistic, abs=1e-12)
    assert float(spearman(a, b)) == pytest.approx(0.846, abs=1e-3)


def test_a_constant_map_has_no_rank_correlation():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    b = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    r = spearman(a, b)
    assert float(r[0]) == pytest.approx(-1.0) and math.isnan(float(r[1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-3, 3)), min_size=3, max_size=40))
def test_matches_scipy_on_rows_with_many_ties(pairs):
    a, b = (np.array(v, dtype=float) for v in zip(*pairs))
    expected = spearmanr(a, b).statistic if a.std() > 0 and b.std() > 0 else float("nan")
    got = float(spearman(torch.tensor(a)[None], torch.tensor(b)[None]))
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-9)
