"""Exit policies, cached exit outputs, and threshold calibration without retraining.

Policy (per sample, exits k = 0..K-1, entropies normalised by log(#classes) into [0, 1]):
at exit k, answer the fine class if H_fine <= tf[k]; else the superclass if H_coarse <= tc[k];
else go on. The last exit always answers: fine if H_fine <= tf[K-1], else coarse (so tc[K-1]
is unused). A fine answer is right iff it is the true class, a coarse one iff it is the true
superclass; specificity is the fraction of answers given at the fine level (Gran-HBN's
definition).

Train once, calibrate many: after training, a trial caches every exit's fine and coarse logits
on the calibration and test splits (`ExitCache`, an .npz in the trial directory). Calibration
is an inner multi-objective Optuna search (NSGA-II) over the thresholds on the calibration
cache, maximising accuracy and specificity and minimising expected FLOPs; its non-dominated
set is re-scored on the test cache, which nothing was chosen on.

Speed: thresholds live on a per-exit grid of entropy quantiles of the calibration split, so
"which samples pass tf[k]" is one precomputed bitset per grid level; a setting is evaluated
with ANDs and popcounts over N/64 words per exit, batched over settings with numpy
(`BitsetEvaluator`). `benchmarks/calibration.py` measures it against the plain broadcast over
settings (`evaluate_dense`), which is also the exact reference the tests check it against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reports.pareto import hypervolume, non_dominated_mask

__all__ = [
    "BitsetEvaluator",
    "CalibrationResult",
    "ExitCache",
    "ExitStats",
    "PointScores",
    "POINT_OBJECTIVES",
    "apply_policy",
    "calibrate",
    "evaluate_dense",
    "fixed_policies",
    "thin_front",
    "front_hypervolume",
    "quick_hypervolume",
]

# objectives of an operating point, in the order used for fronts and hypervolume
POINT_OBJECTIVES: dict[str, str] = {"accuracy": "max", "specificity": "max", "expected_flops_norm": "min"}
HV_REFERENCE = (0.0, 0.0, 1.0)
NEVER = -1.0  # a threshold no normalised entropy (>= 0) passes
ALWAYS = 2.0  # a threshold every normalised entropy (<= 1) passes


def _normalised_entropy(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    h = -(np.exp(logp) * logp).sum(axis=-1)
    return np.clip(h / math.log(logits.shape[-1]), 0.0, 1.0)


@dataclass
class ExitCache:
    """Every exit's fine and coarse logits on one split, with its labels and exit costs."""

    fine_logits: np.ndarray  # (K, N, n_fine), float16/32
    coarse_logits: np.ndarray  # (K, N, n_coarse)
    y_fine: np.ndarray  # (N,) int64
    y_coarse: np.ndarray  # (N,) int64
    exit_flops: np.ndarray  # (K,) cumulative FLOPs per image to each exit
    reference_flops: float  # FLOPs of the space's largest network (normalisation)

    def save(self, path: str | Path) -> None:
        from search.atomic import atomic_write

        def _w(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **{k: np.asarray(v) for k, v in self.__dict__.items()})

        atomic_write(path, _w)

    @classmethod
    def load(cls, path: str | Path) -> ExitCache:
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        d["reference_flops"] = float(d["reference_flops"])
        return cls(**d)

    def stats(self) -> ExitStats:
        return ExitStats(
            h_fine=_normalised_entropy(self.fine_logits),
            h_coarse=_normalised_entropy(self.coarse_logits),
            fine_correct=self.fine_logits.argmax(-1) == self.y_fine[None],
            coarse_correct=self.coarse_logits.argmax(-1) == self.y_coarse[None],
            exit_flops=np.asarray(self.exit_flops, dtype=np.float64),
            reference_flops=float(self.reference_flops),
        )


