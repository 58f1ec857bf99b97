"""Hierarchy-aware losses of the `better_mistakes` family, one small module per loss.

Every loss is called as ``loss(outputs (N, D), labels (N,)) -> scalar`` (mean over the batch) and
is an `nn.Module` whose tables are registered buffers (they also follow the input's device and
dtype in `forward`, so a loss built on the CPU works on CUDA inputs). Notation: z = logits,
p = softmax(z), y = label, `tree` = `Hierarchy` (leaves = classes), depth(root) = 0.

Every loss that needs how far apart two classes are takes the one class distance of the platform,
``tree.distance_matrix()`` = the height of the two classes' lowest common ancestor (LCA) node
(trainables/hierarchy.py, convention ``CLASS_DISTANCE``), as fiveai's distance files do.

* `cross_entropy(label_smoothing)`: ``F.cross_entropy`` with optional label smoothing.
* `HXELoss(tree, alpha)`: hierarchical cross-entropy, Bertinetto et al., "Making Better Mistakes",
  CVPR 2020 (code fiveai/making-better-mistakes, ``HierarchicalCrossEntropyLoss`` and
  ``get_exponential_weighting``). p(v) = sum of p over the leaves below node v, and

      HXE(z, y) = - sum_{v on path(root -> y), v != root} lambda(v) * log( p(v) / p(parent(v)) )
      lambda(v) = exp(-alpha * depth(v))          (normalize=True: divided by Z = sum over ALL nodes,
                                                    root and leaves included, of exp(-alpha * depth))

  The paper writes lambda(C) = exp(-alpha * h(C)) with "h the height of C"; the authors' code
  weights the edge v -> parent(v) by exp(-alpha * len(treeposition(v))) = exp(-alpha * depth(v)),
  i.e. it discounts *down* the tree (alpha > 0 stresses coarse decisions), and by default divides
  by Z. We implement the code's depth weights (no class distance enters HXE; on an unbalanced tree
  depth and height are not complementary, and the code's depth is what the published figures used);
  normalize=False (default) skips the constant 1/Z so that alpha = 0 is exactly plain
  cross-entropy (the conditionals telescope to -log p(y)).
  log p(v) is a log-sum-exp of log_softmax(z) over the leaves below v (a precomputed node->leaves
  incidence matrix, 0 / -inf), only for the nodes on each label's path: stable, O(N x depth x C).
* `SoftLabelLoss(distances, beta)`: soft labels of the same paper (fiveai ``make_all_soft_labels``):
  target_y(i) = exp(-beta * d(i, y) / d_max) / sum_j exp(-beta * d(j, y) / d_max), d = the class
  distance matrix (``tree.distance_matrix()``), d_max = its largest entry; loss = -sum_i target_y(i) *
  log p_i. (fiveai trains with ``nn.KLDivLoss()``: KL = this CE minus the target's entropy, same
  gradient, and its default 'mean' reduction also divides by the number of classes.)
* Barz & Denzler, "Hierarchy-based Image Embeddings for Semantic Image Retrieval", WACV 2019 (code
  cvjena/semantic-embeddings, ``compute_class_embedding.unitsphere_embedding``):
  `tree_similarity(tree)`: s(i, j) = 1 - height(LCA(i, j)) / height(root) = 1 - D[i, j] / height(tree),
  where height(v) = longest path from v down to a leaf (their ``ClassHierarchy.lcs_height``).
  `class_embeddings(tree)`: unit vectors e_0..e_{C-1} in R^C with <e_i, e_j> = s(i, j), built
  incrementally: e_0 = (1, 0, ...); e_c[:c] solves E[:c, :c] e_c[:c] = S[c, :c] against the previous
  vectors and e_c[c] = sqrt(1 - |e_c[:c]|^2) reaches unit norm. E is lower triangular with
  E E^T = S, i.e. the Cholesky factor of S (positive definite: 1 - D / height is an ultrametric
  similarity with ones only on the diagonal).
  `EmbeddingLoss(embeddings, ce_weight, scale)`: cos = <f(x)/|f(x)|, e_c> for every class c;
  loss = mean(1 - cos_y) + ce_weight * CE(scale * cos, y). Barz & Denzler's optional classifier is a
  separate ReLU + BN + softmax layer on the embedding (``--cls_weight``, 0.1 in their READMEs),
  fiveai's ``CosinePlusXentLoss`` instead puts CE (weight 0.1) on the raw outputs; to keep one
  output tensor we use cosine logits with a fixed scale (default 16, a NormFace-style temperature).
  `embedding_scores(outputs, embeddings)`: the (N, C) cosines, higher = more likely (nearest class vector).
"""

