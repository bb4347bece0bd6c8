"""How much wider a spread may be than the one measured, when the measurement saw few
independent looks.

Calibration measures the seasonal part of the score on the training rows, and that part moves
slowly: it is an exponential average (weight ``alpha``) of residuals, so ``N`` readings of it
hold only about ``N·alpha/(2 - alpha)`` independent values (its variance is ``alpha/(2 -
alpha)`` of the residuals'; :func:`ewma_looks`). On NAB's daily files the probation leaves
166 such readings, about four looks, and the tail seen in them says little about the weeks
that follow. A root mean square from ``k`` independent looks at a normal variable satisfies
``k·(rms/σ)² ~ χ²(k)``, so with confidence ``c`` the true spread is at most ``rms ·
sqrt(k / χ²_{1-c}(k))`` (:func:`upper_spread_factor`): about 2.4 for four looks at 95 %, 1.2
for fifty. Nothing here needs scipy: the χ² quantile comes from its distribution function, a
series, by bisection.
"""

from __future__ import annotations

import math


def ewma_looks(readings: int, alpha: float) -> float:
    """How many independent values ``readings`` successive values of an exponential average
    with weight ``alpha`` (of independent inputs) are worth.

    >>> ewma_looks(390, 0.05)
    10.0
    """
    return readings * alpha / (2.0 - alpha)


def chi2_cdf(x: float, k: float) -> float:
    """P(X <= x) for X ~ χ²(k), ``k`` > 0 not necessarily whole: the regularised lower
    incomplete gamma function P(k/2, x/2) from its power series (fast where it is needed
    here, below the median).

    >>> round(chi2_cdf(3.940299, 10), 4), round(chi2_cdf(2.0, 2), 4)  # 1 - exp(-1)
    (0.05, 0.6321)
    """
    if x <= 0.0:
        return 0.0
    s, y = k / 2.0, x / 2.0
    term = total = 1.0 / s
    n = 1
    while term > total * 1e-16:
        term *= y / (s + n)
        total += term
        n += 1
    return min(1.0, math.exp(s * math.log(y) - y - math.lgamma(s)) * total)


def chi2_quantile(p: float, k: float) -> float:
    """The ``p`` quantile (0 < p <= 0.5) of χ²(k), by bisection between 0 and ``k`` (a χ²
    distribution's median lies below its mean ``k``).

    >>> round(chi2_quantile(0.05, 10), 3), round(chi2_quantile(0.05, 1), 5)
    (3.94, 0.00393)
    """
    if not 0.0 < p <= 0.5 or k <= 0.0:
        raise ValueError(f"chi2_quantile needs 0 < p <= 0.5 and k > 0, got p={p}, k={k}")
    lo, hi = 0.0, k
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if chi2_cdf(mid, k) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def upper_spread_factor(looks: float, confidence: float) -> float:
    """By how much the true spread may exceed a root mean square measured on ``looks``
    independent values, with ``confidence`` (0.5 <= confidence < 1).

    >>> round(upper_spread_factor(10, 0.95), 3), round(upper_spread_factor(4.3, 0.95), 2)
    (1.593, 2.27)
    >>> round(upper_spread_factor(1000, 0.95), 3)  # many looks: the measurement stands
    1.038
    """
    if not 0.5 <= confidence < 1.0 or looks <= 0.0:
        raise ValueError(f"upper_spread_factor needs 0.5 <= confidence < 1 and looks > 0, got "
                         f"confidence={confidence}, looks={looks}")
    return math.sqrt(looks / chi2_quantile(1.0 - confidence, looks))
