"""What a network needs to know of its dataset, stored with it: `DataInfo`.

Shapes, normalisation, class names, the two-level hierarchy the heads predict, where the dataset
has one a deeper class tree, and whether its targets are multi-label (multi-hot vectors). A trial stores it in model.pt as plain values
(`to_plain`), which a safe loader reads back (`from_plain`); a family's hooks receive it
(trainables/engine/family.py), and a predictor rebuilds its network from it.

Pure: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from trainables.hierarchy import Hierarchy

__all__ = ["DataInfo"]


class DataInfo(NamedTuple):
    """What building and using a network needs of its dataset (also stored with the network)."""

    channels: int
    image_size: int
    n_fine: int
    n_coarse: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fine_names: tuple[str, ...]
    coarse_names: tuple[str, ...]
    coarse_of: tuple[int, ...]
    hierarchy: Hierarchy | None = None  # the two levels the heads predict
    tree: Hierarchy | None = None  # a deeper class tree (e.g. CIFAR-100's WordNet tree), when the dataset has one
    multi_label: bool = False  # targets are multi-hot vectors (several classes per image), not one class each

    @classmethod
    def of(cls, ds: Any) -> DataInfo:
        h = ds.hierarchy
        return cls(ds.channels, ds.image_size, ds.n_fine, ds.n_coarse, tuple(ds.mean), tuple(ds.std),
                   tuple(h.fine_names), tuple(h.coarse_names), tuple(int(c) for c in h.coarse_of), h, ds.tree,
                   bool(getattr(ds, "multi_label", False)))

    def n_classes(self, level: str) -> int:
        return {"fine": self.n_fine, "coarse": self.n_coarse}[level]

    def to_plain(self) -> dict[str, Any]:
        """Plain values only (lists, numbers, strings, dicts; the trees as `Hierarchy.to_dict`):
        what a safe loader (`torch.load(weights_only=True)`) reads back; `from_plain` inverts it."""
        d: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in self._asdict().items()}
        d["hierarchy"] = self.hierarchy.to_dict() if self.hierarchy is not None else None
        d["tree"] = self.tree.to_dict() if self.tree is not None else None
        return d

    @classmethod
    def from_plain(cls, d: Mapping[str, Any]) -> DataInfo:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        for k in ("hierarchy", "tree"):
            if isinstance(kw.get(k), dict):
                kw[k] = Hierarchy.from_dict(kw[k])
        return cls(**kw)

    def names(self, level: str) -> tuple[str, ...]:
        return {"fine": self.fine_names, "coarse": self.coarse_names}[level]
