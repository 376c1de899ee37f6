"""Preprocessing: dedupe, threshold, k-core, remap, per-user split, Dataset building, npz cache."""

import logging
import os

import numpy as np
import pytest

from til_jax.data import preprocess as pp
from til_jax.data.readers import Interactions, read_interactions
from til_jax.data.registry import load_raw, load_split_folder
from til_jax.errors import ConfigError, InputError

DATA_DIR = os.environ.get("TIL_DATA_DIR",
                          os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def data_path(*parts):
  """A path under the staged data folder (the same rule as tests/conftest.py)."""
  return os.path.join(DATA_DIR, *parts)


def inter(users, items, ratings=None, ts=None, src="mem"):
  f = lambda a: None if a is None else np.asarray(a, np.float64)
  return Interactions(np.asarray(users), np.asarray(items), f(ratings), None, f(ts), src)


def test_dedupe_latest():
  x = inter([1, 1, 2, 1], [5, 5, 5, 6], ratings=[2, 5, 3, 4], ts=[10, 5, 1, 1])
  keep = pp.dedupe_latest(x)
  assert keep.tolist() == [0, 2, 3]  # (1, 5): the row with the larger timestamp (rating 2) wins
  y = inter([1, 1, 2], [5, 5, 5], ratings=[2, 5, 3])
  assert pp.dedupe_latest(y).tolist() == [1, 2]  # no timestamps: the last in file order
  z = inter(np.array(["a", "a", "b"]), np.array(["x", "x", "x"]))
  assert pp.dedupe_latest(z).tolist() == [1, 2]


def _naive_kcore(pairs, k):
  pairs = set(pairs)
  while True:
    cu, ci = {}, {}
    for u, i in pairs:
      cu[u] = cu.get(u, 0) + 1
      ci[i] = ci.get(i, 0) + 1
    new = {(u, i) for u, i in pairs if cu[u] >= k and ci[i] >= k}
    if new == pairs:
      return pairs
    pairs = new


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcore_matches_naive(seed):
  rng = np.random.default_rng(seed)
  key = np.unique(rng.integers(0, 40 * 30, 500))
  u, i = key // 30, key % 30
  for k in (2, 3, 5):
    m = pp.kcore_mask(u, i, k)
    assert set(zip(u[m].tolist(), i[m].tolist(), strict=True)) == _naive_kcore(
        zip(u.tolist(), i.tolist(), strict=True), k)
  assert pp.kcore_mask(u, i, 0).all()


def test_remap():
  codes, orig = pp.remap(np.array([30, 10, 30, 20]))
  assert codes.tolist() == [2, 0, 2, 1] and orig.tolist() == [10, 20, 30]
  codes, orig = pp.remap(np.array(["b", "a", "b"]))
  assert codes.tolist() == [1, 0, 1] and orig.tolist() == ["a", "b"]


def test_split_counts():
  r = (0.8, 0.1, 0.1)
  table = {1: (0, 0), 2: (0, 0), 3: (1, 1), 9: (1, 1), 14: (1, 1), 15: (2, 2), 25: (2, 2),
           26: (3, 3), 105: (10, 10), 115: (12, 12), 125: (12, 12)}
  for n, want in table.items():
    assert pp.split_counts(n, r) == want, n
  assert pp.split_counts(3, (0.2, 0.4, 0.4)) == (1, 1)  # train keeps >= 1
  assert pp.split_counts(10, (0.9, 0.0, 0.1)) == (0, 1)


def _reference_split(users, items, n_users, seed):
  """The staged split-811-seed0 procedure, written out plainly."""
  rng = np.random.default_rng(seed)
  out = {}
  for u in range(n_users):
    its = np.sort(items[users == u])
    if its.size == 0:
      continue
    s = rng.permutation(its)
    nv, nt = pp.split_counts(its.size, (0.8, 0.1, 0.1))
    for j, it in enumerate(s):
      out[(u, int(it))] = 2 if j < nt else (1 if j < nt + nv else 0)
  return out


def test_split_per_user():
  rng = np.random.default_rng(3)
  key = np.unique(rng.integers(0, 50 * 80, 1500))
  u, i = key // 80, key % 80
  perm = rng.permutation(u.size)  # input order must not matter
  u, i = u[perm], i[perm]
  part = pp.split_per_user(u, i, 50, (0.8, 0.1, 0.1), seed=7)
  ref = _reference_split(u, i, 50, 7)
  assert [ref[(a, b)] for a, b in zip(u.tolist(), i.tolist(), strict=True)] == part.tolist()
  assert not np.array_equal(part, pp.split_per_user(u, i, 50, (0.8, 0.1, 0.1), seed=8))
  n = np.bincount(u, minlength=50)
  for p in (1, 2):
    got = np.bincount(u[part == p], minlength=50)
    assert np.all(got[n >= 3] >= 1)


def test_settings_validation():
  with pytest.raises(ConfigError):
    pp.Settings(ratios=(0.5, 0.5, 0.5))
  with pytest.raises(ConfigError):
    pp.Settings(kcore=-1)


def test_preprocess_ratings(tmp_path):
  rng = np.random.default_rng(0)
  n = 3000
  u = rng.integers(1, 60, n)
  i = rng.integers(1, 90, n)
  r = rng.integers(1, 6, n).astype(float)
  t = rng.permutation(n).astype(float)
  x = inter(u, i, r, t, "fixture")
  ds = pp.preprocess(x, "fx", pp.Settings(rating_threshold=4))
  ds.check()
  # the latest rating of each pair, thresholded
  latest = {}
  for k in np.argsort(t, kind="stable"):
    latest[(int(u[k]), int(i[k]))] = float(r[k])
  pos = {k for k, v in latest.items() if v >= 4}
  uid, iid = ds.user_ids, ds.item_ids
  got = set()
  for part in (ds.train, ds.valid, ds.test):
    a, b = part.to_pairs()
    got |= set(zip(uid[a].tolist(), iid[b].tolist(), strict=True))
  assert got == pos  # every positive is in a split (held-out items without training pairs too)
  tu, ti = ds.train.to_pairs()
  assert np.array_equal(ds.extras["rating"], [latest[(a, b)] for a, b in
                                               zip(uid[tu].tolist(), iid[ti].tolist(), strict=True)])
  lu, li = ds.extras["low_rated"].to_pairs()
  assert all(latest[(a, b)] < 4 for a, b in zip(uid[lu].tolist(), iid[li].tolist(), strict=True))
  assert np.array_equal(ds.extras["low_rated_rating"],
                        [latest[(a, b)] for a, b in zip(uid[lu].tolist(), iid[li].tolist(), strict=True)])
  allr = pp.preprocess(x, "fx", pp.Settings(keep_all_ratings=True))
  assert set(np.unique(allr.extras["rating"]).tolist()) == {1, 2, 3, 4, 5}
  assert "low_rated" not in allr.extras
  core = pp.preprocess(x, "fx", pp.Settings(kcore=5))
  allpairs = core.train.union(core.valid).union(core.test)
  assert core.n_users + core.n_items < ds.n_users + ds.n_items
  assert np.sum(allpairs.lengths < 5) == 0  # a 5-core
  with pytest.raises(InputError, match="rating_threshold"):
    pp.preprocess(x, "fx", pp.Settings(rating_threshold=6))
  with pytest.raises(InputError, match="kcore"):
    pp.preprocess(x, "fx", pp.Settings(kcore=1000))


# ----------------------------------------------------------------------------- cache


def _fixture_file(tmp_path, n=2000, seed=0):
  rng = np.random.default_rng(seed)
  lines = [f"{a}\t{b}\t{c}\t{d}" for a, b, c, d in zip(rng.integers(1, 80, n), rng.integers(1, 120, n),
                                                        rng.integers(1, 6, n), range(n), strict=True)]
  p = tmp_path / "u.data"
  p.write_text("\n".join(lines) + "\n")
  return str(p)


def test_cache_roundtrip_and_keys(tmp_path):
  src = _fixture_file(tmp_path)
  cache = str(tmp_path / "cache")
  calls = []

  def build():
    calls.append(1)
    return pp.preprocess(read_interactions(src), "fx", pp.Settings())
  a = pp.load_or_build("fx", [src], {"s": 1}, build, cache)
  b = pp.load_or_build("fx", [src], {"s": 1}, build, cache)
  assert len(calls) == 1
  for part in ("train", "valid", "test"):
    assert np.array_equal(getattr(a, part).indices, getattr(b, part).indices)
  assert np.array_equal(a.extras["rating"], b.extras["rating"])
  assert np.array_equal(a.user_ids, b.user_ids) and a.name == b.name
  assert isinstance(b.extras["low_rated"], type(a.extras["low_rated"]))
  pp.load_or_build("fx", [src], {"s": 2}, build, cache)  # other settings: other key
  assert len(calls) == 2
  with open(src, "a") as f:
    f.write("1\t1\t5\t99999\n")  # other content: other key
  pp.load_or_build("fx", [src], {"s": 1}, build, cache)
  assert len(calls) == 3
  files = os.listdir(os.path.join(cache, "processed"))
  assert len(files) == 3 and not any(f.startswith(".tmp") for f in files)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "empty"])
