"""Synthetic data: determinism and the ground truth it records."""

import numpy as np
import pytest

from til_jax.data.synthetic import make_synthetic
from til_jax.errors import ConfigError


def interest_items(ds):
  """users x items bool: item in one of the user's interest clusters."""
  item_cluster = ds.extras["item_cluster"].indices
  ui = ds.extras["user_interests"]
  m = np.zeros((ds.n_users, ui.n_cols), bool)
  m[ui.to_pairs()] = True
  return m[:, item_cluster]


def test_deterministic_per_seed():
  a, b, c = make_synthetic(seed=5), make_synthetic(seed=5), make_synthetic(seed=6)
  for part in ("train", "valid", "test"):
    assert np.array_equal(getattr(a, part).indices, getattr(b, part).indices)
  assert np.array_equal(a.extras["clean"], b.extras["clean"])
  assert not np.array_equal(a.train.indptr, c.train.indptr)


def test_ground_truth():
  ds = make_synthetic(n_users=300, n_items=200, n_clusters=10, noise_rate=0.2, false_negative_rate=0.1)
  ds.check()
  assert (ds.n_users, ds.n_items) == (300, 200)
  inside = interest_items(ds)
  u, i = ds.train.to_pairs()
  clean = ds.extras["clean"]
  assert inside[u[clean], i[clean]].all()  # clean positives come from the user's interests
  assert not inside[u[~clean], i[~clean]].any()  # noisy positives from outside
  assert abs((~clean).mean() - 0.2) < 0.03
  for part in (ds.valid, ds.test):  # valid / test hold clean interactions only
    pu, pi = part.to_pairs()
    assert inside[pu, pi].all() and part.nnz > 0
  fn = ds.extras["false_negatives"]
  fu, fi = fn.to_pairs()
  assert inside[fu, fi].all()
  observed = ds.train.union(ds.valid).union(ds.test)
  assert not observed.contains(fu, fi).any()  # held out of every split
  n_true = fn.nnz + clean.sum() + ds.valid.nnz + ds.test.nnz
  assert abs(fn.nnz / n_true - 0.1) < 0.03
  sizes = np.bincount(ds.extras["item_cluster"].indices, minlength=10)
  assert sizes.min() == sizes.max() == 20
  k = ds.extras["user_interests"].lengths
  assert k.min() >= 1 and k.max() <= 3


def test_no_noise():
  ds = make_synthetic(n_users=50, noise_rate=0.0, false_negative_rate=0.0)
  assert ds.extras["clean"].all() and ds.extras["false_negatives"].nnz == 0


def test_bad_args():
  with pytest.raises(ConfigError):
    make_synthetic(n_clusters=1)
  with pytest.raises(ConfigError):
    make_synthetic(noise_rate=1.0)
  with pytest.raises(ConfigError):
    make_synthetic(min_interests=4, max_interests=3)
