"""Registry: names, resolution order, downloads (file:// only, never the network), real datasets."""

import gzip
import hashlib
import os
import zipfile

import ml_collections
import numpy as np
import pytest

from til_jax.data import download as dl
from til_jax.data import registry
from til_jax.data.download import Remote
from til_jax.data.registry import load_dataset, parse_split, resolve
from til_jax.errors import ConfigError, InputError

DATA_DIR = os.environ.get("TIL_DATA_DIR",
                          os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def data_path(*parts):
  """A path under the staged data folder (the same rule as tests/conftest.py)."""
  return os.path.join(DATA_DIR, *parts)


def cfg(**kw):
  base = dict(name="gowalla", path="", root="", cache_dir="", split="split-811-seed0", format="auto",
              rating_threshold=4.0, keep_all_ratings=False, kcore=0, download=False)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No real data root and an empty cache: only what a test writes is found."""
  monkeypatch.delenv("TIL_DATA_DIR", raising=False)
  cache = tmp_path / "cache"
  cache.mkdir()
  return cache


def lightgcn(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(gzip.compress("".join(f"{u} {' '.join(map(str, its))}\n" for u, its in rows).encode()))


def make_raw(folder, n_users=40, n_items=50, seed=0):
  rng = np.random.default_rng(seed)
  rows = [(u, sorted(rng.choice(n_items, 12, replace=False).tolist())) for u in range(n_users)]
  lightgcn(folder / "train.txt.gz", [(u, its[:9]) for u, its in rows])
  lightgcn(folder / "test.txt.gz", [(u, its[9:]) for u, its in rows])
  return rows


def test_parse_split():
  assert parse_split("split-811-seed0") == ((0.8, 0.1, 0.1), 0)
  assert parse_split("split-70-15-15-seed12") == ((0.7, 0.15, 0.15), 12)
  assert parse_split("my-split") is None
  with pytest.raises(ConfigError):
    parse_split("split-812-seed0")


def test_unknown_name(isolated):
  with pytest.raises(ConfigError, match="config.data.name: unknown dataset 'nope'"):
    load_dataset(cfg(name="nope", cache_dir=str(isolated)))


def test_resolution_order(tmp_path, isolated, monkeypatch):
  a, b = tmp_path / "a", tmp_path / "b"
  make_raw(a / "gowalla")
  lightgcn(b / "gowalla" / "split-811-seed0" / "train.txt.gz", [(0, [1, 2]), (1, [0, 2])])
  lightgcn(b / "gowalla" / "split-811-seed0" / "valid.txt.gz", [(0, [0])])
  lightgcn(b / "gowalla" / "split-811-seed0" / "test.txt.gz", [(1, [1])])
  monkeypatch.setenv("TIL_DATA_DIR", str(b))
  # a staged split folder (in any root) wins over raw files (in an earlier root)
  res = resolve("gowalla", str(a), "split-811-seed0", str(isolated))
  assert res.kind == "split" and res.paths[0].startswith(str(b))
  ds = load_dataset(cfg(root=str(a), cache_dir=str(isolated)))
  assert ds.train.nnz == 4 and ds.name == "gowalla"
  # a split with no staged folder: raw files, re-split with the split name's ratios and seed
  res = resolve("gowalla", str(a), "split-811-seed1", str(isolated))
  assert res.kind == "raw" and res.paths[0].startswith(str(a))
  ds1 = load_dataset(cfg(root=str(a), split="split-811-seed1", cache_dir=str(isolated)))
  ds2 = load_dataset(cfg(root=str(a), split="split-811-seed2", cache_dir=str(isolated)))
  assert ds1.train.nnz == ds2.train.nnz == 40 * 10 and ds1.valid.nnz == 40
  assert not np.array_equal(ds1.test.indices, ds2.test.indices)
  assert len(os.listdir(isolated / "processed")) == 2
  # the cache dir is the last root
  monkeypatch.delenv("TIL_DATA_DIR")
  make_raw(isolated / "amazon-cd")
  assert resolve("amazon-cd", None, "split-811-seed0", str(isolated)).kind == "raw"


def test_not_found_message(tmp_path, isolated):
  with pytest.raises(InputError) as e:
    load_dataset(cfg(name="ml-100k", root=str(tmp_path / "r"), cache_dir=str(isolated)))
  msg = str(e.value)
  assert "\n" not in msg and "u.data" in msg and str(tmp_path / "r" / "ml-100k") in msg
  assert str(isolated / "ml-100k") in msg and "download" in msg
  with pytest.raises(InputError, match="no split folder mine/"):
    load_dataset(cfg(split="mine", root=str(tmp_path), cache_dir=str(isolated)))


def test_path_folder_and_file(tmp_path, isolated):
  folder = tmp_path / "sp"
  lightgcn(folder / "train.txt.gz", [(0, [1, 2]), (1, [0, 2])])
  lightgcn(folder / "valid.txt.gz", [(0, [0])])
  lightgcn(folder / "test.txt.gz", [(1, [1])])
  ds = load_dataset(cfg(name="", path=str(folder)))
  assert ds.name == "sp" and (ds.n_users, ds.n_items) == (2, 3)
  f = tmp_path / "mine.csv"
  f.write_text("user,item,rating\n" + "".join(f"u{u},i{i},{1 + (u + i) % 5}\n"
                                              for u in range(20) for i in range(15)))
  ds = load_dataset(cfg(name="mine", path=str(f), cache_dir=str(isolated)))
  ds.check()
  assert ds.user_ids.dtype.kind == "U" and ds.extras["rating"].min() >= 4
  with pytest.raises(InputError, match="no such file or folder"):
    load_dataset(cfg(path=str(tmp_path / "nothing")))


def test_synthetic_by_name():
  c = cfg(name="synthetic")
  c.synthetic = ml_collections.ConfigDict(dict(n_users=50, n_items=60, n_clusters=5, seed=3))
  ds = load_dataset(c)
  assert ds.n_users == 50 and ds.n_items == 60 and "clean" in ds.extras


# ----------------------------------------------------------------------------- downloads


def sha(data):
  return hashlib.sha256(data).hexdigest()


def test_download_file_url(tmp_path):
  payload = b"0 1 2\n1 2 3\n"
  src = tmp_path / "remote" / "train.txt"
  src.parent.mkdir()
  src.write_bytes(payload)
  url = src.as_uri()
  dest = tmp_path / "dl" / "train.txt"
  with pytest.raises(InputError, match="SHA256 mismatch"):
    dl.download(url, str(dest), sha256="0" * 64)
  assert not dest.parent.exists() or os.listdir(dest.parent) == []  # nothing half-written left
  assert dl.download(url, str(dest), sha256=sha(payload)) == str(dest)
  assert dest.read_bytes() == payload
  src.unlink()  # a present, correct file is not fetched again
  assert dl.download(url, str(dest), sha256=sha(payload)) == str(dest)
  with pytest.raises(InputError, match="download failed"):
    dl.download(url, str(tmp_path / "dl" / "other.txt"), sha256=sha(payload))
  with pytest.raises(InputError, match="download failed"):
    dl.download("notascheme://x", str(tmp_path / "dl" / "x"), sha256=sha(payload))
  with pytest.raises(ValueError):
    Remote(url, "x")  # a Remote without any digest is refused


def test_fetch_archive_member(tmp_path):
  member = b"1\t2\t5\t100\n2\t3\t4\t101\n"
  arc = tmp_path / "remote" / "ml.zip"
  arc.parent.mkdir()
  with zipfile.ZipFile(arc, "w") as z:
    z.writestr("ml-100k/u.data", member)
  good = Remote(arc.as_uri(), "u.data", member="ml-100k/u.data", member_sha256=sha(member))
  out = dl.fetch(good, str(tmp_path / "cache"))
  assert open(out, "rb").read() == member
  bad = Remote(arc.as_uri(), "u2.data", member="ml-100k/u.data", member_sha256="1" * 64)
  with pytest.raises(InputError, match="SHA256 mismatch"):
    dl.fetch(bad, str(tmp_path / "cache2"))
  assert sorted(os.listdir(tmp_path / "cache2")) == []  # archive removed, nothing extracted
  missing = Remote(arc.as_uri(), "u3.data", member="nope", member_sha256="1" * 64)
  with pytest.raises(InputError, match="cannot extract nope"):
    dl.fetch(missing, str(tmp_path / "cache3"))


def test_load_dataset_downloads(tmp_path, isolated, monkeypatch):
  """A missing named dataset is downloaded (here from a file:// URL) into cache_dir/<folder>."""
  member = "".join(f"{u}\t{i}\t{4 + (u * i) % 2}\t{u * 100 + i}\n"
                   for u in range(1, 30) for i in range(1, 25)).encode()
  arc = tmp_path / "remote" / "ml-100k.zip"
  arc.parent.mkdir()
  with zipfile.ZipFile(arc, "w") as z:
    z.writestr("ml-100k/u.data", member)
  spec = registry.SPECS["ml-100k"]
  fake = registry.Spec(spec.folder, spec.files, spec.fmt, (
      Remote(arc.as_uri(), "u.data", member="ml-100k/u.data", member_sha256=sha(member)),))
  monkeypatch.setitem(registry.SPECS, "ml-100k", fake)
  with pytest.raises(InputError, match="not found"):
    load_dataset(cfg(name="ml-100k", cache_dir=str(isolated), download=False))
  ds = load_dataset(cfg(name="ml-100k", cache_dir=str(isolated), download=True))
  assert ds.n_users == 29 and (isolated / "ml-100k" / "u.data").is_file()
  bad = registry.Spec(spec.folder, spec.files, spec.fmt, (
      Remote(arc.as_uri(), "u.data", member="ml-100k/u.data", member_sha256="2" * 64),))
  monkeypatch.setitem(registry.SPECS, "ml-100k", bad)
  other = tmp_path / "cache-other"
  with pytest.raises(InputError) as e:
    load_dataset(cfg(name="ml-100k", cache_dir=str(other), download=True))
  assert "download failed" in str(e.value) or "mismatch" in str(e.value)
  assert "\n" not in str(e.value)


def test_specs_have_digests():
  for name, spec in registry.SPECS.items():
    assert spec.remotes and len(spec.remotes) == len(spec.files), name
    for r in spec.remotes:
      assert r.url.startswith(("https://", "http://")), name


# ----------------------------------------------------------------------------- real data


def real(*parts):
  p = data_path(*parts)
  if not os.path.exists(p):
    pytest.skip(f"{p} not available (set TIL_DATA_DIR)")
  return p


@pytest.mark.parametrize("name,counts", [("gowalla", (29858, 40981, 822478, 102446, 102446)),
                                         ("amazon-cd", (43169, 35648, 609970, 83728, 83728))])
def test_real_staged_splits(name, counts, tmp_path):
  real(name, "split-811-seed0")
  ds = load_dataset(cfg(name=name, root=os.path.dirname(data_path(name)), cache_dir=str(tmp_path)))
  assert (ds.n_users, ds.n_items, ds.train.nnz, ds.valid.nnz, ds.test.nnz) == counts
  ds.check()


def test_real_ml100k_ratings(tmp_path):
  p = real("ml-100k", "u.data.gz")
  a = np.loadtxt(gzip.open(p), dtype=np.int64)
  rating = {(u, i): r for u, i, r, _ in a.tolist()}
  c = cfg(name="ml-100k", root=os.path.dirname(data_path("ml-100k")), cache_dir=str(tmp_path))
  ds = load_dataset(c)
  ds.check()
  tu, ti = ds.train.to_pairs()
  uid = ds.user_ids if ds.user_ids is not None else np.arange(ds.n_users)
  want = [rating[(u, i)] for u, i in zip(uid[tu].tolist(), ds.item_ids[ti].tolist(), strict=True)]
  assert np.array_equal(ds.extras["rating"], want) and min(want) >= 4
  n_pos = ds.train.nnz + ds.valid.nnz + ds.test.nnz
  assert n_pos == 55_375  # every rating >= 4 of u.data, held-out cold items included
  assert ds.extras["low_rated"].nnz + n_pos <= 100_000
  c.keep_all_ratings = True
  full = load_dataset(c)
  assert set(np.unique(full.extras["rating"]).tolist()) == {1, 2, 3, 4, 5}
  assert full.train.nnz + full.valid.nnz + full.test.nnz == 100_000
  assert len(os.listdir(tmp_path / "processed")) == 2


def test_cold_held_out_items_are_targets_unless_dropped(tmp_path):
  """A valid/test item with no training interaction stays in the split (a miss unless ranked);
  eval.drop_cold_items=True drops it, and the run names the data it read."""
  from configs import default
  from til_jax.data.dataset import drop_cold_items
  from til_jax.evaluation import Evaluator
  folder = tmp_path / "mine" / "split-811-seed0"
  folder.mkdir(parents=True)
  (folder / "train.txt").write_text("0 0 1\n1 1 2\n2 0 2\n")
  (folder / "valid.txt").write_text("0 3\n1 0\n")      # item 3 is never trained on
  (folder / "test.txt").write_text("2 1\n")
  c = default.get_config()
  c.data.path = str(folder)
  ds = load_dataset(c.data)
  assert (ds.name, ds.source) == ("mine/split-811-seed0", str(folder))
  assert ds.n_items == 4 and ds.valid.nnz == 2
  dropped, counts = drop_cold_items(ds)
  assert dropped.valid.nnz == 1 and counts == {"valid": 1, "test": 0}
  # user 0's only target (item 3) scored last: a miss that counts
  scores = np.array([[0, 0, 0, -9.0], [0, 5.0, 0, 0], [0, 0, 0, 0]], np.float32)
  ev = Evaluator(ds, "valid", ks=(1,))
  assert ev(lambda p, users: p[users], np.asarray(scores))["recall@1"] == pytest.approx(0.5)


def test_lastfm_is_lightgcn_pytorchs_split_and_its_raw_files_parse(tmp_path):
  """`lastfm` = shared/data/lastfm (SOURCE.md counts); the raw TSV files (1-based ids, float
  weights in scientific notation) read through the `lightgcn-pytorch` format."""
  from configs import lastfm_mf
  from til_jax.data.readers import read_interactions
  real("lastfm", "split-811-seed0")
  c = lastfm_mf.get_config()
  c.data.root = os.path.dirname(data_path("lastfm"))
  ds = load_dataset(c.data)
  assert (ds.name, ds.n_users, ds.n_items) == ("lastfm", 1880, 4489)
  assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (42_076, 5_293, 5_299)
  raw = read_interactions(real("lastfm", "data1.txt.gz"), "lightgcn-pytorch")
  assert len(raw) > 40_000 and int(np.min(raw.items)) == 1