def test_cache_corrupt_is_rebuilt(tmp_path, damage, caplog):
  src = _fixture_file(tmp_path)
  cache = str(tmp_path / "cache")
  calls = []

  def build():
    calls.append(1)
    return pp.preprocess(read_interactions(src), "fx", pp.Settings())
  ref = pp.load_or_build("fx", [src], {}, build, cache)
  folder = os.path.join(cache, "processed")
  (path,) = [os.path.join(folder, f) for f in os.listdir(folder)]
  data = open(path, "rb").read()
  if damage == "truncate":
    data = data[:len(data) // 2]
  elif damage == "garbage":
    data = os.urandom(len(data))
  elif damage == "flip":  # one byte inside an array's payload: caught by the digest or zip CRC
    pos = data.index(b"train.indices") + 200
    data = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
  else:
    data = b""
  open(path, "wb").write(data)
  with caplog.at_level(logging.WARNING):
    again = pp.load_or_build("fx", [src], {}, build, cache)
  assert len(calls) == 2 and "rebuilding" in caplog.text
  assert np.array_equal(again.train.indices, ref.train.indices)
  assert pp.load_npz(path).train.nnz == ref.train.nnz  # the rebuilt file is good


def test_cache_atomic_write(tmp_path, monkeypatch):
  src = _fixture_file(tmp_path)
  ds = pp.preprocess(read_interactions(src), "fx", pp.Settings())
  target = str(tmp_path / "c" / "x.npz")

  def killed(f, **arrays):
    f.write(b"PK\x03\x04 half an npz")
    raise KeyboardInterrupt  # a kill in the middle of the write
  monkeypatch.setattr(np, "savez", killed)
  with pytest.raises(KeyboardInterrupt):
    pp.save_npz(ds, target)
  assert os.listdir(tmp_path / "c") == []  # neither the target nor a temp file is left
  monkeypatch.undo()
  pp.save_npz(ds, target, "k")
  assert pp.load_npz(target, "k").train.nnz == ds.train.nnz
  with pytest.raises(ValueError, match="key"):
    pp.load_npz(target, "other")


def test_cache_dir_unwritable(tmp_path, caplog):
  src = _fixture_file(tmp_path)
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with caplog.at_level(logging.WARNING):
    ds = pp.load_or_build("fx", [src], {}, lambda: pp.preprocess(read_interactions(src), "fx",
                                                                  pp.Settings()), str(blocker))
  assert ds.train.nnz > 0 and "cannot write" in caplog.text


# ----------------------------------------------------------------------------- real data


def test_real_gowalla_resplit_equals_staged(tmp_path):
  folder = data_path("gowalla")
  if not os.path.isdir(os.path.join(folder, "split-811-seed0")):
    pytest.skip("gowalla not available (set TIL_DATA_DIR)")
  raw = load_raw("gowalla", (os.path.join(folder, "train.txt.gz"), os.path.join(folder, "test.txt.gz")),
                 "lightgcn", pp.Settings(), str(tmp_path))
  staged = load_split_folder(os.path.join(folder, "split-811-seed0"))
  for part in ("train", "valid", "test"):
    a, b = getattr(raw, part), getattr(staged, part)
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices), part
  assert raw.user_ids is None and raw.item_ids is None  # ids already contiguous
