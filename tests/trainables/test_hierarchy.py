"""Tests for trainables.hierarchy: hand-made trees with hand-computed answers, and the real
CIFAR-100 WordNet tree when ../shared/data is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainables.hierarchy import Hierarchy

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# ---------------------------------------------------------------------------- two-level tree


@pytest.fixture()
def two_level() -> Hierarchy:
    return Hierarchy.from_fine_to_coarse([0, 0, 1, 1, 1], ["a", "b", "c", "d", "e"], ["X", "Y"])


def test_two_level_structure(two_level: Hierarchy) -> None:
    h = two_level
    assert h.n_fine == 5 and h.n_coarse == 2
    assert h.fine_names == ["a", "b", "c", "d", "e"]
    assert h.coarse_names == ["X", "Y"]
    assert h.coarse_of.dtype == np.int64
    assert h.coarse_of.tolist() == [0, 0, 1, 1, 1]
    assert h.n_nodes == 1 + 2 + 5
    assert [h.depth(f) for f in range(5)] == [2] * 5
    assert h.ancestor(0, 0) == "root"
    assert h.ancestor(2, 1) == "Y"
    assert h.ancestor(2, 2) == "c"
    assert h.ancestor(2, 7) == "c"  # clamped to the leaf
    assert h.ancestors_at(0).tolist() == [0] * 5
    assert h.ancestors_at(1).tolist() == h.coarse_of.tolist()
    assert h.ancestors_at(2).tolist() == list(range(5))
    assert h.ancestors_at(9).tolist() == list(range(5))
    assert h.nodes_at(1) == ["X", "Y"]


def test_two_level_distances(two_level: Hierarchy) -> None:
    d = two_level.distance_matrix()
    expected = np.array(
        [
            [0, 1, 2, 2, 2],
            [1, 0, 2, 2, 2],
            [2, 2, 0, 1, 1],
            [2, 2, 1, 0, 1],
            [2, 2, 1, 1, 0],
        ],
        dtype=np.float64,
    )
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d, expected)
    assert two_level.lca_height(0, 1) == 1
    assert two_level.lca_height(1, 4) == 2
    assert two_level.lca_height(3, 3) == 0


def test_default_names_and_coarse_order() -> None:
    # Superclass indices need not appear in increasing order of the first fine class.
    h = Hierarchy.from_fine_to_coarse(np.array([2, 0, 1, 2]))
    assert h.fine_names == ["fine_0", "fine_1", "fine_2", "fine_3"]
    assert h.coarse_names == ["coarse_0", "coarse_1", "coarse_2"]
    assert h.ancestors_at(1).tolist() == [2, 0, 1, 2]
    assert h.ancestor(0, 1) == "coarse_2"


# ---------------------------------------------------------------------------- deeper, unbalanced tree

DEEP_TEXT = """\
life
-- animal
---- mammal
------ cat
------ dog
---- bird
-- plant
---- tree
------ oak
------ conifer
-------- pine
---- grass
"""
# Deliberately not file order: leaves are mapped to class indices by name.
DEEP_FINE = ["pine", "cat", "grass", "dog", "oak", "bird"]
# Heights worked out by hand from DEEP_TEXT (longest path down to a leaf): leaves 0, mammal 1,
# conifer 1, animal 2, tree 2, plant 3, life 4.
DEEP_HEIGHTS = {"life": 4, "animal": 2, "mammal": 1, "plant": 3, "tree": 2, "conifer": 1}
# D[a, b] = height of the LCA node, by hand:
#                  pine cat grass dog oak bird
DEEP_DISTANCES = [
    [0, 4, 3, 4, 2, 4],  # pine  (depth 4)
    [4, 0, 4, 1, 4, 2],  # cat   (depth 3)
    [3, 4, 0, 4, 3, 4],  # grass (depth 2)
    [4, 1, 4, 0, 4, 2],  # dog   (depth 3)
    [2, 4, 3, 4, 0, 4],  # oak   (depth 3)
    [4, 2, 4, 2, 4, 0],  # bird  (depth 2)
]
# The rule before version 2, max(depth a, depth b) - depth(LCA), by hand; it differs on 7 pairs
# (e.g. grass-bird: 2 then, 4 now: they meet at the root, whose subtree is 4 deep).
DEEP_DISTANCES_V1 = [
    [0, 4, 3, 4, 2, 4],
    [4, 0, 3, 1, 3, 2],
    [3, 3, 0, 3, 2, 2],
    [4, 1, 3, 0, 3, 2],
    [2, 3, 2, 3, 0, 3],
    [4, 2, 2, 2, 3, 0],
]


@pytest.fixture()
def deep() -> Hierarchy:
    return Hierarchy.from_indented(DEEP_TEXT, DEEP_FINE)


def test_deep_depths_and_ancestors(deep: Hierarchy) -> None:
    assert deep.n_nodes == 12
    assert deep.max_depth == 4
    assert [deep.depth(f) for f in range(6)] == [4, 3, 2, 3, 3, 2]
    assert deep.leaf_depths.tolist() == [4, 3, 2, 3, 3, 2]
    assert [deep.ancestor(0, lv) for lv in range(6)] == ["life", "plant", "tree", "conifer", "pine", "pine"]
    assert deep.ancestor(5, 1) == "animal"
    assert deep.ancestor(5, 3) == "bird"  # clamped
    with pytest.raises(ValueError):
        deep.ancestor(0, -1)
    with pytest.raises(IndexError):
        deep.depth(6)


def test_deep_coarse_is_depth_one(deep: Hierarchy) -> None:
    assert deep.coarse_names == ["animal", "plant"]
    assert deep.coarse_of.tolist() == [1, 0, 1, 0, 1, 0]
    assert deep.ancestors_at(1).tolist() == deep.coarse_of.tolist()


def test_deep_ancestors_at_numbering(deep: Hierarchy) -> None:
    # Level 2: internal nodes in file order (mammal, tree), then clamped leaves by class index
    # (grass = class 2, bird = class 5).
    assert deep.nodes_at(2) == ["mammal", "tree", "grass", "bird"]
    assert deep.ancestors_at(2).tolist() == [1, 0, 2, 0, 1, 3]
    assert deep.nodes_at(3) == ["conifer", "cat", "grass", "dog", "oak", "bird"]
    assert deep.ancestors_at(3).tolist() == [0, 1, 2, 3, 4, 5]
    assert deep.ancestors_at(4).tolist() == list(range(6))
    assert deep.ancestors_at(0).tolist() == [0] * 6
    assert deep.ancestors_at(2).dtype == np.int64


def test_deep_heights(deep: Hierarchy) -> None:
    names, heights = deep.node_names, deep.node_heights
    assert {n: int(h) for n, h in zip(names, heights) if n in DEEP_HEIGHTS} == DEEP_HEIGHTS
    assert all(heights[names.index(f)] == 0 for f in DEEP_FINE)
    assert deep.height == 4 == deep.max_depth


def test_deep_distances_are_lca_node_heights(deep: Hierarchy) -> None:
    d = deep.distance_matrix()
    np.testing.assert_array_equal(d, np.array(DEEP_DISTANCES, dtype=np.float64))
    np.testing.assert_array_equal(d, d.T)
    assert np.all(np.diag(d) == 0)
    for a in range(6):
        for b in range(6):
            assert deep.lca_height(a, b) == DEEP_DISTANCES[a][b]
            assert DEEP_DISTANCES[a][b] == (0 if a == b else DEEP_HEIGHTS[deep.lca(a, b)])
    assert (deep.lca(1, 3), deep.lca(0, 4), deep.lca(2, 4), deep.lca(2, 5), deep.lca(1, 1)) == (
        "mammal", "tree", "plant", "life", "cat")
    # not the rule before version 2: the two differ exactly where the LCA's subtree is deeper
    # than either class
    differ = np.array(DEEP_DISTANCES) != np.array(DEEP_DISTANCES_V1)
    assert differ.sum() == 2 * 7 and d[2, 5] == 4 and DEEP_DISTANCES_V1[2][5] == 2


def test_distances_are_an_ultrametric(deep: Hierarchy) -> None:
    d = deep.distance_matrix()
    assert np.all(d[:, None, :] <= np.maximum(d[:, :, None], d[None, :, :]))  # D[a, c] <= max(D[a, b], D[b, c])


def test_unbalanced_chain_tree_by_hand() -> None:
    # A leaf right under the root next to a long chain: under the root every pair is 5 apart.
    #   r -- s (leaf, depth 1)
    #     -- u -- v -- w -- x (leaf, depth 4)
    #                    -- y -- z (leaf, depth 5)
    h = Hierarchy.from_indented("r\n-- s\n-- u\n---- v\n------ w\n-------- x\n-------- y\n---------- z\n",
                                ["s", "x", "z"])
    # heights: y 1, w 2, v 3, u 4, r 5; D[s, x] = D[s, z] = h(r) = 5, D[x, z] = h(w) = 2
    np.testing.assert_array_equal(h.distance_matrix(), [[0, 5, 5], [5, 0, 2], [5, 2, 0]])
    # version 1 gave max(1, 4) - 0 = 4, max(1, 5) - 0 = 5, max(4, 5) - 3 = 2
    assert h.lca(1, 2) == "w" and h.height == 5


def test_distance_matrix_cache_is_protected(deep: Hierarchy) -> None:
    d = deep.distance_matrix()
    d[0, 1] = 99.0
    assert deep.distance_matrix()[0, 1] == 4.0


def test_explicit_coarse_of_overrides_tree(deep: Hierarchy) -> None:
    # Superclasses that are not a level of the tree (as with CIFAR-100's official 20).
    h = Hierarchy.from_indented(
        DEEP_TEXT, DEEP_FINE, coarse_of=[2, 0, 1, 0, 2, 1], coarse_names=["pets", "small", "trees"]
    )
    assert h.coarse_of.tolist() == [2, 0, 1, 0, 2, 1]
    assert h.coarse_names == ["pets", "small", "trees"]
    np.testing.assert_array_equal(h.distance_matrix(), deep.distance_matrix())
    assert h.ancestors_at(1).tolist() == deep.coarse_of.tolist()


def test_serialisation_round_trips(deep: Hierarchy) -> None:
    d = deep.to_dict()
    again = Hierarchy.from_dict(json.loads(json.dumps(d)))
    assert again == deep
    assert again.fine_names == DEEP_FINE
    assert Hierarchy.from_indented(deep.to_indented(), DEEP_FINE) == deep
    assert d["coarse_of"] == [1, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(again.distance_matrix(), deep.distance_matrix())


def test_from_indented_file(tmp_path: Path) -> None:
    path = tmp_path / "tree.txt"
    path.write_text(DEEP_TEXT, encoding="utf-8")
    assert Hierarchy.from_indented_file(path, DEEP_FINE) == Hierarchy.from_indented(DEEP_TEXT, DEEP_FINE)
    path.write_text(DEEP_TEXT.replace("---- grass", "----- grass"), encoding="utf-8")
    with pytest.raises(ValueError, match="tree.txt"):
        Hierarchy.from_indented_file(path, DEEP_FINE)


def test_blank_lines_and_trailing_spaces_are_ignored() -> None:
    text = "root  \n\n-- a  \n---- x\n\n---- y\n-- z\n"
    h = Hierarchy.from_indented(text, ["x", "y", "z"])
    assert h.coarse_names == ["a", "z"]
    assert h.coarse_of.tolist() == [0, 0, 1]
    assert h.distance_matrix()[0, 2] == 2.0


# ---------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("text", "fine", "match"),
    [
        ("root\n--- a\n", ["a"], "dashes"),  # odd number of dashes
        ("root\n-- a\n------ b\n", ["b"], "one level"),  # jump of two levels
        ("-- root\n", ["root"], "first node"),
        ("root\n-- a\nother\n-- b\n", ["a", "b"], "second root"),
        ("root\n-- \n", ["a"], "without a name"),
        ("root\n-- a\n-- b\n", ["a"], "not one of the fine classes"),  # unknown leaf
        ("root\n-- a\n-- b\n", ["a", "b", "c"], "missing"),  # missing leaf
        ("root\n-- g\n---- a\n-- h\n---- a\n", ["a"], "twice"),  # duplicate leaf
        ("root\n-- a\n---- b\n", ["a", "b"], "internal"),  # a fine class with children
        ("", ["a"], "empty"),
    ],
)
def test_malformed_indented_text(text: str, fine: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Hierarchy.from_indented(text, fine)


def test_duplicate_fine_names_rejected() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        Hierarchy.from_indented("r\n-- a\n-- b\n", ["a", "a"])
    with pytest.raises(ValueError, match="unique"):
        Hierarchy.from_fine_to_coarse([0, 0], ["a", "a"])


@pytest.mark.parametrize(
    ("f2c", "fine", "coarse", "match"),
    [
        ([0, 2], None, None, "without any fine class"),  # superclass 1 is empty
        ([0, 0], None, ["X", "Y"], "without any fine class"),
        ([0, -1], None, None, "negative"),
        ([0, 3], None, ["X", "Y"], "only 2 coarse_names"),
        ([0, 1], ["a"], None, "fine_names"),
        ([], None, None, "non-empty"),
        ([0.5, 1.0], None, None, "integers"),
    ],
)
def test_malformed_fine_to_coarse(
    f2c: list[float], fine: list[str] | None, coarse: list[str] | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Hierarchy.from_fine_to_coarse(f2c, fine, coarse)


def test_bad_explicit_coarse_of() -> None:
    with pytest.raises(ValueError, match="one entry per fine class"):
        Hierarchy.from_indented(DEEP_TEXT, DEEP_FINE, coarse_of=[0, 1])


# ---------------------------------------------------------------------------- real WordNet tree


@pytest.fixture(scope="module")
def cifar100_names() -> dict:
    path = SHARED_DATA / "cifar100" / "fine_to_coarse.json"
    if not path.is_file() or not (SHARED_DATA / "cifar100" / "wordnet-hierarchy.txt").is_file():
        pytest.skip(f"real CIFAR-100 label files not present under {SHARED_DATA / 'cifar100'}")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.real_data
def test_real_wordnet_tree(cifar100_names: dict) -> None:
    names = cifar100_names
    tree = Hierarchy.from_indented_file(
        SHARED_DATA / "cifar100" / "wordnet-hierarchy.txt",
        names["fine_label_names"],
        coarse_of=names["fine_to_coarse"],
        coarse_names=names["coarse_label_names"],
    )
    assert tree.n_fine == 100 and tree.n_nodes == 163
    assert tree.leaf_depths.min() == 2 and tree.leaf_depths.max() == 8
    assert tree.n_coarse == 20
    assert tree.coarse_of.tolist() == names["fine_to_coarse"]
    fine = names["fine_label_names"]
    otter, skunk, mountain = fine.index("otter"), fine.index("skunk"), fine.index("mountain")
    assert tree.depth(otter) == 7 and tree.depth(mountain) == 2
    assert tree.ancestor(otter, 5) == "carnivore"
    assert tree.lca_height(otter, skunk) == 1
    assert tree.lca_height(mountain, otter) == 8  # they meet at the root, whose height is 8
    d = tree.distance_matrix()
    np.testing.assert_array_equal(d, d.T)
    off = d[~np.eye(100, dtype=bool)]
    assert off.min() >= 1 and off.max() == 8
    # the examples: cloud vs mushroom meet at the root (8; the old rule said 2, as for wolf vs lion)
    cloud, mushroom, wolf, lion = (fine.index(n) for n in ("cloud", "mushroom", "wolf", "lion"))
    assert tree.lca(cloud, mushroom) == "entity" and d[cloud, mushroom] == 8
    assert tree.lca(wolf, lion) == "carnivore" and d[wolf, lion] == 2
    # against the rule before version 2, max(depth a, depth b) - depth(LCA): 8,052 of 9,900 pairs differ, by up to 6
    levels = np.stack([tree.ancestors_at(lv) for lv in range(tree.max_depth + 1)], axis=1)
    lca_depth = (levels[:, None, :] == levels[None, :, :]).sum(axis=2) - 1
    depths = tree.leaf_depths
    old = np.maximum(depths[:, None], depths[None, :]) - lca_depth
    np.fill_diagonal(old, 0)
    assert (d != old).sum() == 8052 and (d - old).max() == 6 and (d >= old).all()
    assert tree.ancestors_at(8).tolist() == list(range(100))
    # The WordNet level below the root is not the official superclass split.
    assert tree.nodes_at(1) == ["natural_scenes", "organism", "food", "artifact"]
