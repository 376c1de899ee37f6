import atexit
import os
import shutil
import tempfile

import pytest

# The suite's runs are mostly XLA compilation of tiny programs: unoptimised CPU code compiles
# faster (the suite takes ~15% less time on 2 cores; BUILD_NOTES, session 6) and computes the
# same functions. Set before any JAX backend starts; subprocesses inherit it. Tests that compare
# two runs give both the same flags.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

# Many tests compile the same programs again: every CLI run, every resumed subprocess, every
# cell of the runner tests. JAX's persistent compilation cache, in a folder of this suite run
# only (it starts empty, as on CI, and is removed at exit), lets the later ones load the
# executable instead (the SIGKILL/SIGTERM tests take 25% less time; BUILD_NOTES, session 7). Its
# key holds the XLA flags and the JAX version, so a cached program is the one that would compile.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="til-jax-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

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


@pytest.fixture(autouse=True)
def _no_cell_records_in_the_checkout(tmp_path_factory, monkeypatch):
  """No test writes the checkout's results/cells/ (experiments.ledger): the folder whose cells
  are recorded is one no test uses, unless a test configures its own."""
  from experiments import ledger
  spare = tmp_path_factory.mktemp("ledger")
  monkeypatch.setattr(ledger, "RUNS", str(spare / "runs"))
  monkeypatch.setattr(ledger, "LEDGER", str(spare / "results" / "cells"))
