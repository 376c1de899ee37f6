"""The in-memory dataset: compact CSR interaction sets for train / valid / test.

Everything downstream (samplers, evaluator, TIL states, graph backbones) reads a `Dataset`.
Arrays live on the host as NumPy; they are moved to the device by the code that needs them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


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
    """Builds a CSR from (row, col) pairs; duplicates are removed."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    key = np.unique(rows * n_cols + cols)
    r, c = np.divmod(key, n_cols)
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
    """(rows [nnz] int32, cols [nnz] int32)."""
    return self.row_ids(), self.indices

  def keys(self) -> np.ndarray:
    """[nnz] int64 sorted keys row * n_cols + col, for vectorized membership tests."""
    return self.row_ids().astype(np.int64) * self.n_cols + self.indices

  def contains(self, rows: np.ndarray, cols: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Vectorized membership: [n] bool, True where (rows[k], cols[k]) is stored."""
    keys = self.keys() if keys is None else keys
    q = np.asarray(rows, np.int64) * self.n_cols + np.asarray(cols, np.int64)
    pos = np.searchsorted(keys, q)
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    return (keys[pos] == q) if len(keys) else np.zeros(q.shape, bool)

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


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A split dataset. `extras` holds optional per-train-interaction arrays aligned with
  `train.to_pairs()` order (e.g. "rating", "clean" flags of synthetic or noisy data)."""

  name: str
  n_users: int
  n_items: int
  train: CSR
  valid: CSR
  test: CSR
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)

  def summary(self) -> str:
    return (f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"train {self.train.nnz}, valid {self.valid.nnz}, test {self.test.nnz}")

  def replace(self, **kw) -> Dataset:
    return dataclasses.replace(self, **kw)
