"""The exit policy on hand-made outputs; the bitset evaluator against the plain definition;
calibration chooses on calibration and reports test at the same thresholds."""

import math

import numpy as np
import pytest

from trainables.exits import (
    ALWAYS,
    NEVER,
    BitsetEvaluator,
    ExitCache,
    ExitStats,
    apply_policy,
    calibrate,
    evaluate_dense,
    fixed_policies,
    quick_hypervolume,
    thin_front,
)


def hand_stats():
    # 2 exits, 4 samples. Entropies chosen by hand.
    return ExitStats(
        h_fine=np.array([[0.1, 0.6, 0.9, 0.2], [0.3, 0.2, 0.8, 0.1]]),
        h_coarse=np.array([[0.1, 0.3, 0.9, 0.5], [0.2, 0.1, 0.2, 0.1]]),
        fine_correct=np.array([[True, False, False, False], [True, True, False, True]]),
        coarse_correct=np.array([[True, True, True, False], [True, True, False, True]]),
        exit_flops=np.array([10.0, 30.0]),
        reference_flops=60.0,
    )


def test_policy_on_hand_made_outputs():
    st = hand_stats()
    # exit 0: fine if h<=0.25, coarse if h<=0.4; last exit: fine if h<=0.5 else coarse
    exit_at, fine, correct = apply_policy(st, [0.25, 0.5], [0.4, ALWAYS])
    # s0: fine@0 (right). s1: h_f .6 > .25, h_c .3 <= .4 -> coarse@0 (right).
    # s2: go on; exit1 h_f .8 > .5 -> coarse@1 (wrong). s3: h_f .2 <= .25 -> fine@0 (wrong)
    assert exit_at.tolist() == [0, 0, 1, 0]
    assert fine.tolist() == [True, False, False, True]
    assert correct.tolist() == [True, True, False, False]
    sc = evaluate_dense(st, np.array([[0.25, 0.5]]), np.array([[0.4, ALWAYS]]))
    assert sc.accuracy[0] == 0.5
    assert sc.specificity[0] == 0.5
    assert sc.exit_fraction[0].tolist() == [0.75, 0.25]
    assert sc.expected_flops[0] == pytest.approx(0.75 * 10 + 0.25 * 30)
    assert sc.expected_flops_norm[0] == pytest.approx((0.75 * 10 + 0.25 * 30) / 60)


def test_last_exit_always_answers():
    st = hand_stats()
    exit_at, fine, _ = apply_policy(st, [NEVER, NEVER], [NEVER, NEVER])
    assert exit_at.tolist() == [1, 1, 1, 1] and not fine.any()


def test_fixed_policies_are_what_they_say():
    st = hand_stats()
    for name, tf, tc in fixed_policies(2):
        level, k = name.split(":")[1].split("@")
        exit_at, fine, correct = apply_policy(st, tf, tc)
        assert (exit_at == int(k)).all()
        assert fine.all() == (level == "fine") and fine.any() == (level == "fine")
        expect = st.fine_correct[int(k)] if level == "fine" else st.coarse_correct[int(k)]
        assert (correct == expect).all()


def random_cache(rng, K=3, N=700, nf=20, nc=4):
    y = rng.integers(0, nf, N)
    yc = y % nc
    fl = rng.normal(size=(K, N, nf)).astype(np.float32) * 2
    fl[np.arange(K)[:, None], np.arange(N)[None], y[None]] += np.arange(1, K + 1)[:, None] * 1.2
    cl = rng.normal(size=(K, N, nc)).astype(np.float32)
    cl[np.arange(K)[:, None], np.arange(N)[None], yc[None]] += 2.0
    return ExitCache(fl, cl, y, yc, np.cumsum(rng.uniform(1, 3, K)) * 1e6, 1e7)


def test_bitset_evaluator_matches_plain_definition():
    rng = np.random.default_rng(0)
    st = random_cache(rng).stats()
    ev = BitsetEvaluator(st, levels=16)
    fi, ci = ev.random_settings(300, rng)
    fast = ev.evaluate(fi, ci)
    tf, tc = ev.thresholds(fi, ci)
    slow = evaluate_dense(st, tf, tc)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b)
    # and a few settings through the per-sample definition
    for s in range(5):
        _, fine, correct = apply_policy(st, tf[s], tc[s])
        assert correct.mean() == pytest.approx(fast.accuracy[s])
        assert fine.mean() == pytest.approx(fast.specificity[s])