from __future__ import annotations

import math
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.hierarchy import Hierarchy

__all__ = [
    "ClassCosines",
    "CosineLoss",
    "CrossEntropyLoss",
    "EmbeddingLoss",
    "HXELoss",
    "SoftLabelLoss",
    "class_embeddings",
    "cross_entropy",
    "embedding_scores",
    "embeddings_from_similarity",
    "hxe_edge_weights",
    "soft_labels",
    "tree_similarity",
]

ArrayLike = np.ndarray | Tensor


def _nonneg(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _numpy(a: ArrayLike, name: str) -> np.ndarray:
    arr = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty finite 2-D matrix, got shape {arr.shape}")
    return arr


def _check(outputs: Tensor, labels: Tensor, width: int | None, n_classes: int | None) -> tuple[Tensor, Tensor]:
    """Validate the common call signature; returns (float outputs, labels on the outputs' device)."""
    if outputs.ndim != 2 or (width is not None and outputs.shape[1] != width):
        want = f"(N, {width})" if width is not None else "(N, C)"
        raise ValueError(f"outputs must have shape {want}, got {tuple(outputs.shape)}")
    if labels.ndim != 1 or labels.shape[0] != outputs.shape[0]:
        raise ValueError(f"labels must have shape ({outputs.shape[0]},), got {tuple(labels.shape)}")
    if outputs.shape[0] == 0:
        raise ValueError("empty batch")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    hi = n_classes if n_classes is not None else outputs.shape[1]
    if labels.device.type == "cpu" and (int(labels.min()) < 0 or int(labels.max()) >= hi):
        raise ValueError(f"labels must lie in [0, {hi}), got range [{int(labels.min())}, {int(labels.max())}]")
    x = outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()
    return x, labels.to(device=x.device, dtype=torch.long)


class CrossEntropyLoss(nn.Module):
    """Plain cross-entropy, optionally label-smoothed (``F.cross_entropy(label_smoothing=...)``)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = _nonneg("label_smoothing", label_smoothing)
        if self.label_smoothing > 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        x, y = _check(outputs, labels, None, None)
        return F.cross_entropy(x, y, label_smoothing=self.label_smoothing)


def cross_entropy(label_smoothing: float = 0.0) -> CrossEntropyLoss:
    """The flat baseline of the family, with the common call signature."""
    return CrossEntropyLoss(label_smoothing)


def _depths(parents: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(parents), dtype=np.int64)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
    return depth


def hxe_edge_weights(tree: Hierarchy, alpha: float, normalize: bool = False) -> np.ndarray:
    """lambda(v) = exp(-alpha * depth(v)) for every node v (the weight of the edge v -> parent(v);
    the root's entry is unused), divided by its sum over all nodes when `normalize` (fiveai)."""
    w = np.exp(-_nonneg("alpha", alpha) * _depths(tree.parents).astype(np.float64))
    return w / w.sum() if normalize else w


class HXELoss(nn.Module):
    """Hierarchical cross-entropy on flat logits (N, n_classes); see the module docstring."""

    def __init__(self, tree: Hierarchy, alpha: float, normalize: bool = False) -> None:
        super().__init__()
        self.alpha, self.normalize, self.n_classes = _nonneg("alpha", alpha), bool(normalize), tree.n_fine
        parents, w = tree.parents, hxe_edge_weights(tree, alpha, normalize)
        n_pos = tree.max_depth + 1
        path = np.zeros((tree.n_fine, n_pos), dtype=np.int64)  # path[y, k] = y's ancestor at depth k (padded with y)
        coef = np.zeros((tree.n_fine, n_pos))  # HXE(y) = sum_k coef[y, k] * log p(path[y, k])
        below = np.zeros((tree.n_nodes, tree.n_fine), dtype=bool)  # node -> leaves incidence
        for leaf, v in enumerate(tree.to_dict()["leaf_nodes"]):
            up = [v]
            while parents[up[-1]] >= 0:
                up.append(int(parents[up[-1]]))
            path[leaf] = up[::-1] + [v] * (n_pos - len(up))
            below[up, leaf] = True
            for k in range(1, len(up)):  # - lambda(v_k) * (log p(v_k) - log p(v_{k-1}))
                coef[leaf, k] -= w[path[leaf, k]]
                coef[leaf, k - 1] += w[path[leaf, k]]
        self.register_buffer("path", torch.from_numpy(path))
        self.register_buffer("coef", torch.from_numpy(coef))
        self.register_buffer("log_below", torch.zeros(below.shape).masked_fill(torch.from_numpy(~below), -math.inf))

    def path_log_probs(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(N, max_depth + 1): log p(v) for the nodes v on each label's path, root first, where
        log p(v) = logsumexp of log_softmax(logits) over the leaves below v (exact, no underflow)."""
        log_below = self.log_below.to(logits)[self.path.to(logits.device)[labels]]  # (N, depth + 1, C)
        return torch.logsumexp(F.log_softmax(logits, dim=1)[:, None, :] + log_below, dim=2)

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        x, y = _check(outputs, labels, self.n_classes, self.n_classes)
        return (self.coef.to(x)[y] * self.path_log_probs(x, y)).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, alpha={self.alpha}, normalize={self.normalize}"


def soft_labels(distances: ArrayLike, beta: float) -> np.ndarray:
    """(C, C) float64, row y = target distribution for label y: softmax_i(-beta * d(i, y) / d_max)."""
    d = _numpy(distances, "distances")
    if d.shape[0] != d.shape[1] or np.any(d < 0) or np.any(np.diag(d) != 0) or not np.allclose(d, d.T):
        raise ValueError("distances must be a square, symmetric, non-negative matrix with a zero diagonal")
    d_max = d.max() if d.max() > 0 else 1.0
    logits = -_nonneg("beta", beta) * d / d_max
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class SoftLabelLoss(nn.Module):
    """Cross-entropy between the soft label of y (`soft_labels`) and softmax(outputs)."""

    def __init__(self, distances: ArrayLike, beta: float) -> None:
        super().__init__()
        self.beta = _nonneg("beta", beta)
        self.register_buffer("targets", torch.from_numpy(soft_labels(distances, beta)))
        self.n_classes = int(self.targets.shape[0])

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        x, y = _check(outputs, labels, self.n_classes, self.n_classes)
        return -(self.targets.to(x)[y] * F.log_softmax(x, dim=1)).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, beta={self.beta}"


def tree_similarity(tree: Hierarchy) -> np.ndarray:
    """(C, C) float64 class similarities s = 1 - D / height(tree), D = ``tree.distance_matrix()`` (the
    height of the LCA node); 1 on the diagonal, 1 - height(root) / height(root) = 0 for classes that
    meet only at the root. A one-class tree (height 0) has s = [[1]]."""
    if tree.height == 0:
        return np.ones((1, 1))
    return 1.0 - tree.distance_matrix() / float(tree.height)


def embeddings_from_similarity(similarity: ArrayLike, tol: float = 1e-9) -> np.ndarray:
    """Barz & Denzler's incremental unit-sphere embedding: (C, C) lower-triangular E, E E^T = S."""
    s = _numpy(similarity, "similarity")
    if s.shape[0] != s.shape[1] or not np.allclose(s, s.T) or not np.allclose(np.diag(s), 1.0):
        raise ValueError("similarity must be a symmetric square matrix with ones on the diagonal")
    n = s.shape[0]
    e = np.zeros((n, n))
    e[0, 0] = 1.0
    for c in range(1, n):
        try:
            x = np.linalg.solve(e[:c, :c], s[c, :c])
        except np.linalg.LinAlgError as err:
            raise ValueError(f"cannot place class {c}: similarity matrix is singular ({err})") from err
        r = 1.0 - float(x @ x)
        if r < -tol:
            raise ValueError(f"cannot place class {c} on the unit sphere (1 - |x|^2 = {r:.3g}): similarity is not PSD")
        e[c, :c], e[c, c] = x, math.sqrt(max(r, 0.0))
    return e


def class_embeddings(tree: Hierarchy) -> np.ndarray:
    """(C, C) unit class vectors whose dot products are `tree_similarity(tree)`."""
    return embeddings_from_similarity(tree_similarity(tree))


def embedding_scores(outputs: Tensor, embeddings: ArrayLike) -> Tensor:
    """(N, C) cosine similarity of every output to every class vector (higher = more likely)."""
    e = torch.as_tensor(embeddings).to(device=outputs.device, dtype=outputs.dtype)
    if outputs.ndim != 2 or e.ndim != 2 or outputs.shape[1] != e.shape[1]:
        raise ValueError(f"outputs (N, D) and embeddings (C, D) disagree: {tuple(outputs.shape)} vs {tuple(e.shape)}")
    return F.normalize(outputs, dim=1) @ F.normalize(e, dim=1).T


class ClassCosines(nn.Module):
    """A fixed last layer: the cosine of a feature vector to every class vector, (N, D) -> (N, C).

    With it, an embedding network outputs scores that rank classes by nearest class vector, so
    caching, metrics and dynamic inference treat it like any classifier (argmax = nearest)."""

    def __init__(self, embeddings: ArrayLike) -> None:
        super().__init__()
        e = _numpy(embeddings, "embeddings")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("embeddings has an all-zero class vector")
        self.register_buffer("embeddings", torch.from_numpy(e / norms).float())
        self.n_classes, self.dim = e.shape

    def forward(self, features: Tensor) -> Tensor:
        return embedding_scores(features, self.embeddings)


class CosineLoss(nn.Module):
    """The embedding loss on cosines to the class vectors (outputs of `ClassCosines`):
    mean(1 - cos_y) + ce_weight * CE(scale * cos, y)."""

    def __init__(self, ce_weight: float = 0.0, scale: float = 16.0) -> None:
        super().__init__()
        self.ce_weight, self.scale = _nonneg("ce_weight", ce_weight), _nonneg("scale", scale)

    def forward(self, cosines: Tensor, labels: Tensor) -> Tensor:
        cos, y = _check(cosines, labels, None, None)
        loss = (1.0 - cos.gather(1, y[:, None]).squeeze(1)).mean()
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(self.scale * cos, y)
        return loss


class EmbeddingLoss(nn.Module):
    """Cosine loss towards the label's class vector, plus optional scaled-cosine cross-entropy,
    on raw features: `CosineLoss` after `ClassCosines`."""

    def __init__(self, embeddings: ArrayLike, ce_weight: float = 0.0, scale: float = 16.0) -> None:
        super().__init__()
        self.cosines = ClassCosines(embeddings)
        self.cosine_loss = CosineLoss(ce_weight, scale)
        self.n_classes, self.dim = self.cosines.n_classes, self.cosines.dim
        self.ce_weight, self.scale = self.cosine_loss.ce_weight, self.cosine_loss.scale

    @property
    def embeddings(self) -> Tensor:
        return self.cosines.embeddings

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        x, y = _check(outputs, labels, self.dim, self.n_classes)
        return self.cosine_loss(self.cosines(x), y)

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, dim={self.dim}, ce_weight={self.ce_weight}, scale={self.scale}"
