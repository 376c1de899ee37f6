"""Noise injection (Noisy-Pos / Noisy-Neg / both): counts, eligibility, flags, determinism."""

import numpy as np
import pytest

from til_jax.data.dataset import CSR, Dataset
from til_jax.data.noise import inject_noise, noise_counts, sample_unobserved
from til_jax.errors import ConfigError


def small(seed=0, n_users=60, n_items=80, with_rating=True):
  rng = np.random.default_rng(seed)
  rows, cols, parts = [], [], []
  for u in range(n_users):
    n = int(rng.integers(1, 25))
    its = rng.choice(n_items, n, replace=False)
    p = np.zeros(n, int)
    if n >= 3:
      p[0], p[1] = 1, 2
    rows += [u] * n
    cols += its.tolist()
    parts += p.tolist()
  rows, cols, parts = map(np.array, (rows, cols, parts))
  mk = lambda m: CSR.from_pairs(rows[m], cols[m], n_users, n_items)
  train = mk(parts == 0)
  extras = {"rating": rng.integers(1, 6, train.nnz).astype(np.float32)} if with_rating else {}
  return Dataset("small", n_users, n_items, train, mk(parts == 1), mk(parts == 2), extras)


def pairs(c):
  u, i = c.to_pairs()
  return set(zip(u.tolist(), i.tolist(), strict=True))


def test_noise_counts():
  assert noise_counts(np.array([0, 1, 2, 3, 4, 5, 10]), 0.5).tolist() == [0, 1, 1, 2, 2, 3, 5]
  assert noise_counts(np.array([0, 3, 10]), 0.0).tolist() == [0, 0, 0]
  assert noise_counts(np.array([1, 10]), 0.2).tolist() == [1, 2]


@pytest.mark.parametrize("rate", [0.5, 0.2, 1.0])
def test_pos(rate):
  ds = small()
  out = inject_noise(ds, "pos", rate, seed=1)
  out.check()
  old = pairs(ds.train)
  new = pairs(out.train)
  assert old <= new
  added = new - old
  seen = pairs(ds.train) | pairs(ds.valid) | pairs(ds.test)
  assert not (added & seen)  # never an item the user interacted with in any split
  want = np.minimum(noise_counts(ds.train.lengths, rate), ds.n_items - ds.train.union(ds.valid).union(
      ds.test).lengths)
  assert np.array_equal(out.train.lengths - ds.train.lengths, want)
  u, i = out.train.to_pairs()
  flags = out.extras["clean"]
  assert {(a, b) for a, b, f in zip(u.tolist(), i.tolist(), flags.tolist(), strict=True) if not f} == added
  # the other aligned extras are carried: kept values where kept, NaN for the injected ones
  rating_old = dict(zip(zip(*[x.tolist() for x in ds.train.to_pairs()], strict=True),
                        ds.extras["rating"].tolist(), strict=True))
  r = out.extras["rating"]
  assert np.isnan(r[~flags]).all()
  assert [rating_old[(a, b)] for a, b in zip(u[flags].tolist(), i[flags].tolist(), strict=True)] == \
      r[flags].tolist()
  assert pairs(out.valid) == pairs(ds.valid) and pairs(out.test) == pairs(ds.test)


def test_neg():
  ds = small()
  out = inject_noise(ds, "neg", 0.5, seed=1)
  out.check()
  old, new = pairs(ds.train), pairs(out.train)
  assert new <= old
  want = np.minimum(noise_counts(ds.train.lengths, 0.5), np.maximum(ds.train.lengths - 1, 0))
  assert np.array_equal(ds.train.lengths - out.train.lengths, want)
  assert out.train.lengths[ds.train.lengths > 0].min() >= 1  # every user keeps a positive
  assert pairs(out.extras["noise_removed"]) == old - new
  assert out.extras["clean"].all()
  assert pairs(out.valid) == pairs(ds.valid)


def test_both_and_determinism():
  ds = small(with_rating=False)
  a = inject_noise(ds, "both", 0.5, seed=3)
  b = inject_noise(ds, "both", 0.5, seed=3)
  c = inject_noise(ds, "both", 0.5, seed=4)
  a.check()
  assert np.array_equal(a.train.indices, b.train.indices)
  assert np.array_equal(a.extras["clean"], b.extras["clean"])
  assert not np.array_equal(a.train.indices, c.train.indices) or a.train.nnz != c.train.nnz
  removed = pairs(a.extras["noise_removed"])
  assert not (removed & pairs(a.train))  # removed positives are not re-added as noise
  c_u = noise_counts(ds.train.lengths, 0.5)
  n_rem = np.minimum(c_u, np.maximum(ds.train.lengths - 1, 0))
  assert np.array_equal(a.train.lengths, ds.train.lengths - n_rem + c_u)  # n_items >> lengths here
  assert (~a.extras["clean"]).sum() == c_u.sum()


def test_synthetic_clean_flags_are_kept():
  from til_jax.data.synthetic import make_synthetic
  ds = make_synthetic(n_users=80, n_items=100, n_clusters=5)
  out = inject_noise(ds, "pos", 0.5, seed=0)
  out.check()
  u, i = out.train.to_pairs()
  orig = dict(zip(zip(*[x.tolist() for x in ds.train.to_pairs()], strict=True),
                  ds.extras["clean"].tolist(), strict=True))
  for a, b, f in zip(u.tolist(), i.tolist(), out.extras["clean"].tolist(), strict=True):
    assert f == orig.get((a, b), False)


def test_sample_unobserved_dense_rows():
  obs = CSR.from_pairs(np.array([0] * 9 + [1]), np.array(list(range(9)) + [0]), 2, 10)
  rng = np.random.default_rng(0)
  r, c = sample_unobserved(obs, np.array([1, 9]), rng)
  assert r.tolist() == [0] + [1] * 9 and c.tolist() == [9] + list(range(1, 10))


def test_bad_config():
  ds = small()
  with pytest.raises(ConfigError, match="config.data.noise"):
    inject_noise(ds, "noisy", 0.5)
  with pytest.raises(ConfigError, match="noise_rate"):
    inject_noise(ds, "pos", -0.1)
  assert inject_noise(ds, "none", 0.5) is ds
