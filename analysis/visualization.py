"""How an attribution map becomes colours, exactly as Captum's `visualize_image_attr` does it:
channels summed, a sign kept (absolute value, positive part, negative part, or all), and the colour
range ended at the outlier threshold, the value below which (100 − outlier_perc)% of the map's total
|attribution| lies (Captum's `_cumulative_sum_threshold`; outlier_perc 2 by default). Captum
normalizes every map on its own; `threshold` over several maps at once gives them one shared range."""

from __future__ import annotations

import numpy as np

SIGNS = ("absolute_value", "positive", "negative", "all")


def signed_map(attr: np.ndarray, sign: str) -> np.ndarray:
    """(C, H, W) attribution → (H, W): summed over channels, then the chosen sign kept."""
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}; got {sign!r}")
    m = np.asarray(attr, dtype=np.float64).sum(0)
    if sign == "absolute_value":
        return np.abs(m)
    if sign == "positive":
        return np.maximum(m, 0)
    if sign == "negative":
        return np.minimum(m, 0)
    return m


def threshold(maps: list[np.ndarray], outlier_perc: float = 2.0) -> float:
    """The colour range's end for (H, W) maps taken together: the smallest |value| at which the
    cumulative sum of the sorted |values| reaches (100 − outlier_perc)% of their total. 0 for
    all-zero maps."""
    if not 0 <= outlier_perc <= 100:
        raise ValueError(f"outlier_perc is a percentage in [0, 100]; got {outlier_perc}")
    values = np.sort(np.concatenate([np.abs(m).ravel() for m in maps]))
    sums = np.cumsum(values)
    if sums[-1] == 0:
        return 0.0
    reached = sums >= sums[-1] * 0.01 * (100.0 - outlier_perc)
    # rounding can leave the total a hair short of "100%" of itself (Captum then fails): the largest value
    return float(values[np.argmax(reached)] if reached.any() else values[-1])


def normalized(m: np.ndarray, limit: float, sign: str = "all") -> np.ndarray:
    """An (H, W) map from `signed_map` in Captum's display range: divided by `limit` and clipped,
    to [0, 1] for one sign (the negative part's magnitudes, for "negative") and [−1, 1] for "all".
    An all-zero map stays zero."""
    if limit == 0:
        return np.zeros_like(m)
    return np.clip(m / (-limit if sign == "negative" else limit), -1.0, 1.0)


COLOURS = {
    "absolute_value": "Blues",
    "positive": "Greens",
    "negative": "Reds",
    "all": ((0.0, "red"), (0.5, "white"), (1.0, "green")),
}  # Captum's colour maps per sign
