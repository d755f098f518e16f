import os
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
