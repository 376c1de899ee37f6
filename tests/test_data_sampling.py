"""Uniform negative sampler and epoch triplets."""

import time

import numpy as np
import pytest

from til_jax.data.dataset import CSR
from til_jax.data.registry import load_split_folder
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets


def dense_train(seed=0, n_users=50, n_items=40):
  rng = np.random.default_rng(seed)
  rows, cols = [], []
  for u in range(n_users):
    n = int(rng.integers(1, n_items))  # up to all but one item: forces many rejections
    rows += [u] * n
    cols += rng.choice(n_items, n, replace=False).tolist()
  return CSR.from_pairs(np.array(rows), np.array(cols), n_users, n_items)


def test_never_a_positive():
  train = dense_train()
  s = UniformNegativeSampler(train)
  users = np.repeat(np.arange(train.n_rows), 200)
  neg = s.sample(users, np.random.default_rng(0))
  assert neg.dtype == np.int32 and neg.shape == users.shape
  assert not train.contains(users, neg).any()
  assert neg.min() >= 0 and neg.max() < train.n_cols


def test_fallback_for_almost_full_rows():
  train = CSR.from_pairs(np.zeros(99, int), np.arange(1, 100), 1, 100)  # only item 0 is allowed
  s = UniformNegativeSampler(train, max_rounds=2)
  neg = s.sample(np.zeros(500, np.int64), np.random.default_rng(0))
  assert (neg == 0).all()
  with pytest.raises(ValueError, match="every item"):
    UniformNegativeSampler(CSR.from_pairs(np.zeros(3, int), np.arange(3), 1, 3))


def test_uniform_over_allowed_items():
  n_items = 50
  pos = np.arange(0, n_items, 3)  # user 0 owns every third item
  train = CSR.from_pairs(np.zeros(pos.size, int), pos, 2, n_items)
  s = UniformNegativeSampler(train)
  n = 200_000
  neg = s.sample(np.zeros(n, np.int64), np.random.default_rng(1))
  allowed = np.setdiff1d(np.arange(n_items), pos)
  counts = np.bincount(neg, minlength=n_items)
  assert counts[pos].sum() == 0
  expected = n / allowed.size
  chi2 = float((((counts[allowed] - expected) ** 2) / expected).sum())
  df = allowed.size - 1
  assert chi2 < df + 6 * np.sqrt(2 * df), chi2  # about p < 1e-6 for a uniform sampler
  tv = 0.5 * np.abs(counts[allowed] / n - 1 / allowed.size).sum()
  assert tv < 0.01
  # user 1 owns nothing: uniform over all items
  c1 = np.bincount(s.sample(np.ones(n, np.int64), np.random.default_rng(2)), minlength=n_items)
  assert 0.5 * np.abs(c1 / n - 1 / n_items).sum() < 0.01


def test_reproducible_per_seed():
  train = dense_train(1)
  s = UniformNegativeSampler(train)
  users = np.repeat(np.arange(train.n_rows), 20)
  a = s.sample(users, np.random.default_rng(7))
  b = s.sample(users, np.random.default_rng(7))
  c = s.sample(users, np.random.default_rng(8))
  assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_epoch_triplets():
  train = dense_train(2)
  s = UniformNegativeSampler(train)
  e = epoch_triplets(train, s, np.random.default_rng(0), batch_size=64)
  steps = -(-train.nnz // 64)
  for k in ("users", "pos", "neg", "mask"):
    assert e[k].shape == (steps, 64)
  m = e["mask"].ravel()
  assert m.sum() == train.nnz
  got = sorted(zip(e["users"].ravel()[m].tolist(), e["pos"].ravel()[m].tolist(), strict=True))
  assert got == sorted(zip(*[x.tolist() for x in train.to_pairs()], strict=True))  # each positive once
  assert not train.contains(e["users"].ravel(), e["neg"].ravel()).any()
  d = epoch_triplets(train, s, np.random.default_rng(0), batch_size=64, drop_remainder=True)
  assert d["users"].shape == (train.nnz // 64, 64) and d["mask"].all()


def test_gowalla_epoch(gowalla_split):
  """One Gowalla epoch: correctness on the real data; the time is printed (-s), not asserted."""
  ds = load_split_folder(gowalla_split)
  s = UniformNegativeSampler(ds.train)
  users, _ = ds.train.to_pairs()
  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  neg = s.sample(users, rng)
  t1 = time.perf_counter()
  e = epoch_triplets(ds.train, s, rng, batch_size=4096)
  t2 = time.perf_counter()
  print(f"\ngowalla: sample {users.size} negatives {t1 - t0:.3f} s; epoch_triplets (shuffle + sample + "
        f"batch) {t2 - t1:.3f} s")
  assert users.size == 822_478
  assert not ds.train.contains(users, neg).any()
  assert e["mask"].sum() == 822_478


def test_several_negatives_come_in_groups_and_one_negative_is_unchanged():
  from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
  from til_jax.data.synthetic import make_synthetic
  ds = make_synthetic(n_users=20, n_items=30, seed=1)
  sampler = UniformNegativeSampler(ds.train)
  one = epoch_triplets(ds.train, sampler, np.random.default_rng(5), 16)
  again = epoch_triplets(ds.train, sampler, np.random.default_rng(5), 16, negatives=1)
  for k in one:
    np.testing.assert_array_equal(one[k], again[k])
  b = epoch_triplets(ds.train, sampler, np.random.default_rng(5), 16, negatives=4)
  assert b["users"].shape == (one["users"].shape[0], 64)
  g = {k: v.reshape(-1, 4) for k, v in b.items()}
  for k in ("users", "pos", "mask"):       # a group shares (u, i) and its mask
    assert (g[k] == g[k][:, :1]).all()
  real = g["mask"][:, 0]
  pairs = sorted(zip(g["users"][real, 0], g["pos"][real, 0]))
  assert pairs == sorted(zip(*ds.train.to_pairs()))   # every positive once
  assert not ds.train.contains(b["users"].ravel(), b["neg"].ravel()).any()
  assert (g["neg"][real].std(axis=1) > 0).mean() > 0.5   # independent draws within a group
