"""The in-memory dataset: compact CSR interaction sets for train / valid / test.

Everything downstream (samplers, evaluator, TIL states, graph backbones) reads a `Dataset`.
Arrays live on the host as NumPy; they are moved to the device by the code that needs them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def isin_sorted(q: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """[n] bool: q[k] in `keys` (sorted ascending). A binary search; much faster than np.isin."""
  q = np.asarray(q)
  if not len(keys):
    return np.zeros(q.shape, bool)
  pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
  return keys[pos] == q


@dataclasses.dataclass(frozen=True)
class CSR:
  """A user x item 0/1 matrix in CSR form, rows sorted, no duplicates.

  indptr: [n_rows + 1] int64; indices: [nnz] int32 (item ids, sorted within each row).
  """

  indptr: np.ndarray
  indices: np.ndarray
  n_rows: int
  n_cols: int

  @classmethod
  def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> CSR:
    """Builds a CSR from (row, col) pairs [n] each; duplicates are removed."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows or cols.min() < 0 or cols.max() >= n_cols):
      raise ValueError(f"CSR.from_pairs: ids out of range for a {n_rows} x {n_cols} matrix")
    key = np.sort(rows * max(n_cols, 1) + cols)  # a sort is ~10x faster than np.unique's hash path
    if key.size:
      key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    r, c = np.divmod(key, max(n_cols, 1))
    counts = np.bincount(r, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return cls(indptr, c.astype(np.int32), int(n_rows), int(n_cols))

  @property
  def nnz(self) -> int:
    return int(self.indptr[-1])

  @property
  def lengths(self) -> np.ndarray:
    """[n_rows] int64: number of items per row."""
    return np.diff(self.indptr)

  def row(self, r: int) -> np.ndarray:
    return self.indices[self.indptr[r]:self.indptr[r + 1]]

  def row_ids(self) -> np.ndarray:
    """[nnz] int32: the row of each stored entry."""
    return np.repeat(np.arange(self.n_rows, dtype=np.int32), self.lengths)

  def to_pairs(self) -> tuple[np.ndarray, np.ndarray]:
    """(rows [nnz] int32, cols [nnz] int32), sorted by (row, col)."""
    return self.row_ids(), self.indices

  def keys(self) -> np.ndarray:
    """[nnz] int64 sorted keys row * n_cols + col, for vectorized membership tests."""
    return self.row_ids().astype(np.int64) * self.n_cols + self.indices

  def contains(self, rows: np.ndarray, cols: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Vectorized membership: [n] bool, True where (rows[k], cols[k]) is stored."""
    keys = self.keys() if keys is None else keys
    return isin_sorted(np.asarray(rows, np.int64) * self.n_cols + np.asarray(cols, np.int64), keys)

  def padded(self, pad_value: int, width: int | None = None) -> np.ndarray:
    """[n_rows, width] int32: each row's items, padded with `pad_value`."""
    lengths = self.lengths
    width = int(lengths.max(initial=0)) if width is None else width
    out = np.full((self.n_rows, max(width, 1)), pad_value, dtype=np.int32)
    col = np.arange(self.nnz) - np.repeat(self.indptr[:-1], lengths)
    out[self.row_ids(), col] = self.indices
    return out

  def union(self, other: CSR) -> CSR:
    r1, c1 = self.to_pairs()
    r2, c2 = other.to_pairs()
    return CSR.from_pairs(np.concatenate([r1, r2]), np.concatenate([c1, c2]),
                          self.n_rows, self.n_cols)

  def check(self) -> None:
    """Raises ValueError unless the invariants hold (sorted unique rows, ids in range)."""
    if self.indptr.shape != (self.n_rows + 1,) or self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
      raise ValueError("CSR: bad indptr")
    if self.indices.shape != (self.nnz,):
      raise ValueError("CSR: indices length differs from indptr[-1]")
    if self.nnz:
      if self.indices.min() < 0 or self.indices.max() >= self.n_cols:
        raise ValueError("CSR: column id out of range")
      k = self.keys()
      if np.any(k[1:] <= k[:-1]):
        raise ValueError("CSR: rows not sorted or duplicate entries")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A split dataset over users 0..n_users-1 and items 0..n_items-1.

  `extras` convention (so that code that rebuilds the train set, e.g. noise injection, can
  carry them along):
    * a `np.ndarray` value is per training interaction, shape [train.nnz], aligned with
      `train.to_pairs()` order: "rating" (float32, explicit rating), "plays" (float32, play
      count / weight), "timestamp" (float64), "clean" (bool; False = injected or synthetic noise);
    * a `CSR` value is a matrix of its own: "false_negatives" (users x items, synthetic),
      "item_cluster" (items x clusters, one entry per row, synthetic), "user_interests"
      (users x clusters, synthetic), "low_rated" (users x items with rating below the
      threshold, dropped from the splits) with "low_rated_rating" [low_rated.nnz] float32 as
      the one ndarray exception (aligned with `low_rated.to_pairs()`), "noise_removed" (users x
      items, the positives that Noisy-Neg removed);
    * anything else (str, int) is metadata.
  `user_ids` / `item_ids`: the original id of each internal user / item (index = internal id)
  when ids were remapped; None when the file's ids are used as they are.
  """

  name: str
  n_users: int
  n_items: int
  train: CSR
  valid: CSR
  test: CSR
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)
  user_ids: np.ndarray | None = None
  item_ids: np.ndarray | None = None
  source: str = ""  # the folder or file(s) the data was read from ("" for generated data)

  NOT_ALIGNED = ("low_rated_rating",)

  def summary(self) -> str:
    return (f"{self.name}{f' ({self.source})' if self.source else ''}: {self.n_users} users, "
            f"{self.n_items} items, train {self.train.nnz}, valid {self.valid.nnz}, "
            f"test {self.test.nnz}")

  def original_ids(self) -> tuple[np.ndarray, np.ndarray]:
    """(user ids [n_users], item ids [n_items]): the original id of every internal one
    (`arange` where the files' ids were used as they are)."""
    return (np.arange(self.n_users) if self.user_ids is None else self.user_ids,
            np.arange(self.n_items) if self.item_ids is None else self.item_ids)

  def replace(self, **kw) -> Dataset:
    return dataclasses.replace(self, **kw)

  def train_extras(self) -> dict[str, np.ndarray]:
    """The extras aligned with `train.to_pairs()` (see the class docstring)."""
    return {k: v for k, v in self.extras.items()
            if isinstance(v, np.ndarray) and k not in self.NOT_ALIGNED}

  def check(self) -> None:
    """Raises ValueError unless the invariants hold: valid CSRs of the right shape, splits
    pairwise disjoint, aligned extras of length train.nnz."""
    for part in (self.train, self.valid, self.test):
      part.check()
      if (part.n_rows, part.n_cols) != (self.n_users, self.n_items):
        raise ValueError(f"{self.name}: a split has shape {part.n_rows} x {part.n_cols}")
    tk = self.train.keys()
    for nm, part in (("valid", self.valid), ("test", self.test)):
      if isin_sorted(part.keys(), tk).any():
        raise ValueError(f"{self.name}: {nm} overlaps train")
    if isin_sorted(self.valid.keys(), self.test.keys()).any():
      raise ValueError(f"{self.name}: valid overlaps test")
    for k, v in self.train_extras().items():
      if v.shape != (self.train.nnz,):
        raise ValueError(f"{self.name}: extras[{k!r}] has shape {v.shape}, not ({self.train.nnz},)")
    for v in self.extras.values():
      if isinstance(v, CSR):
        v.check()


def split_meta(dataset, fraction: float, seed: int):
  """Splits valid per user into a meta part (for a validation outer loss) and a selection part
  (for early stopping and model selection), so the data that trains Lambda never selects the
  model. Test is untouched. Returns the dataset with valid = selection part, extras["meta"]."""
  users, items = dataset.valid.to_pairs()
  rng = np.random.default_rng([seed, 7_777])
  meta = rng.random(users.size) < fraction

  def mk(m):
    return CSR.from_pairs(users[m], items[m], dataset.n_users, dataset.n_items)
  return dataset.replace(valid=mk(~meta), extras={**dataset.extras, "meta": mk(meta),
                                                  "valid_full": dataset.valid})


def drop_cold_items(dataset: Dataset) -> tuple[Dataset, dict[str, int]]:
  """Valid and test without the interactions whose item has no training interaction, and how
  many each lost (`config.eval.drop_cold_items`; by default such items are targets like any
  other: in the catalogue, scored, a miss unless ranked)."""
  seen = np.zeros(dataset.n_items, bool)
  seen[dataset.train.indices] = True
  out, dropped = {}, {}
  for part in ("valid", "test"):
    csr = getattr(dataset, part)
    u, i = csr.to_pairs()
    keep = seen[i]
    dropped[part] = int((~keep).sum())
    out[part] = CSR.from_pairs(u[keep], i[keep], dataset.n_users, dataset.n_items)
  return dataset.replace(**out), dropped
