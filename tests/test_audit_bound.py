"""The one-run audit's statistics, checked against independent computations: the Steinke-Nasr-Jagielski
p-value against exact binomial sums, its epsilon inversion, its validity on randomized response, and
the membership ROC against pairwise counting."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from fer_models.audit.bound import best_bound, epsilon_lower_bound, guess_counts, p_value
from fer_models.audit.membership import attack_scores, balanced_draw, class_calibrated, roc


def _tail(r: int, v: int, eps: float) -> float:
    """P[Binomial(r, e^eps/(1+e^eps)) >= v] by exact summation of the binomial terms."""
    q = Fraction(math.exp(eps)) / (1 + Fraction(math.exp(eps)))
    return float(sum(math.comb(r, k) * q**k * (1 - q)**(r - k) for k in range(v, r + 1)))


def _p_with_delta(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Theorem 5.2's p-value written out term by term (no scipy)."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q**k * (1 - q)**(r - k) for k in range(r + 1)]
    alpha = max(sum(pmf[v - i:v]) / i for i in range(1, v + 1))
    return min(1.0, sum(pmf[v:]) + 2 * m * delta * alpha)


@pytest.mark.parametrize(("r", "v", "eps"), [(100, 75, math.log(3)), (40, 40, 2.0), (60, 31, 0.0), (10, 0, 1.0)])
def test_p_value_without_delta_is_the_binomial_tail(r, v, eps):
    assert p_value(m=r + 7, r=r, v=v, eps=eps, delta=0.0) == pytest.approx(_tail(r, v, eps), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("m", "r", "v", "eps", "delta"), [(200, 50, 45, 1.5, 1e-5), (1000, 100, 90, 2.0, 1e-3)])
def test_p_value_with_delta_adds_the_papers_delta_term(m, r, v, eps, delta):
    assert p_value(m=m, r=r, v=v, eps=eps, delta=delta) == pytest.approx(_p_with_delta(m, r, v, eps, delta), rel=1e-9)
    assert p_value(m=m, r=r, v=v, eps=eps, delta=delta) > p_value(m=m, r=r, v=v, eps=eps, delta=0.0)


@pytest.mark.parametrize(("r", "v"), [(100, 90), (50, 50), (200, 130)])
def test_lower_bound_is_where_the_binomial_tail_crosses_the_failure_probability(r, v):
    eps = epsilon_lower_bound(m=r, r=r, v=v, delta=0.0, failure=0.05)
    assert eps > 0
    assert _tail(r, v, eps) < 0.05 <= _tail(r, v, eps + 1e-6)


def test_no_bound_when_the_guesses_are_no_better_than_coin_flips():
    assert epsilon_lower_bound(m=100, r=100, v=50, delta=1e-5, failure=0.05) == 0.0


def test_perfect_guesses_reach_the_attainable_bound_and_chance_scores_stay_near_zero():
    rng = np.random.default_rng(0)
    included = rng.permutation(400) < 200  # exactly half: every guess count can be all right
    perfect = best_bound(scores=included.astype(float), included=included, delta=1e-5)
    assert perfect.correct == perfect.guesses and perfect.epsilon == pytest.approx(perfect.attainable)
    assert perfect.tried == len(guess_counts(400))
    assert best_bound(scores=rng.normal(size=400), included=included, delta=1e-5).epsilon < 0.5


def test_bound_exceeds_the_true_epsilon_of_randomized_response_at_most_as_often_as_allowed():
    """eps-DP randomized response on each inclusion bit: the 95% bound may exceed eps in <= 5% of runs."""
    rng, eps, trials = np.random.default_rng(1), 1.0, 100
    keep = math.exp(eps) / (1 + math.exp(eps))
    exceed = 0
    for _ in range(trials):
        included = rng.random(300) < 0.5
        released = np.where(rng.random(300) < keep, included, ~included)
        scores = released + rng.random(300) * 1e-3  # ties broken at random
        exceed += best_bound(scores=scores, included=included, delta=0.0).epsilon > eps
    assert exceed <= 0.05 * trials + 2 * math.sqrt(0.05 * 0.95 * trials)  # 5% plus two standard deviations


def test_auc_is_the_fraction_of_member_non_member_pairs_ranked_right():
    rng = np.random.default_rng(2)
    members, non = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    pairs = (members[:, None] > non[None, :]).mean() + 0.5 * (members[:, None] == non[None, :]).mean()
    result = roc(member_scores=members, non_member_scores=non)
    assert result.auc == pytest.approx(pairs, abs=1e-12)
    assert (result.members, result.non_members) == (300, 300)


def test_tpr_at_low_fpr_counts_members_above_the_highest_non_members():
    non = np.arange(1000, dtype=float)  # 1000 non-members: FPR 1% allows 10 of them above the threshold
    members = np.r_[np.full(30, 2000.0), np.full(70, 995.5)]  # 30 above all, 70 between the 5th and 4th highest
    result = roc(member_scores=members, non_member_scores=non)
    assert result.tpr_at_fpr[0.001] == pytest.approx(0.30)  # 1 non-member allowed: only the 30 clear members
    assert result.tpr_at_fpr[0.01] == pytest.approx(1.0)


def test_scores_are_the_logit_scaled_label_and_top_probabilities_and_survive_underflow():
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0, 0, 0, 0, 0], [0.0, 3.0, 0, 0, 0, 0, 0]])
    scores = attack_scores(logits=logits, labels=torch.tensor([1, 1]))
    probs = torch.softmax(logits.double(), 1)
    logit = lambda p: (p / (1 - p)).log().numpy()  # noqa: E731
    assert scores["loss"] == pytest.approx(logit(probs[:, 1]))
    assert scores["confidence"] == pytest.approx(logit(probs.max(1).values))
    sure = torch.tensor([[60.0, 0, 0, 0, 0, 0, 0], [80.0, 0, 0, 0, 0, 0, 0]])  # both losses are 0.0 in float64
    assert torch.nn.functional.cross_entropy(sure.double(), torch.tensor([0, 0]), reduction="none").tolist() == [0, 0]
    assert np.diff(attack_scores(logits=sure, labels=torch.tensor([0, 0]))["loss"])[0] > 19  # still ranked


def test_balanced_draw_takes_equal_numbers_from_each_side():
    mem, non = balanced_draw(members=np.arange(100), non_members=np.arange(1000, 1040), limit=0, seed=0)
    assert len(mem) == len(non) == 40 and set(non) == set(range(1000, 1040))
    mem, non = balanced_draw(members=np.arange(100), non_members=np.arange(1000, 1040), limit=25, seed=0)
    assert len(mem) == len(non) == 25


def test_class_calibration_is_the_z_score_among_references_of_the_same_class():
    reference, reference_labels = np.array([1.0, 3.0, 10.0, 14.0, 5.0]), np.array([0, 0, 1, 1, 2])
    got = class_calibrated(scores=np.array([2.0, 16.0, 5.0]), labels=np.array([0, 1, 2]), reference=reference,
                           reference_labels=reference_labels)
    everyone = (5.0 - reference.mean()) / reference.std()  # class 2 has one reference: all references are used
    assert got == pytest.approx([0.0, 2.0, everyone])
