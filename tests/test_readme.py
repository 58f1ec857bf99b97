"""The README documents the common results columns and every built-in space's own columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reports.schema import COMMON
from spaces import get_space

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_common_columns_are_documented():
    for name in COMMON.names:
        assert f"`{name}`" in README, name


@pytest.mark.parametrize("name", ["gran_hbn", "branchynet", "better_mistakes", "hierarchy_heads", "transfer"])
def test_each_space_section_lists_its_declared_columns(name):
    m = re.search(rf"### `{name}`'s? own columns\n(.*?)\n### ", README, re.S)
    assert m, f"no README section for {name}"
    section = m.group(1)
    space = get_space(name)
    options = [{}] + [{key: c} for key, opt in space.options.items() for c in opt.choices]
    for option in options:
        decl = space.declaration(space.budget("smoke"), option)
        for c in decl.columns():
            assert f"`{c.name}`" in section, (name, c.name)
