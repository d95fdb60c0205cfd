import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    path = Path(os.environ.get("REASONING_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        raise RuntimeError(f"REASONING_DATA_DIR={path} is not a folder; point it at the shared data folder")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return data_dir()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
