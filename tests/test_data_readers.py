"""Readers: every supported format on small fixtures, bad input -> InputError("<file>:<line>: ...")."""

import gzip
import logging
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from til_jax.data.readers import detect_format, read_interactions, read_split_dir, read_user_lines
from til_jax.errors import ConfigError, InputError

DATA_DIR = os.environ.get("TIL_DATA_DIR",
                          os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def data_path(*parts):
  """A path under the staged data folder (the same rule as tests/conftest.py)."""
  return os.path.join(DATA_DIR, *parts)


def write(tmp_path, name, content, gz=False):
  p = tmp_path / name
  data = content.encode() if isinstance(content, str) else content
  p.write_bytes(gzip.compress(data) if gz else data)
  return str(p)


# ----------------------------------------------------------------------------- good input


@pytest.mark.parametrize("gz", [False, True])
def test_lightgcn(tmp_path, gz):
  p = write(tmp_path, "train.txt" + (".gz" if gz else ""), "0 5 3 9\n\n1 2\n2\n3 0 1\r\n", gz)
  u, i = read_user_lines(p)
  assert u.tolist() == [0, 0, 0, 1, 3, 3]
  assert i.tolist() == [5, 3, 9, 2, 0, 1]
  r = read_interactions(p)
  assert r.ratings is None and r.users.dtype == np.int64


def test_split_dir(tmp_path):
  for part, txt in (("train", "0 1 2\n1 0\n"), ("valid", "0 0\n"), ("test", "1 2\n")):
    write(tmp_path, f"{part}.txt.gz", txt, gz=True)
  parts = read_split_dir(str(tmp_path))
  assert parts["train"][1].tolist() == [1, 2, 0]
  with pytest.raises(InputError, match="no such split folder"):
    read_split_dir(str(tmp_path / "nope"))
  (tmp_path / "train.txt.gz").unlink()
  with pytest.raises(InputError, match="no train.txt or train.txt.gz"):
    read_split_dir(str(tmp_path))


def test_movielens(tmp_path):
  p = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
  r = read_interactions(p)
  assert r.users.tolist() == [196, 186, 22] and r.items.tolist() == [242, 302, 377]
  assert r.ratings.tolist() == [3, 3, 1] and r.timestamps[0] == 881250949
  p2 = write(tmp_path, "two.data", "1\t2\n3\t4\n")
  r2 = read_interactions(p2, "movielens")
  assert r2.ratings is None and r2.items.tolist() == [2, 4]
  p3 = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
  assert read_interactions(p3).ratings.tolist() == [5, 3]


def test_csv_tsv_string_ids(tmp_path):
  p = write(tmp_path, "x.csv", 'userId,movieId,rating,timestamp\nA,"m1",4.5,10\nB,m2,2,11\nA,m2,5,12\n')
  r = read_interactions(p)
  assert r.user_values().tolist() == ["A", "B", "A"] and r.item_values().tolist() == ["m1", "m2", "m2"]
  assert r.users.tolist() == [0, 1, 0] and r.user_vocab.tolist() == ["A", "B"]
  assert r.ratings.tolist() == [4.5, 2, 5] and r.timestamps.tolist() == [10, 11, 12]
  p = write(tmp_path, "x.tsv", "user_id\titem_id\textra\n10\t7\tfoo\n2\t7\tbar\n")
  r = read_interactions(p)
  assert r.users.dtype == np.int64 and r.users.tolist() == [10, 2] and r.ratings is None


def test_recbole(tmp_path):
  p = write(tmp_path, "ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "196\t242\t3\t881250949\nu7\t302\t4\t891717742\n")
  r = read_interactions(p)
  assert r.user_values().tolist() == ["196", "u7"] and r.items.tolist() == [242, 302]
  assert r.ratings.tolist() == [3, 4]


def test_lastfm_2k(tmp_path):
  p = write(tmp_path, "user_artists.dat", "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t1\n")
  r = read_interactions(p)
  assert r.users.tolist() == [2, 2, 3] and r.items.tolist() == [51, 52, 51]
  assert r.plays.tolist() == [13883, 11690, 1] and r.ratings is None


def test_lastfm_360k(tmp_path, caplog):
  sha = "00000c289a1829a808ac09c00daf10bc3c4e223b"
  p = write(tmp_path, "usersha1-artmbid-artname-plays.tsv",
            f"{sha}\t3bd73256-3905-4f3a-97e2-8b341527f805\tbetty blowtorch\t2137\n"
            f"{sha}\t\tdie Ärzte\t1099\n"
            f"ffff\t3bd73256-3905-4f3a-97e2-8b341527f805\tbetty blowtorch\t5\n")
  r = read_interactions(p)
  assert r.user_values().tolist() == [sha, sha, "ffff"]
  assert r.item_values().tolist() == ["3bd73256-3905-4f3a-97e2-8b341527f805", "name:die Ärzte",
                                      "3bd73256-3905-4f3a-97e2-8b341527f805"]
  assert r.plays.tolist() == [2137, 1099, 5]
  p = write(tmp_path, "b.tsv", f"{sha}\t\t\t7\n{sha}\tm\tn\t1\n")
  with caplog.at_level(logging.WARNING):
    r = read_interactions(p, "lastfm-360k")
  assert r.item_values().tolist() == ["m"] and "skipped 1 rows" in caplog.text and "line 1" in caplog.text


def test_detect_format():
  assert detect_format("/a/u.data.gz") == "movielens"
  assert detect_format("x/train.txt") == "lightgcn"
  assert detect_format("ml-1m.inter") == "recbole"
  assert detect_format("user_artists.dat") == "lastfm-2k"
  assert detect_format("usersha1-artmbid-artname-plays.tsv.gz") == "lastfm-360k"
  with pytest.raises(ConfigError, match="config.data.format"):
    detect_format("foo.bin")
  with pytest.raises(ConfigError, match="unknown format"):
    read_interactions("x.txt", "parquet")


# ----------------------------------------------------------------------------- bad input

GOOD = {
    "lightgcn": ("train.txt", "0 1\n1 2\n"),
    "movielens": ("u.data", "1\t2\t3\t100\n2\t3\t4\t101\n"),
    "csv": ("r.csv", "user,item,rating\n1,2,3\n2,3,4\n"),
    "recbole": ("r.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n2\t3\t4\n"),
    "lastfm-2k": ("user_artists.dat", "userID\tartistID\tweight\n1\t2\t3\n2\t3\t4\n"),
    "lastfm-360k": ("usersha1-artmbid-artname-plays.tsv", "a\tm1\tn1\t3\nb\tm2\tn2\t4\n"),
}

BAD = [
    # (format, file name, content, expected line, message regex)
    ("lightgcn", "train.txt", "0 1 2\n1 x 3\n", 2, "item id 'x' is not an integer"),
    ("lightgcn", "train.txt", "0 1 2\n-1 2\n", 2, "user id -1 is negative"),
    ("lightgcn", "train.txt", "0 1 -2\n", 1, "item id -2 is negative"),
    ("lightgcn", "train.txt", "0 1 2\n1 2147483648\n", 2, "exceeds int32"),
    ("lightgcn", "train.txt", "0 1\x0b2\n", 1, "malformed line"),
    ("lightgcn", "train.txt", "0 " + "7" * 5000 + "x\n", 1, r"not an integer$"),
    ("lightgcn", "train.txt", "0 1 99999999999999999999999\n", 1, "exceeds int32"),
    ("lightgcn", "train.txt", "0 1.5\n", 1, "not an integer"),
    ("lightgcn", "train.txt", "0 1_000\n", 1, "not an integer"),
    ("lightgcn", "train.txt", "user items\n0 1\n", 1, "header line"),
    ("lightgcn", "train.txt", "0,1,2\n", 1, "not an integer"),
    ("movielens", "u.data", "user_id\titem_id\trating\ttimestamp\n1\t2\t3\t4\n", 1, "header line"),
    ("movielens", "u.data", "1,2,3,4\n", 1, "wrong delimiter"),
    ("movielens", "u.data", "1\t2\t3\t4\n1\t2\t3\n", 2, "expected 4 fields"),
    ("movielens", "u.data", "1\t2\tfive\t4\n", 1, "rating 'five' is not a number"),
    ("movielens", "u.data", "1\t2\tnan\t4\n", 1, "not finite"),
    ("movielens", "u.data", "1\t-2\t3\t4\n", 1, "item id -2 is negative"),
    ("movielens", "u.data", "1\t2\t3\t4\n3000000000\t2\t3\t4\n", 2, "exceeds int32"),
    ("csv", "r.csv", "user\titem\n1\t2\n", 1, "wrong delimiter"),
    ("csv", "r.csv", "1,2,3\n4,5,6\n", 1, "no user column"),
    ("csv", "r.csv", "user,item,rating\n1,2,x\n", 2, "rating 'x' is not a number"),
    ("csv", "r.csv", "user,item\n1,2\n3\n", 3, "expected 2 fields"),
    ("csv", "r.csv", "user,item\n,2\n", 2, "user id is empty"),
    ("csv", "r.csv", "user,item\n", None, "no interactions after the header"),
    ("recbole", "r.inter", "user_id\titem_id\n1\t2\n", 1, "not a RecBole atomic header"),
    ("recbole", "r.inter", "user_id:token\titem_id:blob\n1\t2\n", 1, "unknown type"),
    ("lastfm-2k", "user_artists.dat", "1\t2\t3\n", 1, "expected the header"),
    ("lastfm-2k", "user_artists.dat", "userID,artistID,weight\n1,2,3\n", 1, "wrong delimiter"),
    ("lastfm-2k", "user_artists.dat", "userID\tartistID\tweight\n1\t2\t-3\n", 2, "negative"),
    ("lastfm-2k", "user_artists.dat", "userID\tartistID\tweight\n1\tb\t3\n", 2, "item id 'b'"),
    ("lastfm-360k", "usersha1-artmbid-artname-plays.tsv",
     "user-sha1\tartist-mbid\tartist-name\tplays\na\tm\tn\t1\n", 1, "header line"),
    ("lastfm-360k", "usersha1-artmbid-artname-plays.tsv", "a,m,n,1\n", 1, "expected 4 fields"),
    ("lastfm-360k", "usersha1-artmbid-artname-plays.tsv", "a\t\t\t1\n", None, "no interactions"),
    ("lastfm-360k", "usersha1-artmbid-artname-plays.tsv", "a\tm\tn\t1\na\tm\tn\t-1\n", 2, "play count -1"),
]


@pytest.mark.parametrize("fmt,name,content,line,msg", BAD)
def test_bad_input(tmp_path, fmt, name, content, line, msg):
  p = write(tmp_path, name, content)
  with pytest.raises(InputError) as e:
    read_interactions(p, fmt)
  text = str(e.value)
  prefix = f"{p}:{line}: " if line is not None else f"{p}: "
  assert text.startswith(prefix), text
  assert re.search(msg, text), text
  assert "\n" not in text


@pytest.mark.parametrize("fmt", sorted(GOOD))
def test_bad_files_any_format(tmp_path, fmt):
  name, good = GOOD[fmt]
  assert len(read_interactions(write(tmp_path, name, good), fmt)) == 2
  rng = np.random.default_rng(0)
  cases = {
      "empty": b"",
      "blank": b"\n \n",
      "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
      "truncated_gz": gzip.compress(good.encode() * 200)[:-30],
      "corrupt_gz": gzip.compress(good.encode())[:12] + b"\x00garbage" * 8,
      "latin1": good.encode() + "Ärzte\t\xe9".encode("latin-1"),
  }
  for what, data in cases.items():
    p = tmp_path / what / name
    p.parent.mkdir()
    p.write_bytes(data)
    with pytest.raises(InputError) as e:
      read_interactions(str(p), fmt)
    assert str(e.value).startswith(f"{p}:"), (what, str(e.value))
  with pytest.raises(InputError, match="no such file"):
    read_interactions(str(tmp_path / "missing" / name), fmt)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(GOOD)), st.binary(max_size=200) | st.text(
    alphabet=st.sampled_from(list("0123456789 \t\n,:-x.eAé\r_")), max_size=200))