@dataclass
class ExitStats:
    """What the policy needs of a cache: entropies and correctness per exit and sample."""

    h_fine: np.ndarray  # (K, N) in [0, 1]
    h_coarse: np.ndarray  # (K, N)
    fine_correct: np.ndarray  # (K, N) bool
    coarse_correct: np.ndarray  # (K, N) bool
    exit_flops: np.ndarray  # (K,)
    reference_flops: float

    @property
    def n_exits(self) -> int:
        return self.h_fine.shape[0]

    @property
    def n_samples(self) -> int:
        return self.h_fine.shape[1]

    def fine_acc_per_exit(self) -> np.ndarray:
        return self.fine_correct.mean(axis=1)

    def coarse_acc_per_exit(self) -> np.ndarray:
        return self.coarse_correct.mean(axis=1)


class PointScores(NamedTuple):
    """Scores of S threshold settings (arrays of length S; exit_fraction is (S, K))."""

    accuracy: np.ndarray
    specificity: np.ndarray
    exit_fraction: np.ndarray
    expected_flops: np.ndarray
    expected_flops_norm: np.ndarray

    def objectives(self) -> np.ndarray:
        """(S, 3) in POINT_OBJECTIVES order."""
        return np.stack([self.accuracy, self.specificity, self.expected_flops_norm], axis=1)


