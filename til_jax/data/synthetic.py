"""Synthetic implicit feedback with ground truth: clusters, interests, noisy positives, false
negatives. For tests and for checking that learned importances find the injected noise.

Generative story (`make_synthetic`, deterministic per seed):
  * items are spread evenly over `n_clusters` latent clusters at random (extras["item_cluster"],
    an items x clusters CSR with one entry per row: `.indices` is each item's cluster);
  * each user has between `min_interests` and `max_interests` interest clusters
    (extras["user_interests"], users x clusters);
  * each user draws m_u ~ U{min_items..max_items} distinct "true" items uniformly from the items
    of its interest clusters (capped at the pool size - 1);
  * false negatives: round(false_negative_rate * m_u) of those true items are held out of every
    split (extras["false_negatives"], users x items): relevant items the data calls negative;
  * the other true items are split per user into train / valid / test with `ratios`
    (the procedure of `preprocess.split_per_user`, seeded): valid and test hold clean items only;
  * noisy positives: round(t_u * noise_rate / (1 - noise_rate)) items chosen uniformly among the
    items outside u's interest clusters are added to u's t_u clean training items, so that about
    `noise_rate` of the training positives are noise; extras["clean"] flags them (False = noisy),
    aligned with train.to_pairs().
"""

from __future__ import annotations

import numpy as np

from til_jax.data.dataset import CSR, Dataset
from til_jax.data.preprocess import build_dataset, split_per_user
from til_jax.errors import ConfigError


def make_synthetic(n_users: int = 300, n_items: int = 200, n_clusters: int = 10,
                   min_interests: int = 1, max_interests: int = 3, min_items: int = 10,
                   max_items: int = 30, noise_rate: float = 0.2, false_negative_rate: float = 0.1,
                   ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                   name: str = "synthetic") -> Dataset:
  """A synthetic Dataset with ground truth in `extras` (see the module docstring)."""
  if not 1 <= min_interests <= max_interests <= n_clusters:
    raise ConfigError("config.data.synthetic: need 1 <= min_interests <= max_interests <= n_clusters")
  if n_clusters < 2 or n_items < 2 * n_clusters:
    raise ConfigError("config.data.synthetic: need n_clusters >= 2 and n_items >= 2 * n_clusters")
  if not 1 <= min_items <= max_items:
    raise ConfigError("config.data.synthetic: need 1 <= min_items <= max_items")
  if not 0 <= noise_rate < 1 or not 0 <= false_negative_rate < 1:
    raise ConfigError("config.data.synthetic: noise_rate and false_negative_rate must be in [0, 1)")
  rng = np.random.default_rng([int(seed), 0x53594e])
  item_cluster = rng.permutation(np.arange(n_items) % n_clusters)
  members = [np.flatnonzero(item_cluster == k) for k in range(n_clusters)]
  interest_u, interest_k = [], []
  true_u, true_i, fn_u, fn_i = [], [], [], []
  pools = []
  for u in range(n_users):
    k = int(rng.integers(min_interests, max_interests + 1))
    ks = np.sort(rng.choice(n_clusters, size=k, replace=False))
    interest_u += [u] * k
    interest_k += ks.tolist()
    pool = np.sort(np.concatenate([members[c] for c in ks]))
    pools.append(pool)
    m = min(int(rng.integers(min_items, max_items + 1)), pool.size - 1)
    chosen = rng.choice(pool, size=m, replace=False)
    n_fn = int(round(false_negative_rate * m))
    fn_u += [u] * n_fn
    fn_i += chosen[:n_fn].tolist()
    true_u += [u] * (m - n_fn)
    true_i += chosen[n_fn:].tolist()
  true_u = np.array(true_u, np.int64)
  true_i = np.array(true_i, np.int64)
  part = split_per_user(true_u, true_i, n_users, ratios, int(rng.integers(2**31)))
  n_train = np.bincount(true_u[part == 0], minlength=n_users)
  noise_u, noise_i = [], []
  odds = noise_rate / (1.0 - noise_rate)
  for u in range(n_users):
    c = int(round(n_train[u] * odds))
    if c == 0:
      continue
    outside = np.setdiff1d(np.arange(n_items), pools[u], assume_unique=True)
    c = min(c, outside.size)
    noise_u += [u] * c
    noise_i += rng.choice(outside, size=c, replace=False).tolist()
  users = np.concatenate([true_u, np.array(noise_u, np.int64)])
  items = np.concatenate([true_i, np.array(noise_i, np.int64)])
  part = np.concatenate([part, np.zeros(len(noise_u), np.int8)])
  clean = np.concatenate([np.ones(true_u.size, bool), np.zeros(len(noise_u), bool)])
  extras = {
      "false_negatives": CSR.from_pairs(np.array(fn_u, np.int64), np.array(fn_i, np.int64),
                                        n_users, n_items),
      "item_cluster": CSR.from_pairs(np.arange(n_items), item_cluster, n_items, n_clusters),
      "user_interests": CSR.from_pairs(np.array(interest_u), np.array(interest_k), n_users, n_clusters),
      "noise_rate": float(noise_rate), "false_negative_rate": float(false_negative_rate),
  }
  return build_dataset(name, users, items, part, n_users, n_items, {"clean": clean}, name,
                       extras=extras)