def test_fuzz_never_other_exceptions(tmp_path, fmt, content):
  p = tmp_path / f"fuzz-{fmt}" / GOOD[fmt][0]
  p.parent.mkdir(exist_ok=True)
  p.write_bytes(content if isinstance(content, bytes) else content.encode())
  try:
    r = read_interactions(str(p), fmt)
  except InputError as e:
    assert str(e).startswith(f"{p}"), str(e)
  else:
    assert r.users.shape == r.items.shape
    assert len(r) > 0 or fmt == "lightgcn"  # LightGCN: a user line with no items is allowed


# ----------------------------------------------------------------------------- real files


def test_real_ml100k():
  p = data_path("ml-100k", "u.data.gz")
  if not os.path.exists(p):
    pytest.skip("ml-100k not available (set TIL_DATA_DIR)")
  r = read_interactions(p)
  assert len(r) == 100_000
  assert len(np.unique(r.users)) == 943 and len(np.unique(r.items)) == 1682
  assert np.bincount(r.ratings.astype(int))[1:].tolist() == [6110, 11370, 27145, 34174, 21201]


def test_real_gowalla_raw():
  p = data_path("gowalla", "test.txt.gz")
  if not os.path.exists(p):
    pytest.skip("gowalla not available (set TIL_DATA_DIR)")
  u, i = read_user_lines(p)
  assert u.size == 217_242 and int(u.max()) == 29_857 and int(i.max()) == 40_980


