"""The exit policy on hand-made outputs (one and two answer levels); one rule on numpy, torch and
bitsets; the bitset evaluator against the plain definition; calibration chooses on calibration
and its hypervolume is recomputable from the front it keeps; the closed-form modes."""

import math

import numpy as np
import pytest
import torch

from trainables.exits import (
    ALWAYS,
    NEVER,
    BitsetEvaluator,
    ExitCache,
    ExitStats,
    apply_policy,
    calibrate,
    cascade_step,
    evaluate_dense,
    fixed_policies,
    normalised_entropy,
    thin_front,
)
from trainables.exits.modes import budget_thresholds, exit_counts, exit_profile, target_thresholds
from trainables.pareto import hypervolume, non_dominated_mask


def hand_stats():
    # 2 levels (fine, coarse), 2 exits, 4 samples; entropies chosen by hand
    return ExitStats(
        levels=("fine", "coarse"),
        entropy=np.array([[[0.1, 0.6, 0.9, 0.2], [0.3, 0.2, 0.8, 0.1]],
                          [[0.1, 0.3, 0.9, 0.5], [0.2, 0.1, 0.2, 0.1]]]),
        correct=np.array([[[True, False, False, False], [True, True, False, True]],
                          [[True, True, True, False], [True, True, False, True]]]),
        costs={"flops": np.array([10.0, 30.0])},
        references={"flops": 60.0},
    )


def test_two_level_policy_on_hand_made_outputs():
    st = hand_stats()
    # exit 0: fine if h<=0.25, coarse if h<=0.4; last exit: fine if h<=0.5 else coarse
    t = np.array([[0.25, 0.5], [0.4, ALWAYS]])
    exit_at, level, correct = apply_policy(st, t)
    # s0: fine@0 (right). s1: h_f .6 > .25, h_c .3 <= .4 -> coarse@0 (right).
    # s2: go on; exit1 h_f .8 > .5 -> coarse@1 (wrong). s3: h_f .2 <= .25 -> fine@0 (wrong)
    assert exit_at.tolist() == [0, 0, 1, 0]
    assert level.tolist() == [0, 1, 1, 0]
    assert correct.tolist() == [True, True, False, False]
    sc = evaluate_dense(st, t[None])
    assert sc.accuracy[0] == 0.5
    assert sc.level_fraction[0].tolist() == [0.5, 0.5]
    assert sc.exit_fraction[0].tolist() == [0.75, 0.25]
    assert sc.expected(st.costs["flops"])[0] == pytest.approx(0.75 * 10 + 0.25 * 30)
    assert sc.expected(st.normalised_cost("flops"))[0] == pytest.approx((0.75 * 10 + 0.25 * 30) / 60)
    # risk: samples the last exit's fine head gets right (s0, s1, s3) that this setting answers wrong: s3
    assert sc.risk[0] == pytest.approx(0.25)


def test_one_level_policy_is_branchynets_rule():
    st = ExitStats(("fine",), np.array([[[0.1, 0.5, 0.9], [0.4, 0.2, 0.7], [0.9, 0.9, 0.9]]]),
                   np.array([[[True, False, False], [True, True, False], [True, True, True]]]),
                   {"flops": np.array([1.0, 2.0, 3.0])})
    exit_at, level, correct = apply_policy(st, np.array([[0.3, 0.3, NEVER]]))
    # s0 leaves at exit 0 (0.1 <= .3); s1 at exit 1 (0.2); s2 reaches the last exit, which always answers
    assert exit_at.tolist() == [0, 1, 2] and level.tolist() == [0, 0, 0] and correct.tolist() == [True, True, True]


def test_last_exit_always_answers():
    st = hand_stats()
    exit_at, level, _ = apply_policy(st, np.full((2, 2), NEVER))
    assert exit_at.tolist() == [1, 1, 1, 1] and (level == 1).all()


def test_one_rule_on_numpy_torch_and_bitsets():
    """cascade_step takes the same decisions on bool arrays, torch tensors and packed words."""
    from trainables.exits.policy import _pack

    rng = np.random.default_rng(0)
    und, p0, p1 = (rng.random((3, 200)) < 0.6)
    for last in (False, True):
        ref = cascade_step(und, [p0, p1], last)
        th = cascade_step(torch.from_numpy(und), [torch.from_numpy(p0), torch.from_numpy(p1)], last)
        packed = cascade_step(_pack(und), [_pack(p0), _pack(p1)], last)
        for r, t, b in zip(ref, th, packed):
            assert np.array_equal(r, t.numpy())
            assert np.array_equal(_pack(r), b)
        assert not (ref[0] & ref[1]).any()  # one answer per sample
        if last:
            assert np.array_equal(ref[0] | ref[1], und)


def test_fixed_policies_are_what_they_say():
    st = hand_stats()
    names = []
    for name, t in fixed_policies(2, 2, ("fine", "coarse")):
        names.append(name)
        level, k = name.split(":")[1].split("@")
        exit_at, lv, correct = apply_policy(st, t)
        j = ("fine", "coarse").index(level)
        assert (exit_at == int(k)).all() and (lv == j).all()
        assert (correct == st.correct[j, int(k)]).all()
    assert names == ["fixed:fine@0", "fixed:coarse@0", "fixed:fine@1", "fixed:coarse@1"]


