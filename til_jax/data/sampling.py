"""Negative sampling: uniform over the items a user has not interacted with in training.

Vectorized rejection sampling on the host: draw all negatives at once, test membership with a
binary search over the sorted (user * n_items + item) keys of the training set, redraw only the
rejected ones. An epoch of Gowalla (822k triplets) samples in about 0.1 s on a 2-core CPU.
"""

from __future__ import annotations

import numpy as np

from til_jax.data.dataset import CSR


class UniformNegativeSampler:
  """Draws j ~ Uniform(items \\ train positives of u) for each user in a batch of users."""

  def __init__(self, train: CSR, max_rounds: int = 100):
    self.train = train
    self.keys = train.keys()
    self.max_rounds = max_rounds
    full = train.lengths >= train.n_cols
    if full.any():
      raise ValueError(f"{int(full.sum())} users interacted with every item: no negatives exist")

  def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """users [n] -> negatives [n] int32, each not a training positive of its user."""
    n_items = self.train.n_cols
    neg = rng.integers(0, n_items, size=users.shape, dtype=np.int64)
    bad = self.train.contains(users, neg, self.keys)
    for _ in range(self.max_rounds):
      if not bad.any():
        break
      idx = np.flatnonzero(bad)
      neg[idx] = rng.integers(0, n_items, size=idx.size, dtype=np.int64)
      bad[idx] = self.train.contains(users[idx], neg[idx], self.keys)
    else:  # pathological density: fall back to an exact per-user draw for the stragglers.
      for k in np.flatnonzero(bad):
        allowed = np.setdiff1d(np.arange(n_items), self.train.row(users[k]))
        neg[k] = rng.choice(allowed)
    return neg.astype(np.int32)


def epoch_triplets(train: CSR, sampler, rng: np.random.Generator, batch_size: int,
                   drop_remainder: bool = False, negatives: int = 1, with_pair: bool = False):
  """One epoch of shuffled (u, i, j) triplets, shaped [steps, batch_size] each.

  Every training positive appears once; one fresh negative per positive. The last partial batch
  is padded with repeats of random earlier triplets and a `mask` marks the real rows, so that
  every step has the same static shape (one compilation) and every positive is used once.
  Returns dict(users, pos, neg, mask) of arrays [steps, batch_size]; `with_pair` adds "pair",
  each triplet's positive as its index in `train.to_pairs()` (per-pair state: TIL's frozen
  weights). The draws are the same with or without it.

  negatives = N > 1: N independent negatives per positive, as N consecutive triplets that share
  (u, i) (a group); the arrays are [steps, batch_size * N] (batch_size positives per step) and a
  group is masked as a whole.
  """
  users, items = train.to_pairs()
  n = users.size
  # negatives are drawn in (sorted) user order, then shuffled with the positives: the same
  # distribution, and the binary searches of the rejection test run ~4x faster on sorted queries
  if negatives > 1:
    neg = np.stack([sampler.sample(users, rng) for _ in range(negatives)], axis=1)
  else:
    neg = sampler.sample(users, rng)
  perm = rng.permutation(n)
  users, items, neg, pair = users[perm], items[perm], neg[perm], perm
  steps = n // batch_size if drop_remainder else -(-n // batch_size)
  total = steps * batch_size
  mask = np.ones(total, dtype=bool)
  if total > n:
    fill = rng.integers(0, n, size=total - n)
    users = np.concatenate([users, users[fill]])
    items = np.concatenate([items, items[fill]])
    neg = np.concatenate([neg, neg[fill]])
    pair = np.concatenate([pair, pair[fill]])
    mask[n:] = False
  else:
    users, items, neg, mask, pair = (a[:total] for a in (users, items, neg, mask, pair))
  if negatives > 1:  # groups of N: (u, i) repeated, the N negatives side by side
    users, items, mask, pair = (np.repeat(a, negatives) for a in (users, items, mask, pair))
  shape = (steps, batch_size * negatives)
  out = dict(users=users.reshape(shape).astype(np.int32), pos=items.reshape(shape).astype(np.int32),
             neg=neg.reshape(shape), mask=mask.reshape(shape))
  if with_pair:
    out["pair"] = pair.reshape(shape).astype(np.int32)
  return out
