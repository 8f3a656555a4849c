"""The one-run epsilon lower bound of Steinke, Nasr & Jagielski (2023), for a guesser that may abstain.

m canaries are each included independently with probability 1/2; the auditor guesses "in" or "out"
for r of them (abstaining on the rest) and gets v right. If training is (eps, delta)-DP then
(Theorem 5.2 / Corollary 5.4 of the paper; the p-value is their Appendix D's)

    P[V >= v] <= P[Binomial(r, q) >= v] + 2 m delta * max_{i=1..v} P[v - i <= Binomial(r, q) < v] / i,
    q = e^eps / (1 + e^eps).

So an observed v with that p-value below ``1 - confidence`` rejects "eps-DP": the largest rejected eps
is an empirical lower bound at that confidence. Trying several guess counts on the same scores is a
multiple test; :func:`best_bound` splits the failure probability over them (Bonferroni), so the bound
it returns holds at the stated confidence whichever guess count wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

_BISECTION_STEPS = 40


def p_value(*, m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Probability of >= v correct guesses out of r (m canaries) under (eps, delta)-DP."""
    if not (0 <= v <= r <= m):
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and 0 <= delta <= 1, got eps={eps}, delta={delta}")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = np.cumsum(stats.binom.pmf(v - np.arange(1, v + 1), r, q))  # P[v-i <= B < v], i = 1..v
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, failure: float) -> float:
    """The largest eps whose p-value is below ``failure`` (0 when even eps = 0 is not rejected)."""
    if not 0 < failure < 1:
        raise ValueError(f"failure probability must lie in (0, 1), got {failure}")
    if p_value(m=m, r=r, v=v, eps=0.0, delta=delta) >= failure:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m=m, r=r, v=v, eps=hi, delta=delta) < failure:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return lo
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m=m, r=r, v=v, eps=mid, delta=delta) < failure else (lo, mid)
    return lo  # conservative end: p_value(lo) < failure holds


@dataclass(frozen=True)
class AuditBound:
    epsilon: float  # the empirical lower bound
    confidence: float
    m: int
    guesses_in: int  # k+: highest scores guessed "included"
    guesses_out: int  # k-: lowest scores guessed "excluded"
    correct: int  # v
    attainable: float  # the bound had every one of these guesses been right (the audit's power)
    tried: int  # guess counts tried (the Bonferroni factor)

    @property
    def guesses(self) -> int:
        return self.guesses_in + self.guesses_out


def guess_counts(m: int) -> list[tuple[int, int]]:
    """(k+, k-) pairs tried: symmetric guesses on 2%, 5%, 10%, 25% and 50% of the canaries per side."""
    return sorted({(k, k) for k in (max(1, round(m * f)) for f in (0.02, 0.05, 0.1, 0.25, 0.5)) if 2 * k <= m})


def best_bound(*, scores: np.ndarray, included: np.ndarray, delta: float, confidence: float = 0.95) -> AuditBound:
    """Guess "in" for the top k+ scores and "out" for the bottom k-; the best bound over
    :func:`guess_counts`, each tested at (1 - confidence) / (number tried)."""
    scores, included = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    m = len(scores)
    if m != len(included) or m < 2:
        raise ValueError(f"need >= 2 canaries with one score each, got {m} scores, {len(included)} flags")
    order = np.argsort(-scores, kind="stable")
    counts = guess_counts(m)
    failure = (1 - confidence) / len(counts)
    results, attainable = [], 0.0
    for k_in, k_out in counts:
        v = int(included[order[:k_in]].sum() + (~included[order[m - k_out:]]).sum())
        r = k_in + k_out
        results.append((epsilon_lower_bound(m=m, r=r, v=v, delta=delta, failure=failure), k_in, k_out, v))
        attainable = max(attainable, epsilon_lower_bound(m=m, r=r, v=r, delta=delta, failure=failure))
    eps, k_in, k_out, v = max(results, key=lambda t: t[0])
    return AuditBound(eps, confidence, m, k_in, k_out, v, attainable, len(counts))
