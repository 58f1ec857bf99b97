"""Risk-controlled per-exit thresholds: binomial CDF and HB p-value against exact sums, the exit rule
on a hand-worked case, and the finite-sample guarantee over many calibration draws from a population."""

import math

import numpy as np
import pytest

from trainables.exits import risk as risk_mod
from trainables.exits.risk import (
    ALWAYS,
    NEVER,
    RiskCalibration,
    binomial_cdf,
    empirical_risk,
    hoeffding_bentkus_pvalue,
    one_level_exits,
    risk_calibrate,
)


def exact_cdf(k, n, p):
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(0, min(k, n) + 1)) if k >= 0 else 0.0


@pytest.mark.parametrize("n", [1, 7, 20, 60])
@pytest.mark.parametrize("p", [0.03, 0.3, 0.5, 0.9])
def test_binomial_cdf_matches_exact_sums(n, p):
    ks = np.arange(-2, n + 3)
    got = binomial_cdf(ks, n, p)
    want = np.array([exact_cdf(int(k), n, p) for k in ks])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # P(X <= 2.7) = P(X <= 2), and a scalar k works
    assert float(binomial_cdf(2.7, n, p)) == pytest.approx(exact_cdf(2, n, p), abs=1e-12)


def test_binomial_cdf_degenerate_p_and_n():
    np.testing.assert_array_equal(binomial_cdf([-1, 0, 3], 5, 0.0), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(binomial_cdf([-1, 4, 5], 5, 1.0), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(binomial_cdf([-1, 0], 0, 0.3), [0.0, 1.0])
    with pytest.raises(ValueError):
        binomial_cdf(1, 5, 1.5)


def test_binomial_cdf_large_n_is_stable():
    n, p = 1_000_000, 0.01
    ks = np.array([9000, 9800, 10000, 10300, 11000])
    got = binomial_cdf(ks, n, p)
    assert np.isfinite(got).all() and (np.diff(got) > 0).all()
    # normal approximation with continuity correction is within 1e-3 at this n
    sd = math.sqrt(n * p * (1 - p))
    normal = np.array([0.5 * math.erfc(-(k + 0.5 - n * p) / (sd * math.sqrt(2))) for k in ks])
    np.testing.assert_allclose(got, normal, atol=1e-3)
    assert got[0] < 1e-20  # far lower tail: tiny but not lost to underflow or cancellation
    assert got[0] > 0


def test_binomial_cdf_against_scipy_oracle():
    from scipy import stats  # the test extra installs scipy: this oracle never skips

    for n, p in [(1_000_000, 0.01), (50_000, 0.3), (1400, 0.02)]:
        ks = np.unique(np.linspace(0, n * p * 1.5, 25).astype(int))
        np.testing.assert_allclose(binomial_cdf(ks, n, p), stats.binom.cdf(ks, n, p), rtol=1e-8, atol=1e-300)


def test_hb_pvalue_hand_checked():
    n, alpha = 100, 0.1

    def h1(a, b):
        return (a * math.log(a / b) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - b))

    # r_hat = 0: Hoeffding 0.9^100 beats Bentkus e * 0.9^100
    p_h = math.exp(-n * h1(0.0, alpha))
    assert p_h == pytest.approx(0.9**100)
    assert float(hoeffding_bentkus_pvalue(0.0, n, alpha)) == pytest.approx(p_h, rel=1e-9)
    # r_hat = 0.05: Bentkus e * P(Bin(100, 0.1) <= 5) (~0.157) beats Hoeffding (~0.188)
    p_h = math.exp(-n * h1(0.05, alpha))
    p_b = math.e * exact_cdf(5, n, alpha)
    assert p_b < p_h
    assert float(hoeffding_bentkus_pvalue(0.05, n, alpha)) == pytest.approx(p_b, rel=1e-9)
    # (7 / 100) * 100 is 7.000000000000001 in floating point: the loss count is 7, not 8
    assert (7 / 100) * 100 > 7
    assert float(hoeffding_bentkus_pvalue(7 / 100, n, alpha)) == pytest.approx(
        min(math.exp(-n * h1(0.07, alpha)), math.e * exact_cdf(7, n, alpha)), rel=1e-9)


def test_hb_pvalue_monotone_and_one_above_alpha():
    n, alpha = 500, 0.1
    r = np.linspace(0.0, 0.3, 601)
    p = hoeffding_bentkus_pvalue(r, n, alpha)
    assert p.shape == r.shape
    assert (np.diff(p) >= -1e-15).all()
    assert (p > 0).all() and (p <= 1).all()
    np.testing.assert_array_equal(p[r >= alpha], 1.0)
    assert p[0] < 1e-20
    with pytest.raises(ValueError):
        hoeffding_bentkus_pvalue(0.1, 0, alpha)
    with pytest.raises(ValueError):
        hoeffding_bentkus_pvalue(0.1, 10, 1.0)


@pytest.mark.parametrize("n,alpha", [(50, 0.1), (400, 0.02), (2000, 0.3)])
def test_hb_pvalue_is_valid_at_the_null_boundary(n, alpha):
    # losses ~ Bernoulli(alpha): the null "risk >= alpha" holds with equality, the hardest case
    reps, delta = 20_000, 0.1
    r_hat = np.random.default_rng(n).binomial(n, alpha, size=reps) / n
    rejected = float(np.mean(hoeffding_bentkus_pvalue(r_hat, n, alpha) <= delta))
    assert rejected <= delta + 3 * math.sqrt(delta * (1 - delta) / reps)


# 3 exits, 5 samples, worked by hand below
ENTROPY = np.array([[0.1, 0.5, 0.9, 0.3, 0.7],
                    [0.2, 0.2, 0.8, 0.6, 0.1],
                    [0.9, 0.9, 0.9, 0.9, 0.9]])
CORRECT = np.array([[1, 0, 0, 0, 1],
                    [1, 1, 0, 1, 0],
                    [1, 0, 1, 1, 1]], dtype=bool)


def test_exit_rule_and_risk_by_hand():
    settings = np.array([
        [0.3, 0.4, ALWAYS],      # s0 exit 0 (0.1), s1 exit 1 (0.2), s2 last, s3 exit 0 (0.3 <= 0.3), s4 exit 1 (0.1)
        [NEVER, NEVER, ALWAYS],  # everything at the last exit
        [ALWAYS, NEVER, ALWAYS],  # everything at exit 0
        [NEVER, 0.2, NEVER],     # s0, s1, s4 at exit 1; the last exit answers whatever its threshold says
    ])
    want_exits = [[0, 1, 2, 0, 1], [2, 2, 2, 2, 2], [0, 0, 0, 0, 0], [1, 1, 2, 2, 1]]
    np.testing.assert_array_equal(one_level_exits(ENTROPY, settings), want_exits)
    np.testing.assert_array_equal(one_level_exits(ENTROPY, settings[0]), want_exits[0])
    # losses (final right and the answering exit wrong):
    #   setting 0: s3 (exit 0 wrong) and s4 (exit 1 wrong) -> 2/5
    #   setting 2: s2, s3 wrong at exit 0 with the final right; s1 is wrong at both, so no loss -> 2/5
    #   setting 3: s4 wrong at exit 1 -> 1/5
    np.testing.assert_allclose(empirical_risk(ENTROPY, CORRECT, settings), [0.4, 0.0, 0.4, 0.2])
    single = empirical_risk(ENTROPY, CORRECT, settings[3])
    assert np.ndim(single) == 0 and float(single) == pytest.approx(0.2)


def test_fast_evaluation_matches_gather_reference(monkeypatch):
    rng = np.random.default_rng(3)
    k, n, s = 4, 300, 257
    entropy = rng.random((k, n))
    correct = rng.random((k, n)) < 0.6
    thresholds = np.where(rng.random((s, k)) < 0.2, NEVER, rng.random((s, k)))
    cost = np.array([1.0, 2.5, 3.0, 7.0])
    exits = one_level_exits(entropy, thresholds)
    ref_risk = (correct[-1][None, :] & ~correct[exits, np.arange(n)[None, :]]).mean(axis=1)
    ref_cost = cost[exits].mean(axis=1)
    monkeypatch.setattr(risk_mod, "_CHUNK", 7 * n)  # several chunks, the last one partial
    got_risk, got_cost = risk_mod._risk_and_cost(entropy, correct, cost, thresholds)
    np.testing.assert_allclose(got_risk, ref_risk, atol=1e-12)
    np.testing.assert_allclose(got_cost, ref_cost, atol=1e-12)


def test_front_in_test_order_handles_ties_and_dominated_points():
    risk = np.array([0.0, 0.0, 0.1, 0.1, 0.2, 0.05, 0.3])
    cost = np.array([4.0, 3.0, 3.0, 2.0, 2.5, 3.0, 1.0])
    # (0, 3) beats (0, 4); (0.05, 3) is no cheaper than (0, 3); (0.1, 2) beats (0.1, 3) and (0.2, 2.5)
    np.testing.assert_array_equal(risk_mod._front_in_test_order(risk, cost), [1, 3, 6])


def population(n=100_000, seed=1):
    """K = 4 exits; a latent per-sample difficulty drives every exit, deeper exits are more skilled,
    and each exit's entropy is a noisy reading of its own view of the difficulty."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    view = z[None, :] + 0.6 * rng.normal(size=(4, n))
    skill = np.array([0.0, 0.8, 1.5, 2.2])[:, None]
    correct = rng.random((4, n)) < 1 / (1 + np.exp(-(skill - 2.0 * view)))
    entropy = 1 / (1 + np.exp(-(1.5 * view - skill + 0.4 * rng.normal(size=(4, n)))))
    return entropy, correct


def test_guarantee_over_calibration_draws():
    entropy, correct = population()
    cost = np.array([1.0, 2.0, 3.0, 4.0])
    epsilon, delta, draws, n_cal = 0.02, 0.1, 200, 2000
    acc = correct.mean(axis=1)
    assert (np.diff(acc) > 0.05).all()  # deeper exits are better
    rng = np.random.default_rng(7)
    violations, early, certified, distinct = [], [], [], []
    for r in range(draws):
        idx = rng.choice(entropy.shape[1], n_cal, replace=False)
        res = risk_calibrate(entropy[:, idx], correct[:, idx], cost, epsilon=epsilon, delta=delta, seed=r)
        assert res.thresholds.shape == (4,) and res.thresholds[-1] == ALWAYS
        assert res.n_order + res.n_test == n_cal and res.n_certified <= res.n_tested <= res.n_candidates
        if res.certified:
            assert res.p_value <= delta
            assert res.p_value == pytest.approx(float(hoeffding_bentkus_pvalue(res.test_risk, res.n_test, epsilon)))
        violations.append(float(empirical_risk(entropy, correct, res.thresholds)) > epsilon)
        early.append(float(np.mean(one_level_exits(entropy, res.thresholds) < 3)))
        certified.append(res.certified)
        distinct.append(len(np.unique(res.thresholds[:-1])) > 1)
    assert np.mean(violations) <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)
    # not vacuous: it certifies, a good share of the population leaves early, per-exit thresholds differ
    assert np.mean(certified) >= 0.9
    assert np.mean(early) > 0.2
    assert np.mean(distinct) >= 0.5


def test_nothing_certifiable_falls_back_to_last_exit():
    entropy, correct = population(n=3000, seed=5)
    res = risk_calibrate(entropy, correct, np.arange(1.0, 5.0), epsilon=1e-4, delta=0.1)
    assert isinstance(res, RiskCalibration)
    assert res.certified is False and res.n_certified == 0 and res.n_tested == 1
    np.testing.assert_array_equal(res.thresholds, [NEVER, NEVER, NEVER, ALWAYS])
    assert res.test_risk == 0.0 and res.p_value == 1.0


def test_single_exit_and_determinism():
    entropy, correct = population(n=2000, seed=9)
    one = risk_calibrate(entropy[-1:], correct[-1:], [4.0], epsilon=0.05)
    np.testing.assert_array_equal(one.thresholds, [ALWAYS])
    assert one.test_risk == 0.0
    a = risk_calibrate(entropy, correct, np.arange(1.0, 5.0), epsilon=0.05, seed=3)
    b = risk_calibrate(entropy, correct, np.arange(1.0, 5.0), epsilon=0.05, seed=3)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    assert a._replace(thresholds=None) == b._replace(thresholds=None)
    # K = 3: the full 17 x 17 quantile grid is smaller than n_candidates, so it is enumerated
    three = risk_calibrate(entropy[1:], correct[1:], np.arange(1.0, 4.0), epsilon=0.05)
    assert three.certified and 100 < three.n_candidates <= 17 * 17
    assert three.thresholds[-1] == ALWAYS and (three.thresholds[:-1] > NEVER).any()


@pytest.mark.parametrize("kwargs,match", [
    (dict(entropy=np.zeros(5)), "entropy must be"),
    (dict(correct=np.ones((3, 4), bool)), "correct has shape"),
    (dict(cost=np.ones(2)), "cost must be"),
    (dict(entropy=np.full((3, 5), 1.5)), "normalised"),
    (dict(epsilon=0.0), "epsilon"),
    (dict(epsilon=1.0), "epsilon"),
    (dict(delta=1.0), "delta"),
    (dict(split_fraction=1.0), "split_fraction"),
    (dict(levels=0), "levels"),
])
def test_invalid_inputs(kwargs, match):
    args = dict(entropy=np.full((3, 5), 0.5), correct=np.ones((3, 5), bool), cost=np.ones(3), epsilon=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        risk_calibrate(args.pop("entropy"), args.pop("correct"), args.pop("cost"), **args)
