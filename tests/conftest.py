import os

import pytest

DATA_DIR = os.environ.get("TIL_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..",
                                                       "shared", "data"))


def data_path(*parts: str) -> str:
  return os.path.join(DATA_DIR, *parts)


@pytest.fixture
def gowalla_split():
  p = data_path("gowalla", "split-811-seed0")
  if not os.path.isdir(p):
    pytest.skip("Gowalla split not available (set TIL_DATA_DIR)")
  return p
