import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# test-only spaces (tests/fault_spaces.py) are registered in this process and in Ray workers
os.environ.setdefault("EXITSEARCH_SPACES", "tests.fault_spaces")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _node_data_cache(tmp_path_factory):
    """Datasets the tests decode are cached for this session only, not in the user's node cache."""
    if "EXITSEARCH_NODE_CACHE" in os.environ:  # the caller chose (e.g. off): keep it
        yield
        return
    os.environ["EXITSEARCH_NODE_CACHE"] = str(tmp_path_factory.mktemp("node-cache"))
    yield
    os.environ.pop("EXITSEARCH_NODE_CACHE", None)
