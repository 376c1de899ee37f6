"""Negative samplers of the sampling baselines, vectorized with NumPy on the host.

  * `PopularityNegativeSampler` (WBPR, Gantner et al. 2012): p(j | u) ~ pop_j^e over the items u
    has not interacted with (pop_j = number of training interactions of j; e = 1 in the paper).
  * `AdaptiveOversampler` (AOBPR, Rendle & Freudenthaler 2014, "adaptive oversampling"): draw a
    rank r ~ exp(-r / lambda), a factor f ~ |p_uf| * sd_f, take the item at rank r of the
    ranking of factor f (from the top if p_uf > 0, else from the bottom); positives rejected.
  * `ClusterImportanceSampler` (PRIS, Lian et al. 2020, sampler "cluster-uniform" of the
    official code DefuLian/PRIS): P(c | u) ~ exp(p_u . mu_c) * (n_c - n_cu), item uniform among
    the n_c - n_cu items of c that u has not interacted with, so
    Q(j | u) = P(c_j | u) / (n_c - n_cu); returns L negatives and log Q for each positive.

Every sampler is a pure function of its inputs and the NumPy generator it is given (one per
(seed, epoch) in the training loop), and never returns a training positive of its user: draws
are tested with a binary search over the sorted (user * n_items + item) keys of the training set
and only the rejected ones are redrawn, which leaves exactly the target distribution restricted
to the user's non-positives.
"""

from __future__ import annotations

import numpy as np

from til_jax.data.dataset import CSR


class RowCategorical:
  """Categorical draws from one distribution per row: probs [R, K] (non-negative, each row with
  positive mass; normalised here). `sample(rows [n], rng) -> [n]` int64 in [0, K).

  One `np.searchsorted` over the row CDFs laid end to end with offsets 2r (row r lives in
  [2r, 2r + 1]), so that float64 rounding of 2r + x can never leave row r; a category of zero
  mass is never returned. (Faster than a per-row bisection or a per-row loop, measured.)
  """

  def __init__(self, probs: np.ndarray):
    probs = np.asarray(probs, np.float64)
    self.n_rows, self.k = probs.shape
    total = probs.sum(axis=1, keepdims=True)
    if np.any(~(total > 0)) or np.any(probs < 0):
      raise ValueError("RowCategorical: every row needs non-negative probabilities with positive mass")
    cdf = np.cumsum(probs / total, axis=1)
    cdf[:, -1] = 1.0
    self.flat = (cdf + 2.0 * np.arange(self.n_rows)[:, None]).ravel()
    # the last category of positive mass of each row: the answer when 2r + x rounds up to 2r + 1
    self.last = (self.k - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)).astype(np.int64)

  def sample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    q = 2.0 * rows + rng.random(rows.shape)
    idx = np.searchsorted(self.flat, q, side="right") - rows * self.k
    return np.where(idx >= self.k, self.last[rows], idx)


def _reject(train: CSR, keys: np.ndarray, users: np.ndarray, items: np.ndarray, draw,
            max_rounds: int) -> tuple[np.ndarray, np.ndarray]:
  """Redraws items[k] = draw(idx) where (users[k], items[k]) is a training pair, up to
  `max_rounds` times. Returns (items, still_bad [n] bool)."""
  bad = train.contains(users, items, keys)
  for _ in range(max_rounds):
    if not bad.any():
      break
    idx = np.flatnonzero(bad)
    items[idx] = draw(idx)
    bad[idx] = train.contains(users[idx], items[idx], keys)
  return items, bad


