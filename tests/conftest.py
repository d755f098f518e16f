import os
import shutil
from pathlib import Path

import pytest

import smartset

FIXTURES = Path(__file__).parent / "data"
SHARED_DATA = Path(os.environ.get("SMARTSET_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist10k.npz").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SMARTSET_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def ws(tmp_path):
    workspace = smartset.init(tmp_path / "ws")
    yield workspace
    workspace.close()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def labeled(ws, tmp_path, fixtures):
    """A workspace of five images in class folders: cat (a, b, c) and dog (d, e)."""
    root = tmp_path / "src"
    for cls, names in {"cat": ["a", "b", "c"], "dog": ["d", "e"]}.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(fixtures / "good.png", root / cls / f"{name}.png")
    ws.ingest(root, engine="serial", show_progress=False)
    return ws, root
