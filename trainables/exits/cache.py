"""Cached exit outputs: every exit's logits on one split, and what a policy needs of them.

Train once, calibrate many: after training, a trial caches the logits of every exit and every
answer level (e.g. fine and coarse heads) on the calibration and test splits, with the labels
and the cumulative cost of reaching each exit. Thresholds are then searched on these caches
only, without touching the network again (search.recalibrate re-runs it on a finished run).

Entropies are normalised by log(#classes), so every threshold lives in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.atomic import atomic_write

if TYPE_CHECKING:
    import torch

__all__ = ["ExitCache", "ExitStats", "normalised_entropy"]


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis, divided by log(#classes): in [0, 1].

    The one definition used by calibration (on cached logits, in float64) and by dynamic
    inference (on live logits); half-precision input is computed in float32.
    """
    import torch  # here, not at the top: the policy math imports this module and stays torch-free

    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = torch.log_softmax(x, dim=-1)
    return (-(logp.exp() * logp).sum(-1) / math.log(x.shape[-1])).clamp(0.0, 1.0)


@dataclass
class ExitCache:
    """Logits of every exit and answer level on one split, with labels and exit costs."""

    levels: tuple[str, ...]  # answer levels in the order the policy tries them, e.g. ("fine", "coarse")
    logits: dict[str, np.ndarray]  # level -> (K, N, n_classes_of_level), float16/32
    labels: dict[str, np.ndarray]  # level -> (N,) int64, or (N, n_classes) uint8 multi-hot for multi-label targets
    costs: dict[str, np.ndarray]  # cost name -> (K,) cumulative cost per image of answering at each exit
    references: dict[str, float] = field(default_factory=dict)  # cost name -> normaliser (largest network's)
    plain: dict[str, float] = field(default_factory=dict)  # cost name -> the same network without early exits
    # what the family's calibration needs beside the logits, fixed by the trained network (e.g. an
    # induced class grouping): Family.cache_extras(net), saved and loaded with the cache
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    # cost name -> images per call it was timed at (the latencies: trainables/engine/batch_latency.py)
    batch_of: dict[str, int] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        arrays = {"levels": np.array(self.levels)}
        arrays |= {f"logits:{k}": np.asarray(v) for k, v in self.logits.items()}
        arrays |= {f"labels:{k}": np.asarray(v) for k, v in self.labels.items()}
        arrays |= {f"cost:{k}": np.asarray(v, dtype=np.float64) for k, v in self.costs.items()}
        arrays |= {f"reference:{k}": np.asarray(v, dtype=np.float64) for k, v in self.references.items()}
        arrays |= {f"plain:{k}": np.asarray(v, dtype=np.float64) for k, v in self.plain.items()}
        arrays |= {f"extra:{k}": np.asarray(v) for k, v in self.extras.items()}
        arrays |= {f"batch:{k}": np.asarray(v, dtype=np.int64) for k, v in self.batch_of.items()}

        def _w(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        atomic_write(path, _w)

    @classmethod
    def load(cls, path: str | Path) -> ExitCache:
        from trainables.safe_load import load_arrays

        d = load_arrays(path)  # never unpickles: UnsafeFile naming the file if it asks to
        if "fine_logits" in d:  # the first release's two-level layout
            return cls(("fine", "coarse"), {"fine": d["fine_logits"], "coarse": d["coarse_logits"]},
                       {"fine": d["y_fine"], "coarse": d["y_coarse"]}, {"flops": d["exit_flops"]},
                       {"flops": float(d["reference_flops"])})

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}

        return cls(tuple(str(v) for v in d["levels"]), part("logits:"), part("labels:"), part("cost:"),
                   {k: float(v) for k, v in part("reference:").items()}, {k: float(v) for k, v in part("plain:").items()},
                   part("extra:"), {k: int(v) for k, v in part("batch:").items()})

    def stats(self) -> ExitStats:
        import torch  # the entropies are computed by the one definition dynamic inference runs

        ent, cor = [], []
        for level in self.levels:
            logits = torch.from_numpy(np.asarray(self.logits[level], dtype=np.float64))
            ent.append(normalised_entropy(logits).numpy())
            top1, labels = np.asarray(self.logits[level]).argmax(-1), np.asarray(self.labels[level])
            if labels.ndim == 2:  # multi-hot: the top-1 class is one the image holds
                cor.append(np.take_along_axis(labels[None], top1[..., None], axis=-1)[..., 0] > 0)
            else:
                cor.append(top1 == labels[None])
        return ExitStats(self.levels, np.stack(ent), np.stack(cor),
                         {k: np.asarray(v, dtype=np.float64) for k, v in self.costs.items()}, dict(self.references),
                         dict(self.plain), dict(self.batch_of))


@dataclass
class ExitStats:
    """What a policy needs of a cache: per level, exit and sample, the entropy and correctness."""

    levels: tuple[str, ...]
    entropy: np.ndarray  # (L, K, N) in [0, 1]
    correct: np.ndarray  # (L, K, N) bool
    costs: dict[str, np.ndarray]  # name -> (K,) cumulative
    references: dict[str, float] = field(default_factory=dict)
    plain: dict[str, float] = field(default_factory=dict)
    batch_of: dict[str, int] = field(default_factory=dict)  # cost name -> images per call it was timed at

    @property
    def n_levels(self) -> int:
        return self.entropy.shape[0]

    @property
    def n_exits(self) -> int:
        return self.entropy.shape[1]

    @property
    def n_samples(self) -> int:
        return self.entropy.shape[2]

    def acc_per_exit(self, level: str | int = 0) -> np.ndarray:
        """(K,) accuracy of each exit's head at one level over the whole split."""
        j = self.levels.index(level) if isinstance(level, str) else level
        return self.correct[j].mean(axis=1)

    def normalised_cost(self, name: str) -> np.ndarray:
        """(K,) cost per exit divided by its reference (the largest network's), or by the last exit's."""
        ref = self.references.get(name) or float(self.costs[name][-1])
        return self.costs[name] / ref

    def subset(self, index: np.ndarray | Sequence[int]) -> ExitStats:
        """The same stats on a subset of the samples (for splits of the calibration set)."""
        idx = np.asarray(index)
        return ExitStats(self.levels, self.entropy[:, :, idx], self.correct[:, :, idx], dict(self.costs),
                         dict(self.references), dict(self.plain), dict(self.batch_of))