class PopularityNegativeSampler:
  """WBPR's sampler: j ~ pop_j^exponent / Z_u over the items u has not interacted with.

  pop_j = number of training interactions of item j. Items with pop 0 are never drawn (unless
  exponent = 0: uniform); a user whose every non-positive has pop 0 gets a uniform non-positive.
  """

  def __init__(self, train: CSR, exponent: float = 1.0, max_rounds: int = 100):
    self.train, self.keys, self.max_rounds = train, train.keys(), max_rounds
    pop = np.bincount(train.indices, minlength=train.n_cols).astype(np.float64)
    weight = pop ** float(exponent)
    if not weight.sum() > 0:
      raise ValueError("PopularityNegativeSampler: no item has a training interaction")
    self.probs = weight / weight.sum()
    self.cat = RowCategorical(self.probs[None, :])

  def target(self, user: int) -> np.ndarray:
    """The exact distribution [n_items] this sampler draws from for `user` (for tests)."""
    p = self.probs.copy()
    p[self.train.row(user)] = 0.0
    if p.sum() == 0:
      p = np.ones_like(p)
      p[self.train.row(user)] = 0.0
    return p / p.sum()

  def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """users [n] -> negatives [n] int32."""
    users = np.asarray(users, np.int64)
    zeros = lambda m: np.zeros(m, np.int64)
    neg = self.cat.sample(zeros(users.size), rng)
    neg, bad = _reject(self.train, self.keys, users, neg,
                       lambda idx: self.cat.sample(zeros(idx.size), rng), self.max_rounds)
    for k in np.flatnonzero(bad):  # users whose positives hold nearly all the popularity mass
      p = self.target(int(users[k]))
      neg[k] = rng.choice(p.size, p=p)
    return neg.astype(np.int32)


def truncated_geometric(n: int, lam: float, size, rng: np.random.Generator) -> np.ndarray:
  """Ranks r in {0, ..., n-1} with p(r) ~ exp(-r / lam), exactly: the floor of an exponential
  variable of mean lam truncated to [0, n) (inverse CDF). [size] int64."""
  x = rng.random(size)
  mass = -np.expm1(-n / lam)  # 1 - exp(-n / lam)
  r = np.floor(-lam * np.log1p(-x * mass)).astype(np.int64)
  return np.minimum(r, n - 1)


