import os

import pytest

# The suite's runs are mostly XLA compilation of tiny programs: unoptimised CPU code compiles
# faster (the suite takes ~15% less time on 2 cores; BUILD_NOTES, session 6) and computes the
# same functions. Set before any JAX backend starts; subprocesses inherit it. Tests that compare
# two runs give both the same flags.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

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