def test_chunked_reading_and_concat(tmp_path, monkeypatch):
  from til_jax.data import readers
  from til_jax.data.readers import Interactions
  rows = [(f"u{k % 7}", f"i{k % 11}", 1 + k % 5) for k in range(50)]
  p = write(tmp_path, "a.csv", "user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
  whole = read_interactions(p)
  monkeypatch.setattr(readers, "_CHUNK", 4)
  chunked = read_interactions(p)
  assert chunked.user_values().tolist() == whole.user_values().tolist() == [u for u, _, _ in rows]
  assert chunked.item_values().tolist() == [i for _, i, _ in rows]
  assert np.array_equal(chunked.ratings, whole.ratings)
  assert list(chunked.user_vocab) == sorted(set(chunked.user_vocab))  # sorted vocabulary
  q = write(tmp_path, "b.csv", "user,item\nzz,i0\nu1,new\n")
  both = Interactions.concat([whole, read_interactions(q)])
  assert both.user_values().tolist() == [u for u, _, _ in rows] + ["zz", "u1"]
  assert both.item_values().tolist()[-2:] == ["i0", "new"] and both.ratings is None
  monkeypatch.setattr(readers, "_CHUNK", 3)
  with pytest.raises(InputError, match=r"a2.csv:9: rating 'x'"):
    read_interactions(write(tmp_path, "a2.csv", "user,item,rating\n" + "u,i,1\n" * 7 + "u,i,x\n"))