class AdaptiveOversampler:
  """AOBPR's sampler (Rendle & Freudenthaler 2014, Sec. 4 "adaptive oversampling").

  `refresh(U, V)` (U [n_users, d], V [n_items, d] the current factors) sorts the items by each
  factor and computes sd_f, the standard deviation of factor f over the items; the original
  re-sorts every |I| log |I| draws, the training loop calls it at the start of every epoch.
  A draw: r ~ p(r) ~ exp(-r / lambda) (lambda = lambda_fraction * |I|), f ~ p(f | u) ~ |p_uf| sd_f,
  j = the item of rank r in factor f, counted from the top if p_uf > 0 else from the bottom;
  training positives are rejected and redrawn (r and f anew).
  """

  def __init__(self, train: CSR, lambda_fraction: float = 0.05, max_rounds: int = 100):
    self.train, self.keys, self.max_rounds = train, train.keys(), max_rounds
    self.n_items = train.n_cols
    self.lam = max(float(lambda_fraction) * self.n_items, 1e-9)
    self.order = None

  def refresh(self, user_repr: np.ndarray, item_repr: np.ndarray) -> None:
    u = np.asarray(user_repr, np.float64)
    v = np.asarray(item_repr, np.float64)
    self.order = np.argsort(-np.ascontiguousarray(v.T), axis=1, kind="stable")  # [d, n_items]
    self.sd = v.std(axis=0)
    w = np.abs(u) * self.sd[None, :]
    empty = ~(w.sum(axis=1) > 0)
    w[empty] = 1.0  # a user with all-zero factors (or constant items): a uniform factor
    self.factor_probs = w / w.sum(axis=1, keepdims=True)
    self.factor = RowCategorical(self.factor_probs)
    self.top = u > 0

  def draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One unrejected draw per user: [n] int64."""
    r = truncated_geometric(self.n_items, self.lam, users.shape, rng)
    f = self.factor.sample(users, rng)
    return self.order[f, np.where(self.top[users, f], r, self.n_items - 1 - r)]

  def target(self, user: int) -> np.ndarray:
    """The exact distribution [n_items] of `sample` for `user` (for tests)."""
    ranks = np.exp(-np.arange(self.n_items) / self.lam)
    ranks /= ranks.sum()
    p = np.zeros(self.n_items)
    for f in range(self.order.shape[0]):
      seq = self.order[f] if self.top[user, f] else self.order[f, ::-1]
      p[seq] += self.factor_probs[user, f] * ranks
    p[self.train.row(user)] = 0.0
    return p / p.sum()

  def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """users [n] -> negatives [n] int32. Needs `refresh` first."""
    if self.order is None:
      raise RuntimeError("AdaptiveOversampler.sample before refresh(user_repr, item_repr)")
    users = np.asarray(users, np.int64)
    neg = self.draw(users, rng)
    neg, bad = _reject(self.train, self.keys, users, neg, lambda idx: self.draw(users[idx], rng),
                       self.max_rounds)
    for k in np.flatnonzero(bad):  # exact draw for the (rare) stragglers
      p = self.target(int(users[k]))
      neg[k] = rng.choice(p.size, p=p)
    return neg.astype(np.int32)


class ClusterImportanceSampler:
  """PRIS's cluster-based proposal Q(j | u) (Lian et al. 2020; official `ClusterSamplerModel`).

  `refresh(U, centres, membership)`: P(c | u) ~ exp(p_u . mu_c) * (n_c - n_cu) with n_c the size
  of cluster c and n_cu the number of u's training items in c (computed in log space: no
  overflow); empty clusters and clusters u has exhausted get probability 0. A draw picks c from
  P(c | u), then an item uniformly among the n_c members of c, rejecting (and redrawing within c)
  u's positives, so that Q(j | u) = P(c_j | u) / (n_c - n_cu).
  Before the first `refresh` (PRIS's first epoch, as in the official code) Q is uniform over
  u's non-positives.
  """

  def __init__(self, train: CSR, n_negatives: int = 5, max_rounds: int = 100):
    self.train, self.keys, self.max_rounds = train, train.keys(), max_rounds
    self.n_negatives = int(n_negatives)
    self.n_items = train.n_cols
    self.cat = None

  def refresh(self, user_repr: np.ndarray, centres: np.ndarray, membership: np.ndarray) -> None:
    u = np.asarray(user_repr, np.float64)
    centres = np.asarray(centres, np.float64)
    membership = np.asarray(membership, np.int64)
    k = centres.shape[0]
    self.membership = membership
    self.sizes = np.bincount(membership, minlength=k)
    self.members = np.argsort(membership, kind="stable")
    self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
    users, items = self.train.to_pairs()
    n_cu = np.bincount(users.astype(np.int64) * k + membership[items],
                       minlength=self.train.n_rows * k).reshape(self.train.n_rows, k)
    avail = self.sizes[None, :] - n_cu
    with np.errstate(divide="ignore"):
      self.log_avail = np.log(avail.astype(np.float64))
    logits = u @ centres.T + self.log_avail
    m = logits.max(axis=1, keepdims=True)
    self.log_pc = logits - (m + np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)))
    self.cat = RowCategorical(np.exp(self.log_pc))

  def log_q(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """log Q(j | u) for non-positive pairs, [n] float64."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    if self.cat is None:
      return -np.log(self.n_items - self.train.lengths[users]).astype(np.float64)
    c = self.membership[items]
    return self.log_pc[users, c] - self.log_avail[users, c]

  def target(self, user: int) -> np.ndarray:
    """The exact distribution Q(. | user) [n_items] (for tests)."""
    p = np.exp(self.log_q(np.full(self.n_items, user), np.arange(self.n_items)))
    p[self.train.row(user)] = 0.0
    return p / p.sum()

  def _uniform(self, users, rng):
    neg = rng.integers(0, self.n_items, users.size)
    neg, bad = _reject(self.train, self.keys, users, neg,
                       lambda idx: rng.integers(0, self.n_items, idx.size), self.max_rounds)
    for k in np.flatnonzero(bad):
      neg[k] = rng.choice(np.setdiff1d(np.arange(self.n_items), self.train.row(users[k])))
    return neg

  def sample(self, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """users [n] -> (negatives [n, L] int32, log Q [n, L] float32)."""
    users = np.asarray(users, np.int64)
    rows = np.repeat(users, self.n_negatives)
    if self.cat is None:
      neg = self._uniform(rows, rng)
    else:
      c = self.cat.sample(rows, rng)
      within = lambda idx: self.members[self.starts[c[idx]]
                                        + (rng.random(idx.size) * self.sizes[c[idx]]).astype(np.int64)]
      neg = within(np.arange(rows.size))
      neg, bad = _reject(self.train, self.keys, rows, neg, within, self.max_rounds)
      for k in np.flatnonzero(bad):
        pool = self.members[self.starts[c[k]]:self.starts[c[k]] + self.sizes[c[k]]]
        neg[k] = rng.choice(np.setdiff1d(pool, self.train.row(rows[k])))
    shape = (users.size, self.n_negatives)
    return (neg.reshape(shape).astype(np.int32),
            self.log_q(rows, neg).reshape(shape).astype(np.float32))