def random_cache(rng, K=3, N=700, nf=20, nc=4, levels=("fine", "coarse")):
    y = rng.integers(0, nf, N)
    yc = y % nc
    fl = rng.normal(size=(K, N, nf)).astype(np.float32) * 2
    fl[np.arange(K)[:, None], np.arange(N)[None], y[None]] += np.arange(1, K + 1)[:, None] * 1.2
    cl = rng.normal(size=(K, N, nc)).astype(np.float32)
    cl[np.arange(K)[:, None], np.arange(N)[None], yc[None]] += 2.0
    logits, labels = {"fine": fl, "coarse": cl}, {"fine": y, "coarse": yc}
    return ExitCache(levels, {k: logits[k] for k in levels}, {k: labels[k] for k in levels},
                     {"flops": np.cumsum(rng.uniform(1, 3, K)) * 1e6}, {"flops": 1e7}, {"flops": 5e6})


@pytest.mark.parametrize("levels", [("fine", "coarse"), ("fine",)])
def test_bitset_evaluator_matches_plain_definition(levels):
    rng = np.random.default_rng(0)
    st = random_cache(rng, levels=levels).stats()
    ev = BitsetEvaluator(st, levels=16)
    idx = ev.random_settings(300, rng)
    fast = ev.evaluate(idx)
    t = ev.thresholds(idx)
    slow = evaluate_dense(st, t)
    for name in ("accuracy", "level_fraction", "exit_fraction"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name))
    for s in range(5):  # and a few settings through the per-sample definition
        _, level, correct = apply_policy(st, t[s])
        assert correct.mean() == pytest.approx(fast.accuracy[s])
        assert (level == 0).mean() == pytest.approx(fast.level_fraction[s, 0])


def test_grid_ends_are_never_and_always():
    st = random_cache(np.random.default_rng(1)).stats()
    ev = BitsetEvaluator(st, levels=8)
    K = st.n_exits
    idx = np.zeros((1, 2, K), int)
    idx[0, 0, 0] = ev.levels - 1  # fine level always passes at exit 0
    sc = ev.evaluate(idx)
    assert sc.exit_fraction[0, 0] == 1.0 and sc.level_fraction[0, 0] == 1.0
    sc = ev.evaluate(np.zeros((1, 2, K), int))
    assert sc.exit_fraction[0, -1] == 1.0 and sc.level_fraction[0, 0] == 0.0


def _gran_objectives(stats):
    def f(sc):
        return np.stack([sc.accuracy, sc.level_fraction[:, 0], sc.expected(stats.normalised_cost("flops"))], axis=1)
    return f


MAX3 = [True, True, False]


def test_calibration_front_recomputable_and_rescored_on_test(tmp_path):
    rng = np.random.default_rng(2)
    calib, test = random_cache(rng), random_cache(rng)
    calib.save(tmp_path / "c.npz")
    again = ExitCache.load(tmp_path / "c.npz")
    assert again.levels == calib.levels and again.plain == {"flops": 5e6} and again.references == {"flops": 1e7}
    cs, ts = again.stats(), test.stats()
    res = calibrate(cs, _gran_objectives(cs), MAX3, (0, 0, 1), n_trials=64, neighbours=8, population=16, levels=16,
                    max_points=20, seed=0)
    P = len(res.thresholds)
    assert 1 <= P <= 20 and len(res.front) >= P
    # the stored hypervolume is that of the whole front it returns (kept in the trial directory)
    assert res.hypervolume == pytest.approx(hypervolume(res.front, (0, 0, 1), MAX3), abs=1e-12)
    assert non_dominated_mask(res.front, MAX3).all() and 0 < res.hypervolume <= 1
    # the kept points are front points on calibration, by the plain definition
    kept = _gran_objectives(cs)(evaluate_dense(cs, res.thresholds))
    front_rows = {tuple(np.round(r, 12)) for r in res.front}
    assert all(tuple(np.round(r, 12)) in front_rows for r in kept)
    # and test is only scored at the very same thresholds
    t = evaluate_dense(ts, res.thresholds)
    assert t.accuracy.shape == (P,)


def test_calibration_is_deterministic_per_seed():
    cs = random_cache(np.random.default_rng(3)).stats()
    kw = dict(n_trials=32, neighbours=4, population=8, levels=8, seed=5)
    a = calibrate(cs, _gran_objectives(cs), MAX3, (0, 0, 1), **kw)
    b = calibrate(cs, _gran_objectives(cs), MAX3, (0, 0, 1), **kw)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)


def test_thin_front_keeps_extremes():
    obj = np.random.default_rng(4).random((500, 3))
    idx = thin_front(obj, 10, MAX3)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert int(np.argmax(obj[:, 0])) in idx and int(np.argmin(obj[:, 2])) in idx