def apply_policy(stats: ExitStats, tf: Sequence[float], tc: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: (exit index, answered fine?, correct?) under one setting. The plain definition."""
    K, N = stats.h_fine.shape
    exit_at = np.full(N, K - 1)
    fine = np.zeros(N, dtype=bool)
    decided = np.zeros(N, dtype=bool)
    for k in range(K):
        go_fine = ~decided & (stats.h_fine[k] <= tf[k])
        go_coarse = ~decided & ~go_fine & ((stats.h_coarse[k] <= tc[k]) | (k == K - 1))
        exit_at[go_fine | go_coarse] = k
        fine |= go_fine
        decided |= go_fine | go_coarse
    k_idx = exit_at
    correct = np.where(fine, stats.fine_correct[k_idx, np.arange(N)], stats.coarse_correct[k_idx, np.arange(N)])
    return exit_at, fine, correct


def _scores(stats: ExitStats, n_correct, n_fine, exit_counts) -> PointScores:
    N = stats.n_samples
    frac = exit_counts / N
    ef = frac @ stats.exit_flops
    return PointScores(
        accuracy=n_correct / N,
        specificity=n_fine / N,
        exit_fraction=frac,
        expected_flops=ef,
        expected_flops_norm=ef / stats.reference_flops,
    )


def evaluate_dense(stats: ExitStats, tf: np.ndarray, tc: np.ndarray) -> PointScores:
    """Scores of S settings (tf, tc: (S, K)) by a plain broadcast over settings x samples.

    The exact reference (any threshold values), and the baseline the benchmark compares with.
    """
    tf = np.atleast_2d(np.asarray(tf, dtype=np.float64))
    tc = np.atleast_2d(np.asarray(tc, dtype=np.float64))
    S, K = tf.shape
    N = stats.n_samples
    undecided = np.ones((S, N), dtype=bool)
    n_correct = np.zeros(S)
    n_fine = np.zeros(S)
    counts = np.zeros((S, K))
    for k in range(K):
        f = undecided & (stats.h_fine[k][None, :] <= tf[:, k : k + 1])
        if k == K - 1:
            c = undecided & ~f
        else:
            c = undecided & ~f & (stats.h_coarse[k][None, :] <= tc[:, k : k + 1])
        n_correct += (f & stats.fine_correct[k]).sum(1) + (c & stats.coarse_correct[k]).sum(1)
        n_fine += f.sum(1)
        counts[:, k] = f.sum(1) + c.sum(1)
        undecided &= ~(f | c)
    return _scores(stats, n_correct, n_fine, counts)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows(a: np.ndarray) -> np.ndarray:
    """Set bits per row of a (..., W) uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(a).sum(axis=-1, dtype=np.int64)
    b = np.ascontiguousarray(a).view(np.uint8)  # older numpy: a byte lookup table
    return _POPCOUNT8[b].sum(axis=-1, dtype=np.int64)


class BitsetEvaluator:
    """Evaluates settings given as grid indices, 64 samples per machine word.

    Grid for exit k (fine and coarse separately): index 0 = NEVER, indices 1..G-1 = the
    calibration entropies' quantiles at probabilities 1/(G-1) .. 1, so index G-1 passes every
    sample. `grid_fine[k, i]` is the threshold value of index i; a setting chosen on the grid is
    reported with those exact values, and `apply_policy` / `evaluate_dense` reproduce its scores.
    """

    def __init__(self, stats: ExitStats, levels: int = 64, grid_from: BitsetEvaluator | None = None) -> None:
        """`grid_from`: reuse another evaluator's grid (scores test at calibration's thresholds)."""
        if levels < 2:
            raise ValueError("levels >= 2")
        self.stats = stats
        K, N = stats.h_fine.shape
        if grid_from is not None:
            self.levels = grid_from.levels
            self.grid_fine, self.grid_coarse = grid_from.grid_fine, grid_from.grid_coarse
        else:
            self.levels = levels
            probs = np.arange(1, levels) / (levels - 1)
            self.grid_fine = np.empty((K, levels))
            self.grid_coarse = np.empty((K, levels))
            self.grid_fine[:, 0] = NEVER
            self.grid_coarse[:, 0] = NEVER
            self.grid_fine[:, 1:] = np.quantile(stats.h_fine, probs, axis=1, method="inverted_cdf").T
            self.grid_coarse[:, 1:] = np.quantile(stats.h_coarse, probs, axis=1, method="inverted_cdf").T
            self.grid_fine[:, -1] = ALWAYS
            self.grid_coarse[:, -1] = ALWAYS

        def pack(bits: np.ndarray) -> np.ndarray:  # (..., N) bool -> (..., W) uint64
            n_pad = (-bits.shape[-1]) % 64
            if n_pad:
                bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (n_pad,), dtype=bool)], axis=-1)
            packed = np.packbits(bits, axis=-1, bitorder="little")
            return np.ascontiguousarray(packed).view(np.uint64)

        # pass_fine[k, i] = samples whose fine entropy passes grid value i at exit k
        self.pass_fine = pack(stats.h_fine[:, None, :] <= self.grid_fine[:, :, None])
        self.pass_coarse = pack(stats.h_coarse[:, None, :] <= self.grid_coarse[:, :, None])
        self.fine_correct = pack(stats.fine_correct)
        self.coarse_correct = pack(stats.coarse_correct)
        self.all_samples = pack(np.ones(N, dtype=bool))

    @property
    def n_exits(self) -> int:
        return self.stats.n_exits

    def thresholds(self, idx_fine: np.ndarray, idx_coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.arange(self.n_exits)
        tf = self.grid_fine[k, np.asarray(idx_fine)]
        tc = self.grid_coarse[k, np.asarray(idx_coarse)]
        tc = np.array(tc, copy=True)
        tc[..., -1] = ALWAYS  # unused at the last exit: everything left answers there
        return tf, tc

    def evaluate(self, idx_fine: np.ndarray, idx_coarse: np.ndarray, chunk: int = 4096) -> PointScores:
        idx_fine = np.atleast_2d(np.asarray(idx_fine, dtype=np.int64))
        idx_coarse = np.atleast_2d(np.asarray(idx_coarse, dtype=np.int64))
        S, K = idx_fine.shape
        n_correct = np.zeros(S, dtype=np.int64)
        n_fine = np.zeros(S, dtype=np.int64)
        counts = np.zeros((S, K), dtype=np.int64)
        for s0 in range(0, S, chunk):
            sl = slice(s0, s0 + chunk)
            rem = np.broadcast_to(self.all_samples, (len(idx_fine[sl]), self.all_samples.shape[0])).copy()
            for k in range(K):
                pf = self.pass_fine[k, idx_fine[sl, k]]
                f = rem & pf
                if k == K - 1:
                    c = rem & ~pf
                else:
                    c = rem & ~pf & self.pass_coarse[k, idx_coarse[sl, k]]
                nf = _popcount_rows(f)
                nc = _popcount_rows(c)
                n_correct[sl] += _popcount_rows(f & self.fine_correct[k]) + _popcount_rows(c & self.coarse_correct[k])
                n_fine[sl] += nf
                counts[sl, k] = nf + nc
                rem &= ~(f | c)
        return _scores(self.stats, n_correct.astype(np.float64), n_fine.astype(np.float64), counts.astype(np.float64))

    def random_settings(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        K = self.n_exits
        return rng.integers(0, self.levels, (n, K)), rng.integers(0, self.levels, (n, K))


def fixed_policies(n_exits: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Reference points: "always exit k, fine" and "always exit k, coarse", as thresholds."""
    out = []
    for k in range(n_exits):
        for level in ("fine", "coarse"):
            tf = np.full(n_exits, NEVER)
            tc = np.full(n_exits, NEVER)
            if level == "fine":
                tf[k] = ALWAYS
            else:
                tc[k] = ALWAYS  # at the last exit, tf = NEVER already makes every answer coarse
            tc[-1] = ALWAYS
            out.append((f"fixed:{level}@{k}", tf, tc))
    return out


def _maximize() -> list[bool]:
    return [d == "max" for d in POINT_OBJECTIVES.values()]


def front_hypervolume(scores: PointScores) -> float:
    return hypervolume(scores.objectives(), HV_REFERENCE, _maximize())


class CalibrationResult(NamedTuple):
    """Calibrated front (chosen on calibration) with its thresholds and both splits' scores."""

    thresholds_fine: np.ndarray  # (P, K)
    thresholds_coarse: np.ndarray  # (P, K)
    calib: PointScores
    test: PointScores | None
    hypervolume: float  # of the calibration front
    n_evaluated: int  # distinct settings evaluated by the inner search
    front_size: int  # calibration-front size before thinning to the returned points


def quick_hypervolume(stats: ExitStats, n_settings: int = 2048, levels: int = 32, seed: int = 0) -> float:
    """A cheap per-epoch signal: hypervolume of the front of random grid settings."""
    ev = BitsetEvaluator(stats, levels=levels)
    rng = np.random.default_rng(seed)
    fi, ci = ev.random_settings(n_settings, rng)
    sc = ev.evaluate(fi, ci)
    mask = non_dominated_mask(sc.objectives(), _maximize())
    return hypervolume(sc.objectives()[mask], HV_REFERENCE, _maximize())


def calibrate(
    calib: ExitStats,
    test: ExitStats | None = None,
    *,
    n_trials: int = 512,
    neighbours: int = 32,
    population: int = 64,
    levels: int = 64,
    max_points: int = 128,
    seed: int = 0,
) -> CalibrationResult:
    """Inner multi-objective Optuna search over the exit thresholds, on cached outputs only.

    NSGA-II proposes a population of grid-index settings at a time (ask). Each proposal is
    expanded into itself plus `neighbours` random perturbations of a few grid levels, and the
    whole population with its neighbourhoods is scored in one vectorised call
    (BitsetEvaluator); Optuna is told each proposal's own scores, and every scored setting
    joins the archive whose non-dominated set is the result. Optuna's ask/tell costs ~3 ms per
    proposal on this machine while the evaluator scores ~10^5 settings/s, so the neighbourhoods
    multiply the settings examined at almost no extra cost. The non-dominated set on calibration
    is thinned to at most `max_points` evenly spread points (thin_front) and scored on test at
    the very same threshold values.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ev = BitsetEvaluator(calib, levels=levels)
    K = ev.n_exits
    rng = np.random.default_rng(seed)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(directions=["maximize", "maximize", "minimize"], sampler=sampler)
    dists = {f"tf{k}": optuna.distributions.IntDistribution(0, levels - 1) for k in range(K)}
    dists.update({f"tc{k}": optuna.distributions.IntDistribution(0, levels - 1) for k in range(K - 1)})
    # the fixed policies ("always exit k, fine/coarse") are the corners of the grid: start there
    top = levels - 1
    for k in range(K):
        for fine_level in (True, False):
            p = {f"tf{j}": 0 for j in range(K)} | {f"tc{j}": 0 for j in range(K - 1)}
            if fine_level:
                p[f"tf{k}"] = top
            elif k < K - 1:
                p[f"tc{k}"] = top
            study.enqueue_trial(p)
    all_f, all_c, all_obj = [], [], []
    asked = 0
    step = max(1, levels // 16)
    while asked < n_trials:
        batch = min(population, n_trials - asked)
        trials = [study.ask(dists) for _ in range(batch)]
        fi = np.array([[t.params[f"tf{k}"] for k in range(K)] for t in trials])
        ci = np.array([[t.params.get(f"tc{k}", levels - 1) for k in range(K)] for t in trials])
        if neighbours:
            jf = rng.integers(-step, step + 1, (batch, neighbours, K))
            jc = rng.integers(-step, step + 1, (batch, neighbours, K))
            nf = np.clip(fi[:, None, :] + jf, 0, levels - 1).reshape(-1, K)
            nc = np.clip(ci[:, None, :] + jc, 0, levels - 1).reshape(-1, K)
            fi_all, ci_all = np.concatenate([fi, nf]), np.concatenate([ci, nc])
        else:
            fi_all, ci_all = fi, ci
        obj = ev.evaluate(fi_all, ci_all).objectives()
        for t, row in zip(trials, obj[:batch]):
            study.tell(t, row.tolist())
        all_f.append(fi_all)
        all_c.append(ci_all)
        all_obj.append(obj)
        asked += batch
    fi = np.concatenate(all_f)
    ci = np.concatenate(all_c)
    obj = np.concatenate(all_obj)
    ci[:, -1] = levels - 1  # unused at the last exit: make equal settings compare equal
    key = np.concatenate([fi, ci], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    fi, ci, obj = fi[first], ci[first], obj[first]
    mask = non_dominated_mask(obj, _maximize())
    fi, ci = fi[mask], ci[mask]
    front_scores = ev.evaluate(fi, ci)
    hv = front_hypervolume(front_scores)
    keep = thin_front(front_scores.objectives(), max_points)
    fi, ci = fi[keep], ci[keep]
    tf, tc = ev.thresholds(fi, ci)
    calib_scores = ev.evaluate(fi, ci)
    test_scores = BitsetEvaluator(test, grid_from=ev).evaluate(fi, ci) if test is not None else None
    return CalibrationResult(
        thresholds_fine=tf,
        thresholds_coarse=tc,
        calib=calib_scores,
        test=test_scores,
        hypervolume=hv,
        n_evaluated=int(len(key)),
        front_size=int(mask.sum()),
    )


def thin_front(objectives: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` front points that cover it evenly, ordered by cost.

    Farthest-point sampling in objective space scaled to [0, 1] per objective, seeded with each
    objective's best point, so the extremes are always kept. The hypervolume a trial reports is
    that of the whole front, before thinning.
    """
    n = len(objectives)
    if n <= max_points:
        return np.argsort(objectives[:, -1], kind="stable")
    lo, hi = objectives.min(0), objectives.max(0)
    z = (objectives - lo) / np.where(hi > lo, hi - lo, 1.0)
    maximize = np.array(_maximize())
    seeds = [int(np.argmax(z[:, j]) if maximize[j] else np.argmin(z[:, j])) for j in range(z.shape[1])]
    chosen = list(dict.fromkeys(seeds))
    dist = np.min(np.linalg.norm(z[:, None, :] - z[chosen][None, :, :], axis=2), axis=1)
    while len(chosen) < max_points:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(z - z[i], axis=1))
    idx = np.array(chosen)
    return idx[np.argsort(objectives[idx, -1], kind="stable")]