def test_grid_ends_are_never_and_always():
    st = random_cache(np.random.default_rng(1)).stats()
    ev = BitsetEvaluator(st, levels=8)
    K = st.n_exits
    sc = ev.evaluate(np.full((1, K), ev.levels - 1), np.zeros((1, K), int))
    assert sc.exit_fraction[0, 0] == 1.0 and sc.specificity[0] == 1.0
    sc = ev.evaluate(np.zeros((1, K), int), np.zeros((1, K), int))
    assert sc.exit_fraction[0, -1] == 1.0 and sc.specificity[0] == 0.0


def test_calibration_front_and_test_rescoring(tmp_path):
    rng = np.random.default_rng(2)
    calib, test = random_cache(rng), random_cache(rng)
    calib.save(tmp_path / "c.npz")
    calib = ExitCache.load(tmp_path / "c.npz")
    cs, ts = calib.stats(), test.stats()
    res = calibrate(cs, ts, n_trials=64, neighbours=8, population=16, levels=16, max_points=20, seed=0)
    P = len(res.thresholds_fine)
    assert 1 <= P <= 20 and res.front_size >= P
    # the calibration scores are those of the thresholds themselves, by the plain definition
    again = evaluate_dense(cs, res.thresholds_fine, res.thresholds_coarse)
    np.testing.assert_allclose(again.accuracy, res.calib.accuracy)
    # test scores are the same thresholds applied to the test cache
    t = evaluate_dense(ts, res.thresholds_fine, res.thresholds_coarse)
    np.testing.assert_allclose(t.accuracy, res.test.accuracy)
    np.testing.assert_allclose(t.expected_flops, res.test.expected_flops)
    # points returned are mutually non-dominated on calibration
    from reports.pareto import non_dominated_mask

    assert non_dominated_mask(res.calib.objectives(), [True, True, False]).all()
    assert 0 < res.hypervolume <= 1
    # the front beats or matches every fixed policy's hypervolume contribution
    assert res.hypervolume >= quick_hypervolume(cs, n_settings=16, levels=4) - 0.05


def test_calibration_is_deterministic_per_seed():
    rng = np.random.default_rng(3)
    cs = random_cache(rng).stats()
    a = calibrate(cs, n_trials=32, neighbours=4, population=8, levels=8, seed=5)
    b = calibrate(cs, n_trials=32, neighbours=4, population=8, levels=8, seed=5)
    np.testing.assert_array_equal(a.thresholds_fine, b.thresholds_fine)


def test_thin_front_keeps_extremes():
    rng = np.random.default_rng(4)
    obj = rng.random((500, 3))
    idx = thin_front(obj, 10)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert int(np.argmax(obj[:, 0])) in idx and int(np.argmin(obj[:, 2])) in idx


def test_normalised_entropy_bounds():
    from trainables.exits import _normalised_entropy

    uniform = np.zeros((1, 1, 10))
    assert _normalised_entropy(uniform)[0, 0] == pytest.approx(1.0)
    peaked = np.array([[[100.0] + [0.0] * 9]])
    assert _normalised_entropy(peaked)[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert math.isclose(_normalised_entropy(np.zeros((1, 1, 2)))[0, 0], 1.0)


def test_fixed_policies_never_beat_the_calibrated_front():
    rng = np.random.default_rng(6)
    cs = random_cache(rng).stats()
    res = calibrate(cs, n_trials=40, neighbours=4, population=8, levels=16, max_points=1000, seed=0)
    front = res.calib.objectives()
    for _, tf, tc in fixed_policies(cs.n_exits):
        p = evaluate_dense(cs, tf[None], tc[None]).objectives()[0]
        covered = ((front[:, 0] >= p[0]) & (front[:, 1] >= p[1]) & (front[:, 2] <= p[2] + 1e-12)).any()
        assert covered, f"fixed policy {p} is not covered by the calibrated front"


def test_popcount_fallback_matches(monkeypatch):
    import trainables.exits as ex

    a = np.random.default_rng(0).integers(0, 2**63, (5, 7), dtype=np.uint64)
    fast = ex._popcount_rows(a)
    monkeypatch.delattr(np, "bitwise_count")
    assert np.array_equal(ex._popcount_rows(a), fast)
    assert fast[0] == sum(bin(int(v)).count("1") for v in a[0])