def test_normalised_entropy_bounds():
    assert normalised_entropy(torch.zeros(1, 10)).item() == pytest.approx(1.0)
    assert normalised_entropy(torch.tensor([[100.0] + [0.0] * 9])).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isclose(normalised_entropy(torch.zeros(2, dtype=torch.float64)).item(), 1.0)
    assert normalised_entropy(torch.zeros(3, 4, dtype=torch.float16)).dtype == torch.float32


def test_fixed_policies_never_beat_the_calibrated_front():
    cs = random_cache(np.random.default_rng(6)).stats()
    f = _gran_objectives(cs)
    res = calibrate(cs, f, MAX3, (0, 0, 1), n_trials=40, neighbours=4, population=8, levels=16, max_points=1000, seed=0)
    for name, t in fixed_policies(2, cs.n_exits, ("fine", "coarse")):
        p = f(evaluate_dense(cs, t[None]))[0]
        covered = ((res.front[:, 0] >= p[0]) & (res.front[:, 1] >= p[1]) & (res.front[:, 2] <= p[2] + 1e-12)).any()
        assert covered, f"fixed policy {name} {p} is not covered by the calibrated front"


def test_popcount_fallback_matches(monkeypatch):
    import trainables.exits.policy as pol

    a = np.random.default_rng(0).integers(0, 2**63, (5, 7), dtype=np.uint64)
    fast = pol._popcount_rows(a)
    monkeypatch.delattr(np, "bitwise_count")
    assert np.array_equal(pol._popcount_rows(a), fast)
    assert fast[0] == sum(bin(int(v)).count("1") for v in a[0])


def test_first_release_cache_layout_still_loads(tmp_path):
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "old.npz", fine_logits=rng.normal(size=(2, 5, 4)), coarse_logits=rng.normal(size=(2, 5, 2)),
             y_fine=np.arange(5) % 4, y_coarse=np.arange(5) % 2, exit_flops=np.array([1.0, 2.0]), reference_flops=3.0)
    c = ExitCache.load(tmp_path / "old.npz")
    assert c.levels == ("fine", "coarse") and c.references == {"flops": 3.0} and c.stats().entropy.shape == (2, 2, 5)


# --- closed-form modes (BranchyNet's target accuracy, MSDNet's budget) ---------------------------

def one_level(rng, K=4, N=3000):
    """Outputs whose entropy is informative: confident samples are more often right, deeper exits better."""
    difficulty = rng.random(N)
    z = 4 * (difficulty[None] - 0.5) + rng.normal(0, 0.5, (K, N)) - 0.3 * np.arange(K)[:, None]
    entropy = 1 / (1 + np.exp(-z))  # continuous in (0, 1): no ties
    p_right = np.clip(1.0 - entropy + 0.1 * np.arange(K)[:, None], 0, 1)
    return entropy, rng.random((K, N)) < p_right


def test_target_mode_meets_its_target_on_calibration():
    rng = np.random.default_rng(0)
    entropy, correct = one_level(rng)
    targets = np.array([0.6, 0.8, 0.9, 0.97])
    T = target_thresholds(entropy, correct, targets)
    assert (T[:, -1] == ALWAYS).all()
    for a, t in zip(targets, T):
        for k in range(len(t) - 1):
            accepted = entropy[k] <= t[k]
            if t[k] == ALWAYS:
                assert correct[k].mean() >= a  # "always exit" only when the whole exit meets the target
            elif accepted.any():
                assert correct[k][accepted].mean() >= a - 1e-9  # what it accepts meets the target
                # and it is the widest such threshold: one more sample would miss it (up to ties)
                order = np.sort(entropy[k])
                nxt = order[order > t[k]]
                if nxt.size:
                    assert correct[k][entropy[k] <= nxt[0]].mean() < a + 1e-9 or np.isclose(nxt[0], t[k])
    # a higher target never lets more samples leave early
    early = [(one_exits(entropy, t) < entropy.shape[0] - 1).mean() for t in T]
    assert all(a >= b for a, b in zip(early, early[1:]))


def one_exits(entropy, t):
    st = ExitStats(("fine",), entropy[None], np.ones((1, *entropy.shape), bool), {"x": np.ones(entropy.shape[0])})
    return apply_policy(st, t[None])[0]


def test_budget_mode_exit_counts_match_the_profile():
    rng = np.random.default_rng(1)
    entropy, _ = one_level(rng, K=4, N=5000)
    qs = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    T, counts = budget_thresholds(entropy, qs)
    for q, t, c in zip(qs, T, counts):
        p = exit_profile(q, 4)
        assert p.sum() == pytest.approx(1.0) and np.allclose(p[1:] / p[:-1], q)
        assert np.abs(c - 5000 * p).max() <= 1 and c.sum() == 5000
        got = np.bincount(one_exits(entropy, t), minlength=4)
        assert np.array_equal(got, c), (q, got, c)  # continuous entropies: no ties, exact counts


def test_exit_counts_round_the_cumulative_profile():
    assert exit_counts(np.array([0.5, 0.25, 0.25]), 10).tolist() == [5, 3, 2]  # cumulative 5, 7.5 -> 8, 10
    assert exit_counts(np.array([1 / 3] * 3), 10).sum() == 10
