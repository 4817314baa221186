"""Confidence intervals and paired significance for per-question scores (scipy.stats)."""
from __future__ import annotations

import numpy as np
from scipy import stats

RESAMPLES = 2000


def mean_ci(values, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its percentile-bootstrap confidence interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean()), float(x.mean())
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES, method="percentile",
                          random_state=np.random.default_rng(seed), vectorized=True)
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_comparison(a, b, seed: int = 0) -> dict:
    """System a vs system b on the same questions: mean difference (a - b), its bootstrap 95% CI, and a
    two-sided paired permutation test's p-value (sign flips of the per-question differences)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired comparison needs two equal, non-empty score lists")
    diff = x - y
    mean, low, high = mean_ci(diff, seed=seed)
    if np.all(diff == 0):
        p = 1.0
    else:
        res = stats.permutation_test((x, y), lambda u, v, axis=-1: np.mean(u - v, axis=axis),
                                     permutation_type="samples", n_resamples=9999, vectorized=True,
                                     alternative="two-sided", random_state=np.random.default_rng(seed))
        p = float(res.pvalue)
    ratio = float(x.mean() / y.mean()) if y.mean() > 0 else None
    return {"diff": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "p_value": round(p, 4),
            "ratio": round(ratio, 3) if ratio is not None else None, "n": int(x.size)}
