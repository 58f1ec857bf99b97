"""Class hierarchies: which superclass each fine class belongs to, and how far apart two classes are.

A `Hierarchy` is a rooted tree whose leaves are the fine classes, in class-index order. Two uses:

* the two levels the network's heads predict (`coarse_of`: fine class -> superclass), and
* a possibly deeper tree (e.g. the WordNet tree over CIFAR-100) for hierarchical-distance metrics
  ("how bad is this mistake?", Bertinetto et al., "Making Better Mistakes", CVPR 2020).

The superclass map does not have to be a level of the tree: CIFAR-100's official 20 superclasses
are not a level of its WordNet tree, so `from_indented` accepts an explicit `coarse_of`.

Conventions used throughout:

* depth of a node = number of edges from the root (the root has depth 0);
* `ancestor(fine, level)` / `ancestors_at(level)` clamp to the leaf itself when the leaf is
  shallower than `level`, so every fine class has exactly one "node at level L" for every L >= 0;
* height of a node = number of edges on the longest path from it down to a leaf below it (a leaf
  has height 0; the root's height is the depth of the deepest leaf, `height`); the distance of two
  classes is the height of their lowest common ancestor node (`distance_matrix`, the definition of
  "Making Better Mistakes", recorded by runs as the versioned convention `CLASS_DISTANCE`);
* the distinct nodes at a level are numbered with internal nodes first, in tree (file) order, then
  clamped leaves by fine-class index. This makes `ancestors_at(1) == coarse_of` for trees built by
  `from_fine_to_coarse` and `ancestors_at(L) == arange(n_fine)` for every L >= the deepest leaf.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainables.contract import Convention

__all__ = ["CLASS_DISTANCE", "Hierarchy"]

#: The class distance of every hierarchical figure and loss (`Hierarchy.distance_matrix`), a
#: versioned convention a family declares with the columns computed with it. Version 1 (runs that
#: state no version) measured from the LCA down to the deeper of the two leaves.
CLASS_DISTANCE = Convention(
    name="class distance",
    version=2,
    definition="distance between two classes = height of their lowest common ancestor (LCA) node in the class tree, "
               "i.e. the longest path from the LCA down to any leaf below it (0 for a class and itself), as in "
               "fiveai/making-better-mistakes' code and distance files",
    unversioned="version 1: (depth of the deeper of the two classes) - (depth of their LCA); the same as version 2 "
                "on a tree whose leaves all lie at one depth (e.g. a two-level superclass tree), different on an "
                "unbalanced tree such as CIFAR-100's WordNet tree",
)

_DICT_FORMAT = "exitsearch.hierarchy/v1"


def _readonly(a: np.ndarray) -> np.ndarray:
    # Internal tables are shared by every query; freezing them turns an accidental write into an
    # error. Arrays handed to callers are copies instead, because torch.from_numpy warns on
    # read-only arrays and callers routinely turn these into tensors.
    a.setflags(write=False)
    return a


class Hierarchy:
    """A rooted tree over the fine classes (leaves), in class-index order.

    Nodes are stored in an array with `parents[i] < i` (the root is node 0); for trees read with
    `from_indented` the node order is the file order, i.e. a pre-order walk of the tree.

    Attributes:
        n_fine: number of fine classes (leaves).
        fine_names: leaf names, indexed by fine class.
        coarse_of: int64 (n_fine,), superclass index of every fine class (treat as read-only).
        n_coarse: number of superclasses.
        coarse_names: superclass names, indexed by superclass.
    """

    n_fine: int
    fine_names: list[str]
    coarse_of: np.ndarray
    n_coarse: int
    coarse_names: list[str]

    def __init__(
        self,
        node_names: Sequence[str],
        parents: Sequence[int],
        leaf_nodes: Sequence[int],
        coarse_of: Sequence[int] | np.ndarray | None = None,
        coarse_names: Sequence[str] | None = None,
    ) -> None:
        """Low-level constructor; prefer the `from_*` classmethods.

        Args:
            node_names: name of every node (node 0 is the root).
            parents: parent node of every node, -1 for the root; must satisfy parents[i] < i.
            leaf_nodes: node id of each fine class, in class-index order; these must be exactly
                the nodes without children.
            coarse_of: superclass of each fine class; default: the ancestor at depth 1.
            coarse_names: names of the superclasses; default: the depth-1 node names when
                coarse_of is defaulted, else "coarse_<k>".
        """
        names = [str(n) for n in node_names]
        par = np.asarray(parents, dtype=np.int64).reshape(-1)
        leaves = np.asarray(leaf_nodes, dtype=np.int64).reshape(-1)
        n_nodes = len(names)
        if n_nodes == 0 or len(par) != n_nodes:
            raise ValueError(f"need one parent per node: {n_nodes} names, {len(par)} parents")
        if par[0] != -1:
            raise ValueError("node 0 must be the root (parent -1)")
        # parents[i] < i makes depths computable in one forward pass and rules out cycles.
        if n_nodes > 1 and not np.all((par[1:] >= 0) & (par[1:] < np.arange(1, n_nodes))):
            bad = int(np.flatnonzero(~((par[1:] >= 0) & (par[1:] < np.arange(1, n_nodes))))[0]) + 1
            raise ValueError(f"node {bad} ({names[bad]!r}) has parent {int(par[bad])}; need 0 <= parent < node")
        n_children = np.bincount(par[1:], minlength=n_nodes) if n_nodes > 1 else np.zeros(1, np.int64)
        childless = set(np.flatnonzero(n_children == 0).tolist())
        if len(leaves) == 0:
            raise ValueError("a hierarchy needs at least one fine class")
        if len(set(leaves.tolist())) != len(leaves):
            raise ValueError("two fine classes map to the same leaf node")
        if set(leaves.tolist()) != childless:
            extra = sorted(childless - set(leaves.tolist()))
            inner = sorted(set(leaves.tolist()) - childless)
            raise ValueError(
                "leaves must be exactly the fine classes: "
                f"childless nodes that are not fine classes: {[names[i] for i in extra]}; "
                f"fine classes that have children: {[names[i] for i in inner if 0 <= i < n_nodes]}"
            )

        depth = np.zeros(n_nodes, dtype=np.int64)
        for i in range(1, n_nodes):
            depth[i] = depth[par[i]] + 1
        height = np.zeros(n_nodes, dtype=np.int64)
        for i in range(n_nodes - 1, 0, -1):  # parents[i] < i: a node's children are final before it
            height[par[i]] = max(height[par[i]], height[i] + 1)

        self._node_names = names
        self._parents = _readonly(par.copy())
        self._leaf_nodes = _readonly(leaves.copy())
        self._node_depth = _readonly(depth)
        self._node_height = _readonly(height)
        self._is_leaf = _readonly(n_children == 0)
        self._leaf_rank = np.full(n_nodes, -1, dtype=np.int64)
        self._leaf_rank[leaves] = np.arange(len(leaves))

        self.n_fine = len(leaves)
        self.fine_names = [names[i] for i in leaves]
        leaf_depth = depth[leaves]
        self._leaf_depth = _readonly(leaf_depth.copy())
        self.max_depth = int(leaf_depth.max())

        # paths[f, d] = node at depth d on the way root -> leaf f, padded with the leaf itself
        # (the clamping convention). Padding with the leaf also keeps the distance computation
        # honest: a leaf appears in no other class's path, so padding never creates false matches.
        paths = np.empty((self.n_fine, self.max_depth + 1), dtype=np.int64)
        for f, node in enumerate(leaves.tolist()):
            d = int(depth[node])
            paths[f, d:] = node
            while d > 0:
                node = int(par[node])
                d -= 1
                paths[f, d] = node
        self._paths = _readonly(paths)
        self._distance: np.ndarray | None = None

        if coarse_of is None:
            if coarse_names is not None and len(coarse_names) != len(self.nodes_at(1)):
                raise ValueError(
                    f"{len(coarse_names)} coarse_names given but the tree has "
                    f"{len(self.nodes_at(1))} nodes at depth 1"
                )
            coarse = self.ancestors_at(1).copy()
            cnames = list(coarse_names) if coarse_names is not None else self.nodes_at(1)
        else:
            coarse = np.asarray(coarse_of)
            if coarse.ndim != 1 or len(coarse) != self.n_fine:
                raise ValueError(
                    f"coarse_of must have one entry per fine class ({self.n_fine}), got shape {coarse.shape}"
                )
            if coarse.dtype.kind not in "iu" and not (coarse.size == 0 or np.all(coarse == np.round(coarse))):
                raise ValueError("coarse_of must hold integers")
            coarse = coarse.astype(np.int64)
            if coarse.min() < 0:
                raise ValueError("coarse_of has negative entries")
            n_c = int(coarse.max()) + 1 if coarse_names is None else len(coarse_names)
            if coarse.max() >= n_c:
                raise ValueError(
                    f"coarse_of refers to superclass {int(coarse.max())} but only {n_c} coarse_names given"
                )
            cnames = list(coarse_names) if coarse_names is not None else [f"coarse_{k}" for k in range(n_c)]
        # An empty superclass would be a head output that can never be right; refuse it early.
        empty = sorted(set(range(len(cnames))) - set(coarse.tolist()))
        if empty:
            raise ValueError(f"superclasses without any fine class: {[cnames[k] for k in empty]}")
        self.coarse_of = np.ascontiguousarray(coarse, dtype=np.int64)
        self.coarse_names = [str(c) for c in cnames]
        self.n_coarse = len(self.coarse_names)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_fine_to_coarse(
        cls,
        fine_to_coarse: Sequence[int] | np.ndarray,
        fine_names: Sequence[str] | None = None,
        coarse_names: Sequence[str] | None = None,
    ) -> Hierarchy:
        """Two-level tree root -> coarse -> fine from a superclass index per fine class.

        Default names are "fine_<i>" and "coarse_<k>"; the root is called "root". Every
        superclass 0..n_coarse-1 must contain at least one fine class.
        """
        f2c = np.asarray(fine_to_coarse)
        if f2c.ndim != 1 or len(f2c) == 0:
            raise ValueError("fine_to_coarse must be a non-empty 1-D sequence")
        if f2c.dtype.kind not in "iu":
            if not np.all(f2c == np.round(f2c.astype(np.float64))):
                raise ValueError("fine_to_coarse must hold integers")
        f2c = f2c.astype(np.int64)
        if f2c.min() < 0:
            raise ValueError("fine_to_coarse has negative entries")
        n_fine = len(f2c)
        n_coarse = int(f2c.max()) + 1 if coarse_names is None else len(coarse_names)
        if f2c.max() >= n_coarse:
            raise ValueError(
                f"fine_to_coarse refers to superclass {int(f2c.max())} but only {n_coarse} coarse_names given"
            )
        empty = sorted(set(range(n_coarse)) - set(f2c.tolist()))
        if empty:
            shown = [coarse_names[k] for k in empty] if coarse_names is not None else empty
            raise ValueError(f"superclasses without any fine class: {shown}")
        fnames = [f"fine_{i}" for i in range(n_fine)] if fine_names is None else [str(n) for n in fine_names]
        cnames = [f"coarse_{k}" for k in range(n_coarse)] if coarse_names is None else [str(n) for n in coarse_names]
        if len(fnames) != n_fine:
            raise ValueError(f"{len(fnames)} fine_names for {n_fine} fine classes")
        if len(set(fnames)) != n_fine:
            raise ValueError("fine_names must be unique")
        # Breadth-first node order (root, superclasses, fine classes) keeps node ids aligned with
        # superclass and class indices, which makes to_dict() output easy to read.
        names = ["root", *cnames, *fnames]
        parents = [-1] + [0] * n_coarse + [1 + int(k) for k in f2c]
        leaf_nodes = list(range(1 + n_coarse, 1 + n_coarse + n_fine))
        return cls(names, parents, leaf_nodes, coarse_of=f2c, coarse_names=cnames)

    @classmethod
    def from_indented(
        cls,
        text: str,
        fine_names: Sequence[str],
        coarse_of: Sequence[int] | np.ndarray | None = None,
        coarse_names: Sequence[str] | None = None,
    ) -> Hierarchy:
        """Parse a tree written one node per line, depth = number of leading "--" pairs.

        Example::

            entity
            -- animal
            ---- cat
            ---- dog
            -- vehicle
            ---- car

        The first line is the root (no dashes); each other line is a child of the nearest line
        above it that is one level shallower. Blank lines are ignored. Leaves (nodes without
        children) must be exactly `fine_names`, in any order in the file; they are mapped to class
        indices by name. Internal nodes may share names with each other.

        Args:
            coarse_of: superclass of each fine class, if the superclasses are not a level of the
                tree (CIFAR-100); default: each leaf's ancestor at depth 1.
            coarse_names: superclass names (default: depth-1 node names, or "coarse_<k>").

        Raises:
            ValueError: odd number of dashes, a jump of more than one level, more than one root,
                an empty name, or a leaf that is missing, duplicated or not in `fine_names`.
        """
        fnames = [str(n) for n in fine_names]
        if len(set(fnames)) != len(fnames):
            dup = sorted({n for n in fnames if fnames.count(n) > 1})
            raise ValueError(f"fine_names contains duplicates: {dup}")
        names: list[str] = []
        parents: list[int] = []
        line_nos: list[int] = []
        stack: list[int] = []  # stack[d] = most recent node at depth d
        for line_no, raw in enumerate(text.splitlines(), start=1):
            line = raw.rstrip()
            if not line.strip():
                continue
            n_dash = len(line) - len(line.lstrip("-"))
            if n_dash % 2:
                raise ValueError(f"line {line_no}: {n_dash} leading dashes; depth is given by '--' pairs: {raw!r}")
            d = n_dash // 2
            name = line[n_dash:].strip()
            if not name:
                raise ValueError(f"line {line_no}: node without a name: {raw!r}")
            if not names:
                if d != 0:
                    raise ValueError(f"line {line_no}: the first node must be the root (no dashes), got depth {d}")
            elif d == 0:
                raise ValueError(f"line {line_no}: second root {name!r}; the tree must have exactly one root")
            elif d > len(stack):
                raise ValueError(
                    f"line {line_no}: {name!r} at depth {d} follows a node at depth {len(stack) - 1}; "
                    "indentation may deepen by one level ('--') at a time"
                )
            del stack[d:]
            parents.append(stack[d - 1] if d > 0 else -1)
            stack.append(len(names))
            names.append(name)
            line_nos.append(line_no)
        if not names:
            raise ValueError("empty hierarchy text")

        has_child = np.zeros(len(names), dtype=bool)
        for p in parents[1:]:
            has_child[p] = True
        index_of = {n: i for i, n in enumerate(fnames)}
        leaf_nodes = [-1] * len(fnames)
        for node, name in enumerate(names):
            if has_child[node]:
                continue
            if name not in index_of:
                raise ValueError(f"line {line_nos[node]}: leaf {name!r} is not one of the fine classes")
            f = index_of[name]
            if leaf_nodes[f] != -1:
                raise ValueError(
                    f"line {line_nos[node]}: leaf {name!r} appears twice (first on line {line_nos[leaf_nodes[f]]})"
                )
            leaf_nodes[f] = node
        missing = [fnames[f] for f, node in enumerate(leaf_nodes) if node == -1]
        if missing:
            inner = [n for n in missing if n in names]
            hint = f" ({inner} appear only as internal nodes)" if inner else ""
            raise ValueError(f"fine classes missing from the tree as leaves: {missing}{hint}")
        return cls(names, parents, leaf_nodes, coarse_of=coarse_of, coarse_names=coarse_names)

    @classmethod
    def from_indented_file(
        cls,
        path: str | os.PathLike[str],
        fine_names: Sequence[str],
        coarse_of: Sequence[int] | np.ndarray | None = None,
        coarse_names: Sequence[str] | None = None,
    ) -> Hierarchy:
        """`from_indented` on the UTF-8 contents of `path`."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            return cls.from_indented(text, fine_names, coarse_of=coarse_of, coarse_names=coarse_names)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hierarchy:
        """Inverse of `to_dict`."""
        if d.get("format") != _DICT_FORMAT:
            raise ValueError(f"not a hierarchy dict (format {d.get('format')!r}, expected {_DICT_FORMAT!r})")
        return cls(
            d["node_names"], d["parents"], d["leaf_nodes"], coarse_of=d["coarse_of"], coarse_names=d["coarse_names"]
        )

    # ------------------------------------------------------------------ queries

    @property
    def n_nodes(self) -> int:
        """Number of nodes, root and leaves included."""
        return len(self._node_names)

    @property
    def node_names(self) -> list[str]:
        return list(self._node_names)

    @property
    def parents(self) -> np.ndarray:
        """int64 (n_nodes,), parent node id, -1 for the root (a copy)."""
        return self._parents.copy()

    @property
    def node_heights(self) -> np.ndarray:
        """int64 (n_nodes,), height of every node: longest path down to a leaf, 0 for a leaf (a copy)."""
        return self._node_height.copy()

    @property
    def height(self) -> int:
        """Height of the tree (of its root): the depth of its deepest leaf."""
        return self.max_depth

    @property
    def leaf_depths(self) -> np.ndarray:
        """int64 (n_fine,), depth of every fine class (a copy)."""
        return self._leaf_depth.copy()

    def _check_fine(self, fine: int) -> int:
        f = int(fine)
        if not 0 <= f < self.n_fine:
            raise IndexError(f"fine class {fine} out of range [0, {self.n_fine})")
        return f

    @staticmethod
    def _check_level(level: int) -> int:
        lv = int(level)
        if lv < 0:
            raise ValueError(f"level must be >= 0 (0 = root), got {level}")
        return lv

    def depth(self, fine: int) -> int:
        """Number of edges from the root to fine class `fine`."""
        return int(self._leaf_depth[self._check_fine(fine)])

    def ancestor(self, fine: int, level: int) -> str:
        """Name of `fine`'s ancestor at depth `level` (0 = root); the leaf itself if it is shallower."""
        f = self._check_fine(fine)
        lv = min(self._check_level(level), self.max_depth)
        return self._node_names[int(self._paths[f, lv])]

    def _level_nodes(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(distinct node ids at `level` in numbering order, index of each fine class's node)."""
        lv = min(self._check_level(level), self.max_depth)
        nodes = self._paths[:, lv]
        distinct = np.unique(nodes)
        # Internal nodes by node id (tree order), then clamped leaves by fine-class index.
        is_leaf = self._is_leaf[distinct]
        leaves = distinct[is_leaf]
        order = np.concatenate([distinct[~is_leaf], leaves[np.argsort(self._leaf_rank[leaves])]])
        rank = np.empty(self.n_nodes, dtype=np.int64)
        rank[order] = np.arange(len(order))
        return order, rank[nodes]

    def ancestors_at(self, level: int) -> np.ndarray:
        """int64 (n_fine,): for each fine class, the index of its ancestor at depth `level`.

        The index counts the distinct nodes at that level (leaves shallower than `level` stand for
        themselves), numbered as described in the module docstring; `nodes_at(level)` gives
        their names in the same order.
        """
        return self._level_nodes(level)[1]

    def nodes_at(self, level: int) -> list[str]:
        """Names of the distinct nodes at depth `level` (clamped), in `ancestors_at` numbering."""
        order, _ = self._level_nodes(level)
        return [self._node_names[i] for i in order.tolist()]

    def _lca_node(self, fa: int, fb: int) -> int:
        # Paths agree exactly on depths 0..depth(LCA) (padding never matches across leaves).
        pa, pb = self._paths[fa], self._paths[fb]
        return int(pa[np.count_nonzero(pa == pb) - 1])

    def lca(self, a: int, b: int) -> str:
        """Name of the lowest common ancestor of fine classes a and b (the class itself when a == b)."""
        return self._node_names[self._lca_node(self._check_fine(a), self._check_fine(b))]

    def lca_height(self, a: int, b: int) -> int:
        """Height of the lowest common ancestor of fine classes a and b: their distance (`distance_matrix`)."""
        return int(self._node_height[self._lca_node(self._check_fine(a), self._check_fine(b))])

    def distance_matrix(self) -> np.ndarray:
        """float64 (n_fine, n_fine): D[a, b] = height of the lowest common ancestor (LCA) node of a and b.

        The distance of Bertinetto et al., "Making Better Mistakes" (CVPR 2020), as its code and
        distance files compute it (`CLASS_DISTANCE`, version 2): a function of the LCA node alone.
        D[a, a] = 0, D[a, b] >= 1 otherwise (the LCA of two leaves is an inner node), symmetric, an
        ultrametric (D[a, c] <= max(D[a, b], D[b, c])). On a tree whose leaves all lie at one depth it
        equals depth(leaf) - depth(LCA); on an unbalanced tree it is larger wherever the LCA's subtree
        reaches deeper than either class (version 1 measured to the deeper of the two leaves).
        Computed once and cached; each call returns a fresh copy, safe to modify.
        """
        if self._distance is None:
            n = self.n_fine
            # Counting the depths at which two root -> leaf paths agree gives depth(LCA) + 1 for
            # every pair at once; the LCA is the node at that depth on either path.
            matches = np.zeros((n, n), dtype=np.int64)
            for d in range(self.max_depth + 1):
                col = self._paths[:, d]
                matches += col[:, None] == col[None, :]
            lca = self._paths[np.arange(n)[:, None], matches - 1]  # (n, n) LCA node ids; a leaf on the diagonal
            dist = self._node_height[lca].astype(np.float64)
            self._distance = _readonly(dist)
        return self._distance.copy()

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (plain lists and strings); `from_dict` inverts it."""
        return {
            "format": _DICT_FORMAT,
            "n_fine": self.n_fine,
            "n_coarse": self.n_coarse,
            "fine_names": list(self.fine_names),
            "coarse_names": list(self.coarse_names),
            "coarse_of": [int(k) for k in self.coarse_of],
            "node_names": list(self._node_names),
            "parents": [int(p) for p in self._parents],
            "leaf_nodes": [int(n) for n in self._leaf_nodes],
            "max_depth": self.max_depth,
        }

    def to_indented(self) -> str:
        """The tree in the `from_indented` text format (pre-order, children in node order)."""
        children: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for i, p in enumerate(self._parents.tolist()):
            if p >= 0:
                children[p].append(i)
        lines: list[str] = []
        stack = [0]
        while stack:
            node = stack.pop()
            d = int(self._node_depth[node])
            lines.append(("--" * d + " " if d else "") + self._node_names[node])
            stack.extend(reversed(children[node]))
        return "\n".join(lines) + "\n"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hierarchy):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container semantics: unhashable

    def __repr__(self) -> str:
        return (
            f"Hierarchy(n_fine={self.n_fine}, n_coarse={self.n_coarse}, "
            f"n_nodes={self.n_nodes}, max_depth={self.max_depth})"
        )
