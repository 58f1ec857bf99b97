"""Tests for trainables.hier_losses: hand-computed values on a 2-level and an unbalanced 4-level
tree, reference numbers from the authors' code, and the real CIFAR-100 WordNet tree when
../shared/data is present."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.hierarchy import Hierarchy
from trainables.hier_losses import (
    CrossEntropyLoss,
    EmbeddingLoss,
    HXELoss,
    SoftLabelLoss,
    class_embeddings,
    cross_entropy,
    embedding_scores,
    embeddings_from_similarity,
    hxe_edge_weights,
    soft_labels,
    tree_similarity,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LN2 = math.log(2.0)

# Unbalanced tree, leaves at depths 2, 3, 4, 4, 1. Node ids (file order): root 0, A 1, a1 2, B 3,
# b1 4, C 5, c1 6, c2 7, d 8. Node heights (longest path down): leaves 0, C 1, B 2, A 3, root 4.
DEEP_TEXT = """root
-- A
---- a1
---- B
------ b1
------ C
-------- c1
-------- c2
-- d
"""
DEEP_FINE = ["a1", "b1", "c1", "c2", "d"]


@pytest.fixture()
def two() -> Hierarchy:
    # root -> {X: f0, f1; Y: f2, f3}
    return Hierarchy.from_fine_to_coarse([0, 0, 1, 1])


@pytest.fixture()
def deep() -> Hierarchy:
    return Hierarchy.from_indented(DEEP_TEXT, DEEP_FINE)


@pytest.fixture(scope="module")
def wordnet() -> Hierarchy:
    path = SHARED_DATA / "cifar100" / "fine_to_coarse.json"
    tree_file = SHARED_DATA / "cifar100" / "wordnet-hierarchy.txt"
    if not path.is_file() or not tree_file.is_file():
        pytest.skip(f"real CIFAR-100 label files not present under {SHARED_DATA / 'cifar100'}")
    names = json.loads(path.read_text(encoding="utf-8"))
    return Hierarchy.from_indented_file(tree_file, names["fine_label_names"])


def logits_of(*probs: float) -> torch.Tensor:
    """A (1, C) float64 logit row whose softmax is exactly `probs` (they sum to 1)."""
    return torch.log(torch.tensor([probs], dtype=torch.float64))


# ---------------------------------------------------------------------------- cross-entropy


def test_cross_entropy_by_hand_and_label_smoothing() -> None:
    z = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # softmax = [1/4, 3/4]
    y = torch.tensor([1])
    assert cross_entropy()(z, y).item() == pytest.approx(-math.log(0.75), abs=1e-12)
    # smoothing 0.2 over 2 classes: target = 0.8 * [0, 1] + 0.2 / 2 = [0.1, 0.9]
    assert cross_entropy(0.2)(z, y).item() == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)), abs=1e-12)
    g = torch.Generator().manual_seed(0)
    zz, yy = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    for ls in (0.0, 0.1, 0.35):
        torch.testing.assert_close(cross_entropy(ls)(zz, yy), F.cross_entropy(zz, yy, label_smoothing=ls))
    assert isinstance(cross_entropy(0.1), CrossEntropyLoss)


# ---------------------------------------------------------------------------- hierarchical cross-entropy


@pytest.mark.parametrize("which", ["two", "deep"])
def test_hxe_alpha0_is_cross_entropy(which: str, request: pytest.FixtureRequest) -> None:
    # alpha = 0: every lambda = 1 and the conditionals telescope: -sum log p(v)/p(parent v) = -log p(y).
    tree = request.getfixturevalue(which)
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(32, tree.n_fine, generator=g, dtype=torch.float64)
    y = torch.randint(0, tree.n_fine, (32,), generator=g)
    torch.testing.assert_close(HXELoss(tree, 0.0)(z, y), F.cross_entropy(z, y), rtol=1e-12, atol=1e-12)


def test_hxe_by_hand_deep(deep: Hierarchy) -> None:
    # p = [a1 .1, b1 .2, c1 .3, c2 .15, d .25]; label c1, path root -> A -> B -> C -> c1.
    # p(A) = .1+.2+.3+.15 = .75, p(B) = .65, p(C) = .45, p(c1) = .3; alpha = ln 2 so that
    # lambda(depth 1..4) = 1/2, 1/4, 1/8, 1/16:
    # HXE = -(1/2 ln .75 + 1/4 ln(.65/.75) + 1/8 ln(.45/.65) + 1/16 ln(.3/.45))
    #     = -(-0.143841 - 0.035775 - 0.045966 - 0.025342) = 0.250923
    z = logits_of(0.1, 0.2, 0.3, 0.15, 0.25)
    want = -(0.5 * math.log(0.75) + 0.25 * math.log(0.65 / 0.75) + 0.125 * math.log(0.45 / 0.65) + 0.0625 * math.log(0.3 / 0.45))
    assert want == pytest.approx(0.250923, abs=1e-6)
    assert HXELoss(deep, LN2)(z, torch.tensor([2])).item() == pytest.approx(want, abs=1e-12)
    # normalize=True divides by Z = sum over all 9 nodes of 2^-depth:
    # root 1 + A,d 2 * 1/2 + a1,B 2 * 1/4 + b1,C 2 * 1/8 + c1,c2 2 * 1/16 = 2.875
    assert hxe_edge_weights(deep, LN2, normalize=True).sum() == pytest.approx(1.0)
    assert HXELoss(deep, LN2, normalize=True)(z, torch.tensor([2])).item() == pytest.approx(want / 2.875, abs=1e-12)
    # label a1 (depth 2): -(1/2 ln .75 + 1/4 ln(.1/.75)); label d (depth 1, directly under the root): -1/2 ln .25
    z3 = z.expand(3, 5)
    per = [-(0.5 * math.log(0.75) + 0.25 * math.log(0.1 / 0.75)), -0.5 * math.log(0.25), want]
    assert HXELoss(deep, LN2)(z3, torch.tensor([0, 4, 2])).item() == pytest.approx(sum(per) / 3, abs=1e-12)


def test_hxe_by_hand_two_level(two: Hierarchy) -> None:
    # p = [.1, .2, .3, .4], label f2 in Y: p(Y) = .7, p(f2 | Y) = .3/.7; alpha = ln 2:
    # HXE = -(1/2 ln .7 + 1/4 ln(3/7)) = -(-0.178337 - 0.211824) = 0.390161
    z = logits_of(0.1, 0.2, 0.3, 0.4)
    want = -(0.5 * math.log(0.7) + 0.25 * math.log(3 / 7))
    assert want == pytest.approx(0.390161, abs=1e-6)
    assert HXELoss(two, LN2)(z, torch.tensor([2])).item() == pytest.approx(want, abs=1e-12)
    # Z = 1 (root) + 2 * 1/2 (X, Y) + 4 * 1/4 (leaves) = 3
    assert HXELoss(two, LN2, normalize=True)(z, torch.tensor([2])).item() == pytest.approx(want / 3, abs=1e-12)


# Reference numbers from fiveai/making-better-mistakes (commit f0bb7d0): HierarchicalCrossEntropyLoss
# with get_weighting(tree, "exponential", value=alpha) (normalize=True by default), run on these
# trees as nltk-style trees with classes in this order, float32. Their code returns -inf for a
# leaf directly under the root (its first denominator is never filled), so labels avoid "d".
HXE_Z_DEEP = [[0.5, -1.0, 2.0, 0.0, 1.0], [1.5, 0.2, -0.3, 0.7, -2.0], [-0.4, 0.9, 0.1, 1.2, 0.3]]
HXE_Z_TWO = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.2, -0.3, 0.7], [-0.4, 0.9, 0.1, 1.2]]
FIVEAI_HXE = {
    ("deep", 0.0): [0.06382644176483154, 0.07232752442359924, 0.10962451994419098],
    ("deep", 0.1): [0.06439489126205444, 0.07350220531225204, 0.10246367007493973],
    ("deep", 0.6): [0.061623912304639816, 0.062263309955596924, 0.06765982508659363],
    ("two", 0.0): [0.0489070788025856, 0.09072469174861908, 0.16031965613365173],
    ("two", 0.1): [0.04911439120769501, 0.09103070199489594, 0.16347672045230865],
    ("two", 0.6): [0.047376397997140884, 0.0874689370393753, 0.16842874884605408],
}


@pytest.mark.parametrize(("which", "alpha"), sorted(FIVEAI_HXE))
def test_hxe_matches_fiveai(which: str, alpha: float, request: pytest.FixtureRequest) -> None:
    tree = request.getfixturevalue(which)
    z = torch.tensor(HXE_Z_DEEP if which == "deep" else HXE_Z_TWO, dtype=torch.float64)
    y = torch.tensor([2, 0, 3] if which == "deep" else [2, 0, 1])
    loss = HXELoss(tree, alpha, normalize=True)
    for i, ref in enumerate(FIVEAI_HXE[(which, alpha)]):
        assert loss(z[i : i + 1], y[i : i + 1]).item() == pytest.approx(ref, rel=1e-6)
    assert loss(z, y).item() == pytest.approx(sum(FIVEAI_HXE[(which, alpha)]) / 3, rel=1e-6)


def test_hxe_stable_for_extreme_logits(deep: Hierarchy) -> None:
    # p(c1) = e^-400 underflows in float32 probability space; the log-sum-exp path stays finite.
    z = torch.tensor([[0.0, -200.0, -200.0, -200.0, 200.0]], requires_grad=True)
    y = torch.tensor([2])
    loss = HXELoss(deep, 0.0)(z, y)
    assert loss.item() == pytest.approx(F.cross_entropy(z.detach(), y).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    z64 = 50 * torch.randn(64, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y64 = torch.arange(64) % 5
    l64 = HXELoss(deep, 0.4)(z64, y64)
    assert math.isfinite(l64.item())
    torch.testing.assert_close(HXELoss(deep, 0.4)(z64.float(), y64).double(), l64, rtol=1e-5, atol=1e-5)


def test_hxe_real_tree(wordnet: Hierarchy) -> None:
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(16, 100, generator=g, dtype=torch.float64), torch.randint(0, 100, (16,), generator=g)
    torch.testing.assert_close(HXELoss(wordnet, 0.0)(z, y), F.cross_entropy(z, y))
    assert HXELoss(wordnet, 0.6)(z, y).item() < HXELoss(wordnet, 0.1)(z, y).item()  # smaller weights throughout


# ---------------------------------------------------------------------------- soft labels


def test_soft_labels_by_hand(two: Hierarchy, deep: Hierarchy) -> None:
    d = two.distance_matrix()  # 1 within a superclass, 2 across; d_max = 2
    # beta = 2, label 0: exp(-2 * [0, 1/2, 1, 1]) = [1, e^-1, e^-2, e^-2], normalised
    raw = np.array([1.0, math.exp(-1), math.exp(-2), math.exp(-2)])
    np.testing.assert_allclose(soft_labels(d, 2.0)[0], raw / raw.sum(), rtol=1e-12)
    z = logits_of(0.1, 0.2, 0.3, 0.4)
    want = -float(np.dot(raw / raw.sum(), np.log([0.1, 0.2, 0.3, 0.4])))
    assert SoftLabelLoss(d, 2.0)(z, torch.tensor([0])).item() == pytest.approx(want, abs=1e-12)
    # beta = 0: uniform target, loss = -(ln .1 + ln .2 + ln .3 + ln .4) / 4 = 1.5898...
    np.testing.assert_allclose(soft_labels(d, 0.0), np.full((4, 4), 0.25))
    uniform = -(math.log(0.1) + math.log(0.2) + math.log(0.3) + math.log(0.4)) / 4
    assert SoftLabelLoss(d, 0.0)(z, torch.tensor([3])).item() == pytest.approx(uniform, abs=1e-12)
    # deep tree, label c1: d = [3, 2, 0, 1, 4], d_max = 4, beta = 4 -> [e^-3, e^-2, 1, e^-1, e^-4] normalised
    raw = np.exp(-np.array([3.0, 2.0, 0.0, 1.0, 4.0]))
    np.testing.assert_allclose(soft_labels(deep.distance_matrix(), 4.0)[2], raw / raw.sum(), rtol=1e-12)
    # the same column from fiveai's make_all_soft_labels(distances, classes, hardness=4.0), float32
    fiveai = [0.03168491646647453, 0.08612854033708572, 0.6364085674285889, 0.2341216504573822, 0.011656230315566063]
    np.testing.assert_allclose(soft_labels(deep.distance_matrix(), 4.0)[2], fiveai, rtol=1e-6)
    # label a1 (depth 2), where the rule before version 2 differed: LCA heights a1-b1 = a1-c1 = a1-c2
    # = h(A) = 3, a1-d = h(root) = 4 (version 1: [0, 2, 3, 3, 2]), beta = 4, d_max = 4
    raw = np.exp(-np.array([0.0, 3.0, 3.0, 3.0, 4.0]))
    np.testing.assert_allclose(soft_labels(deep.distance_matrix(), 4.0)[0], raw / raw.sum(), rtol=1e-12)


def test_soft_labels_large_beta_is_cross_entropy(deep: Hierarchy) -> None:
    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(20, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (20,), generator=g)
    loss = SoftLabelLoss(deep.distance_matrix(), 200.0)  # off-diagonal weights <= e^-50
    torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y), rtol=1e-12, atol=1e-12)
    assert np.allclose(soft_labels(deep.distance_matrix(), 3.0).sum(axis=1), 1.0)


# ---------------------------------------------------------------------------- class embeddings


def test_tree_similarity_by_hand(two: Hierarchy, deep: Hierarchy) -> None:
    # two-level: LCA heights 1 within a superclass, 2 across; tree height 2
    s2 = np.kron(np.eye(2), [[1.0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(tree_similarity(two), s2)
    # deep, Barz & Denzler: s = 1 - height(LCA) / 4; LCA heights a1-{b1,c1,c2} A=3, b1-{c1,c2} B=2,
    # c1-c2 C=1, d-anything root=4
    s_node = np.array(
        [
            [1.0, 0.25, 0.25, 0.25, 0.0],
            [0.25, 1.0, 0.5, 0.5, 0.0],
            [0.25, 0.5, 1.0, 0.75, 0.0],
            [0.25, 0.5, 0.75, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(tree_similarity(deep), s_node)
    # the one class distance: s = 1 - distance_matrix / height (a1-b1 is 0.25, not the 0.5 that
    # version 1's max(2, 3) - depth(A) = 2 gave)
    np.testing.assert_allclose(tree_similarity(deep), 1 - deep.distance_matrix() / deep.height)


def test_class_embeddings_by_hand(two: Hierarchy, deep: Hierarchy) -> None:
    # two-level: e0 = (1, 0, 0, 0); e1 solves e0 . x = 1/2 -> (1/2, sqrt(3)/2, 0, 0);
    # e2 is orthogonal to both -> (0, 0, 1, 0); e3 = (0, 0, 1/2, sqrt(3)/2)
    r3 = math.sqrt(3) / 2
    np.testing.assert_allclose(class_embeddings(two), [[1, 0, 0, 0], [0.5, r3, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, r3]], atol=1e-12)
    # deep: e1 = (1/4, sqrt(15)/4); e2[:2] solves [[1, 0], [1/4, sqrt(15)/4]] x = [1/4, 1/2]
    # -> x = (1/4, 1.75/sqrt(15)), |x|^2 = 1/16 + 49/240 = 4/15, e2[2] = sqrt(11/15)
    e = class_embeddings(deep)
    np.testing.assert_allclose(e[1, :2], [0.25, math.sqrt(15) / 4], atol=1e-12)
    np.testing.assert_allclose(e[2, :3], [0.25, 1.75 / math.sqrt(15), math.sqrt(11 / 15)], atol=1e-12)
    np.testing.assert_allclose(e[4], [0, 0, 0, 0, 1], atol=1e-12)


def _check_embedding(tree: Hierarchy) -> float:
    s, e = tree_similarity(tree), class_embeddings(tree)
    assert e.shape == (tree.n_fine, tree.n_fine)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(e, np.linalg.cholesky(s), atol=1e-9)  # the incremental solve is Cholesky
    err = float(np.abs(e @ e.T - s).max())
    assert err < 1e-6
    return err


def test_embeddings_reproduce_similarity_small(two: Hierarchy, deep: Hierarchy) -> None:
    _check_embedding(two)
    _check_embedding(deep)


@pytest.mark.real_data
def test_embeddings_reproduce_similarity_wordnet(wordnet: Hierarchy) -> None:
    assert _check_embedding(wordnet) < 1e-12
    # the height-based similarities: classes that meet only at the root (height 8) are orthogonal
    s = tree_similarity(wordnet)
    np.testing.assert_allclose(s, 1 - wordnet.distance_matrix() / 8)
    assert s.min() == 0.0


def test_embedding_rejects_non_psd() -> None:
    s = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])  # eigenvalue -0.8
    with pytest.raises(ValueError, match="not PSD"):
        embeddings_from_similarity(s)
    with pytest.raises(ValueError, match="ones on the diagonal"):
        embeddings_from_similarity(np.array([[1.0, 0.0], [0.0, 2.0]]))


def test_cosine_loss_by_hand() -> None:
    emb = np.array([[2.0, 0.0], [0.0, 5.0]])  # rows are normalised to e0 = (1, 0), e1 = (0, 1)
    z = torch.tensor([[3.0, 4.0], [-1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # z0 / |z0| = (.6, .8): cos to e0 = .6; z1 / |z1| = (-1, 0): cos to e1 = 0
    torch.testing.assert_close(embedding_scores(z, emb), torch.tensor([[0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64))
    assert EmbeddingLoss(emb)(z, y).item() == pytest.approx(((1 - 0.6) + (1 - 0.0)) / 2, abs=1e-12)
    # ce_weight .5, scale 2: logits 2 * cos = [1.2, 1.6] (label 0) and [-2, 0] (label 1)
    # CE = ln(1 + e^.4) and ln(1 + e^-2); loss = .7 + .5 * mean
    ce = (math.log(1 + math.exp(0.4)) + math.log(1 + math.exp(-2.0))) / 2
    assert EmbeddingLoss(emb, ce_weight=0.5, scale=2.0)(z, y).item() == pytest.approx(0.7 + 0.5 * ce, abs=1e-12)


def test_embedding_loss_on_tree_vectors(deep: Hierarchy) -> None:
    e = class_embeddings(deep)
    out = torch.from_numpy(3.0 * e)  # any positive multiple of the class vector is a perfect output
    y = torch.arange(5)
    assert EmbeddingLoss(e)(out, y).item() == pytest.approx(0.0, abs=1e-12)
    scores = embedding_scores(out, e)
    assert scores.argmax(dim=1).tolist() == y.tolist()
    np.testing.assert_allclose(scores.numpy(), tree_similarity(deep), atol=1e-12)


# ---------------------------------------------------------------------------- common behaviour


def _all_losses(tree: Hierarchy) -> list[torch.nn.Module]:
    return [
        cross_entropy(0.1),
        HXELoss(tree, 0.0),
        HXELoss(tree, 0.6, normalize=True),
        SoftLabelLoss(tree.distance_matrix(), 8.0),
        EmbeddingLoss(class_embeddings(tree)),
        EmbeddingLoss(class_embeddings(tree), ce_weight=0.1),
    ]


@pytest.mark.parametrize("which", ["two", "deep"])
def test_gradients_flow(which: str, request: pytest.FixtureRequest) -> None:
    tree = request.getfixturevalue(which)
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, tree.n_fine, (8,), generator=g)
    for loss in _all_losses(tree):
        z = torch.randn(8, tree.n_fine, generator=g, requires_grad=True)
        out = loss(z, y)
        assert out.ndim == 0 and torch.isfinite(out)
        out.backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0, loss


def test_low_precision_and_buffers(deep: Hierarchy) -> None:
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 2, 4])
    for loss in _all_losses(deep):
        ref = loss(z, y)
        assert ref.dtype == torch.float32
        torch.testing.assert_close(loss(z.bfloat16(), y), ref, rtol=0.05, atol=0.05)  # computed in float32
        loss.to(torch.float64)  # buffers follow .to(); the result follows the input's dtype
        torch.testing.assert_close(loss(z.double(), y).float(), ref, rtol=1e-5, atol=1e-6)
    assert set(dict(HXELoss(deep, 0.3).named_buffers())) == {"path", "coef", "log_below"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(deep: Hierarchy) -> None:
    z = torch.randn(6, 5, device="cuda", requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 2], device="cuda")
    for loss in _all_losses(deep):
        cpu = loss(z.detach().cpu(), y.cpu())
        out = loss(z, y)  # buffers still on the CPU: moved to the input's device in forward
        torch.testing.assert_close(out.cpu(), cpu, rtol=1e-5, atol=1e-6)
        out.backward()
        loss.cuda()
        torch.testing.assert_close(loss(z, y).cpu(), cpu, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(z.grad).all()


def test_validation(deep: Hierarchy) -> None:
    z, y = torch.zeros(3, 5), torch.tensor([0, 1, 2])
    for loss in _all_losses(deep):
        with pytest.raises(ValueError, match="outputs must have shape"):
            loss(torch.zeros(3, 5, 1), y)
        with pytest.raises(ValueError, match="labels must have shape"):
            loss(z, torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="integer class indices"):
            loss(z, y.float())
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
            loss(z, torch.tensor([0, 5, 1]))
        with pytest.raises(ValueError, match="empty batch"):
            loss(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    for loss in _all_losses(deep)[1:]:
        with pytest.raises(ValueError, match=r"outputs must have shape \(N, 5\)"):
            loss(torch.zeros(3, 4), y)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            HXELoss(deep, bad)
        with pytest.raises(ValueError, match="beta"):
            SoftLabelLoss(deep.distance_matrix(), bad)
        with pytest.raises(ValueError, match="ce_weight"):
            EmbeddingLoss(class_embeddings(deep), ce_weight=bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(1.5)
    with pytest.raises(ValueError, match="symmetric"):
        SoftLabelLoss(np.array([[0.0, 1.0], [2.0, 0.0]]), 1.0)
    with pytest.raises(ValueError, match="all-zero"):
        EmbeddingLoss(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="disagree"):
        embedding_scores(torch.zeros(2, 3), class_embeddings(deep))
