"""Noise injection for the robustness study (paper sec. 5.6.2). Valid and test are unchanged.

For each user u with n_u training positives, c_u = max(1, floor(rate * n_u + 0.5)) (rate 0.5 by
default; round half up; at least 1 when rate > 0 and n_u > 0):
  pos   (Noisy-Pos): add min(c_u, available) items chosen uniformly among the items u has not
        interacted with in any split (train, valid or test), to u's training positives;
  neg   (Noisy-Neg): remove min(c_u, n_u - 1) of u's training positives chosen uniformly (every
        user keeps at least one); they become eligible negatives for the samplers, and are
        recorded in extras["noise_removed"] (CSR);
  both  (Noisy-Pos+Neg): both, with c_u from the original n_u; removed items are never re-added.
extras["clean"] (bool, aligned with the new train.to_pairs()) is False for injected interactions
(an existing "clean" array, e.g. of synthetic data, is carried over for the kept ones). Every
other train-aligned extra is carried over, with NaN (floats), False (bools) or -1 (ints) for the
injected interactions. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from til_jax.data.dataset import CSR, Dataset, isin_sorted
from til_jax.errors import ConfigError

MODES = ("none", "pos", "neg", "both")


def noise_counts(lengths: np.ndarray, rate: float) -> np.ndarray:
  """c_u [n_users] int64 from the training lengths [n_users]."""
  lengths = np.asarray(lengths, np.int64)
  c = np.floor(rate * lengths + 0.5).astype(np.int64)
  if rate > 0:
    c = np.maximum(c, (lengths > 0).astype(np.int64))
  return c


def _fill_value(a: np.ndarray):
  if a.dtype == bool:
    return False
  if a.dtype.kind == "f":
    return np.nan
  if a.dtype.kind in "iu":
    return -1
  return a.dtype.type()


def sample_unobserved(observed: CSR, counts: np.ndarray, rng: np.random.Generator,
                      max_rounds: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """For each row u, counts[u] distinct columns not in `observed` row u, uniformly at random.

  counts must not exceed the number of unobserved columns. Returns (rows, cols) [sum] int64.
  Vectorized rejection rounds; rows still short after `max_rounds` are finished exactly.
  """
  n_cols = observed.n_cols
  okeys = observed.keys()
  need = np.asarray(counts, np.int64).copy()
  chosen = np.zeros(0, np.int64)
  for _ in range(max_rounds):
    if not need.any():
      break
    rows = np.repeat(np.arange(observed.n_rows, dtype=np.int64), need)
    keys = rows * n_cols + rng.integers(0, n_cols, size=rows.size)
    ok = ~observed.contains(rows, keys % n_cols, okeys) & ~isin_sorted(keys, chosen)
    keys = keys[ok]
    keys = keys[np.sort(np.unique(keys, return_index=True)[1])]  # first draw of each duplicate
    # never more than needed per row (duplicates removed above, so only trim)
    r = keys // n_cols
    order = np.argsort(r, kind="stable")
    keys, r = keys[order], r[order]
    rank = np.arange(r.size) - np.searchsorted(r, r)
    keys = keys[rank < need[r]]
    chosen = np.sort(np.concatenate([chosen, keys]))
    need -= np.bincount(keys // n_cols, minlength=observed.n_rows)
  for u in np.flatnonzero(need):
    taken = chosen[(chosen // n_cols) == u] % n_cols
    pool = np.setdiff1d(np.arange(n_cols), np.concatenate([observed.row(u), taken]))
    extra = rng.choice(pool, size=int(need[u]), replace=False)
    chosen = np.sort(np.concatenate([chosen, u * n_cols + extra]))
  return chosen // n_cols, chosen % n_cols


def inject_noise(ds: Dataset, mode: str, rate: float = 0.5, seed: int = 0) -> Dataset:
  """The dataset with noisy training positives (see the module docstring)."""
  if mode not in MODES:
    raise ConfigError(f"config.data.noise: {mode!r} is not one of {', '.join(MODES)}")
  if not np.isfinite(rate) or rate < 0:
    raise ConfigError(f"config.data.noise_rate: {rate} must be a finite number >= 0")
  if mode == "none":
    return ds
  rng = np.random.default_rng([int(seed), 0x6e6f6973])
  train = ds.train
  users, items = train.to_pairs()
  lengths = train.lengths
  c = noise_counts(lengths, rate)
  keep = np.ones(train.nnz, bool)
  removed = None
  if mode in ("neg", "both"):
    c_neg = np.minimum(c, np.maximum(lengths - 1, 0))
    r = rng.random(train.nnz)
    order = np.lexsort((r, users))  # by user, random within the user
    rank = np.arange(train.nnz) - train.indptr[:-1][users[order]]
    drop = np.zeros(train.nnz, bool)
    drop[order] = rank < c_neg[users[order]]
    keep = ~drop
    removed = CSR.from_pairs(users[drop], items[drop], ds.n_users, ds.n_items)
  add_u = add_i = np.zeros(0, np.int64)
  if mode in ("pos", "both"):
    observed = train.union(ds.valid).union(ds.test)
    c_pos = np.minimum(c, ds.n_items - observed.lengths)
    add_u, add_i = sample_unobserved(observed, c_pos, rng)
  n_keep, n_add = int(keep.sum()), add_u.size
  new_u = np.concatenate([users[keep].astype(np.int64), add_u])
  new_i = np.concatenate([items[keep].astype(np.int64), add_i])
  order = np.argsort(new_u * ds.n_items + new_i, kind="stable")
  new_train = CSR.from_pairs(new_u, new_i, ds.n_users, ds.n_items)
  assert new_train.nnz == n_keep + n_add
  extras = {k: v for k, v in ds.extras.items() if k not in ds.train_extras()}
  aligned = dict(ds.train_extras())
  if "clean" not in aligned:
    aligned["clean"] = np.ones(train.nnz, bool)
  for k, v in aligned.items():
    fill = np.full(n_add, _fill_value(v), dtype=v.dtype)
    extras[k] = np.concatenate([v[keep], fill])[order]
  if removed is not None:
    prev = ds.extras.get("noise_removed")
    extras["noise_removed"] = removed.union(prev) if isinstance(prev, CSR) else removed
  extras["noise_mode"], extras["noise_rate"] = mode, float(rate)
  return ds.replace(train=new_train, extras=extras)
