"""Lower confidence bound on the mean of non-negative observations by testing by betting.

For each candidate mean m a gambler starts with wealth 1 and bets on "the mean exceeds m":
K_t(m) = prod_{i<=t} (1 + lambda_i(m) (x_i - m)), with bets 0 <= lambda_i(m) <= c / m fixed before
x_i is seen, so the wealth stays positive for any x_i >= 0 (c < 1). If no conditional mean
exceeds m, K_t(m) is a non-negative supermartingale and by Ville's inequality reaches 1/alpha with
probability at most alpha, so {m : max_t K_t(m) < 1/alpha} is a (1 - alpha) confidence set.
This is the predictable plug-in betting bound of Waudby-Smith & Ramdas (2023, "Estimating means
of bounded random variables by betting", JRSSB), one-sided, as used for off-policy evaluation by
Waudby-Smith, Wu, Ramdas, Karampatziakis & Mineiro (2022, "Anytime-valid off-policy inference for
contextual bandits"). It needs only x_i >= 0, not an upper bound: importance weights may be large.

Assumption: taken in the given order, each observation's conditional mean given the earlier ones
is at most theta; then P(L <= theta) >= 1 - alpha. For i.i.d. observations theta is their mean;
for importance-weighted rewards of a fixed target policy it is the (scaled) target value, even
when the logging policy adapts over time. Valid for every n, not just asymptotically.
"""

from __future__ import annotations

import math

import numpy as np

from bandit_server.offline.estimator_inputs import FloatArray

# Truncation of each bet at c/m keeps one observation from losing more than c of the wealth;
# Waudby-Smith & Ramdas recommend 1/2 or 3/4.
_MAX_BET_FRACTION = 0.5
_TOLERANCE = 1e-9


def betting_lower_bound(x: FloatArray, alpha: float) -> float:
    """A value L in [0, 1] with P(L <= theta) >= 1 - alpha for non-negative x whose conditional
    means are at most theta (see the module docstring); the caller scales x so theta <= 1.
    Computed by bisection to within 1e-9, rounded down."""
    threshold = math.log(1.0 / alpha)
    bets = plug_in_bets(x, alpha)

    def rejected(m: float) -> bool:
        lam = bets if m == 0.0 else np.minimum(bets, _MAX_BET_FRACTION / m)
        log_wealth = np.cumsum(np.log1p(lam * (x - m)))
        return bool(log_wealth.max() >= threshold)

    # The wealth falls as m grows (each factor does), so the rejected means form an interval
    # [0, L) and bisection finds its end.
    if not rejected(0.0):
        return 0.0
    if rejected(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    while hi - lo > _TOLERANCE:
        mid = (lo + hi) / 2
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def plug_in_bets(x: FloatArray, alpha: float) -> FloatArray:
    """lambda_t = sqrt(2 log(1/alpha) / (n sigma2_{t-1})): tuned for a fixed sample size n, using
    a running variance estimate that starts from the [0, 1] prior (mean 1/2, variance 1/4)."""
    n = x.shape[0]
    t = np.arange(1, n + 1, dtype=np.float64)
    mean = (0.5 + np.cumsum(x)) / (t + 1)
    var = (0.25 + np.cumsum((x - mean) ** 2)) / (t + 1)
    previous_var = np.concatenate(([0.25], var[:-1]))
    bets: FloatArray = np.sqrt(2.0 * math.log(1.0 / alpha) / (n * previous_var))
    return bets
