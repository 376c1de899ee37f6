"""Full-ranking evaluation: Recall@k, NDCG@k, Precision@k, HitRate@k over all items.

Protocol (DESIGN.md "Protocol"): every item is ranked for every user with targets; the user's
training items (and validation items when scoring test) are masked with -inf; Recall@k = hits /
|T_u|; NDCG@k uses binary gains, log2(rank + 1) discounts and an ideal DCG over min(|T_u|, k);
all metrics are averaged over users with |T_u| > 0. Ties are broken towards the lower item id.

Speed: scoring is one matmul per user chunk; the top-k is exact but avoids a full `lax.top_k`
over all items (slow on CPU): the items are cut into blocks of `block` items, the k best blocks
by their maximum are found, and the top-k is taken over those k * block candidates only. Any
item of the true top-k lies in one of those blocks, because the k-th best block maximum is a lower
bound of the k-th best score.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from til_jax.data.dataset import CSR, Dataset

ScoreFn = Callable[..., jax.Array]  # (params, users [c]) -> scores [c, n_items]


def block_top_k(scores: jax.Array, k: int, block: int = 32) -> jax.Array:
  """Exact top-k item indices [c, k] of scores [c, n], best first, ties to the lower index.

  Column j of the [c, block, nb] view (nb = ceil(n / block)) holds items j, nb + j, 2 nb + j, ...
  The k columns with the best maxima hold the whole top-k: every column left out has a maximum
  <= the k-th kept maximum <= the k-th best score. Its top-k is taken over those k * block
  candidates, ordered by item id so that `lax.top_k` breaks ties towards the lower id. A user
  whose k-th score equals the maximum of a column left out (an exact tie at the boundary, e.g.
  integer popularity scores) could get a different tie-break: if any user of the chunk has one,
  the chunk falls back to a full `lax.top_k`, so the result is always that of a stable sort.
  The max over strided columns is an elementwise max of `block` contiguous [c, nb] slabs, which
  XLA vectorizes and fuses with the score matmul; a reduce over contiguous blocks would not.
  """
  c, n = scores.shape
  nb = -(-n // block)
  if nb < 4 * k:
    return jax.lax.top_k(scores, k)[1]
  padded = jnp.pad(scores, ((0, 0), (0, nb * block - n)), constant_values=-jnp.inf)
  slabs = padded.reshape(c, block, nb)                                   # item = b * nb + j
  col_max = slabs.max(axis=1)                                            # [c, nb]
  _, cols = jax.lax.top_k(col_max, k)
  cols = jnp.sort(cols, axis=1)                                          # [c, k]
  cand = jnp.take_along_axis(slabs, cols[:, None, :], axis=2).reshape(c, block * k)
  ids = (jnp.arange(block, dtype=cols.dtype)[None, :, None] * nb + cols[:, None, :]).reshape(c, -1)
  vals, pos = jax.lax.top_k(cand, k)                                     # ids increase along cand
  top = jnp.take_along_axis(ids, pos, axis=1)
  tie = ((col_max >= vals[:, k - 1:k]).sum(axis=1) > k).any()
  return jax.lax.cond(tie, lambda s: jax.lax.top_k(s, k)[1], lambda s: top, scores)


def _chunk_metrics(scores, ex_rows, ex_cols, targets, n_targets, ks: tuple[int, ...], block: int):
  """Per-user metrics for one chunk of c users.

  scores [c, n]; ex_rows, ex_cols [L] items to mask (padding rows = c, dropped); targets [c, Lt]
  (pad = -1); n_targets [c]. Returns dict name -> [c] per-user values.
  """
  scores = scores.astype(jnp.float32).at[ex_rows, ex_cols].set(-jnp.inf, mode="drop")
  kmax = max(ks)
  top = block_top_k(scores, kmax, block)                                 # [c, kmax]
  hit = (top[:, :, None] == targets[:, None, :]).any(axis=2).astype(jnp.float32)  # [c, kmax]
  disc = 1.0 / jnp.log2(jnp.arange(2, kmax + 2, dtype=jnp.float32))
  nt = jnp.maximum(n_targets, 1)
  out = {}
  for k in ks:
    hits = hit[:, :k].sum(axis=1)
    ideal = jnp.cumsum(disc[:k])[jnp.minimum(nt, k) - 1]
    out[f"recall@{k}"] = hits / nt
    out[f"ndcg@{k}"] = (hit[:, :k] * disc[:k]).sum(axis=1) / ideal
    out[f"precision@{k}"] = hits / k
    out[f"hitrate@{k}"] = (hits > 0).astype(jnp.float32)
  return out


@functools.partial(jax.jit, static_argnums=(0, 7, 8))
def _run_chunk(score_fn, params, users, ex_rows, ex_cols, targets, n_targets, ks, block):
  return _chunk_metrics(score_fn(params, users), ex_rows, ex_cols, targets, n_targets, ks, block)


class Evaluator:
  """Full-ranking evaluator for one dataset split ("valid" or "test").

  Precomputes, on the host once, per chunk of `chunk` users: the (row, item) pairs to mask and
  the padded target lists; `__call__(score_fn, params)` then runs one jit-compiled function per
  chunk. `score_fn(params, users [c]) -> scores [c, n_items]` is a static jit argument (a
  module-level function or another hashable callable); memory is O(chunk * n_items).
  `block` is the candidate block size of `block_top_k` (results do not depend on it).
  """

  def __init__(self, dataset: Dataset, split: str = "valid", ks: Sequence[int] = (20,),
               chunk: int = 128, users: np.ndarray | None = None, block: int = 32):
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    self.ks = tuple(sorted(set(int(k) for k in ks)))
    if not self.ks or self.ks[0] < 1 or self.ks[-1] > dataset.n_items:
      raise ValueError(f"ks must be in [1, n_items={dataset.n_items}], got {ks}")
    self.n_items = dataset.n_items
    self.block = int(block)
    targets: CSR = getattr(dataset, split)
    exclude = dataset.train if split == "valid" else dataset.train.union(dataset.valid)
    lengths = targets.lengths
    users = np.flatnonzero(lengths > 0) if users is None else np.asarray(users, np.int64)
    users = users[lengths[users] > 0]
    self.n_users = int(users.size)
    self.chunk = int(max(1, min(chunk, self.n_users)))
    n_chunks = max(1, math.ceil(self.n_users / self.chunk))
    pad = n_chunks * self.chunk - self.n_users
    self.users = np.concatenate([users, np.zeros(pad, users.dtype)]).astype(np.int32)
    self.valid = np.concatenate([np.ones(self.n_users, bool), np.zeros(pad, bool)])
    self.users_c = self.users.reshape(n_chunks, self.chunk)
    self.valid_c = self.valid.reshape(n_chunks, self.chunk)
    # Items to mask, as flat (row in chunk, item) pairs padded per chunk to the longest chunk.
    ex_len = np.where(self.valid, exclude.lengths[self.users], 0)
    starts = exclude.indptr[self.users]
    row = np.repeat(np.arange(self.users.size), ex_len)
    pos = np.arange(row.size) - np.repeat(np.cumsum(ex_len) - ex_len, ex_len)
    cols = exclude.indices[np.repeat(starts, ex_len) + pos]
    per_chunk = ex_len.reshape(n_chunks, self.chunk).sum(axis=1)
    width = max(int(per_chunk.max(initial=0)), 1)
    self.ex_rows = np.full((n_chunks, width), self.chunk, np.int32)
    self.ex_cols = np.zeros((n_chunks, width), np.int32)
    chunk_of = row // self.chunk
    slot = np.arange(row.size) - np.repeat(np.cumsum(per_chunk) - per_chunk, per_chunk)
    self.ex_rows[chunk_of, slot] = row % self.chunk
    self.ex_cols[chunk_of, slot] = cols
    tg = targets.padded(-1)[self.users]
    self.targets = tg.reshape(n_chunks, self.chunk, -1)
    self.n_targets = lengths[self.users].astype(np.int32).reshape(n_chunks, self.chunk)

  @functools.cached_property
  def _device_arrays(self):
    return tuple(list(map(jnp.asarray, a)) for a in
                 (self.users_c, self.ex_rows, self.ex_cols, self.targets, self.n_targets))

  def per_user(self, score_fn: ScoreFn, params) -> dict[str, np.ndarray]:
    """Per-user metrics [n_users] (in `self.users[:n_users]` order)."""
    users, ex_rows, ex_cols, targets, n_targets = self._device_arrays
    outs = [_run_chunk(score_fn, params, users[c], ex_rows[c], ex_cols[c], targets[c], n_targets[c],
                       self.ks, self.block) for c in range(len(users))]
    return {name: np.concatenate([np.asarray(o[name]) for o in outs])[:self.n_users]
            for name in outs[0]}

  def __call__(self, score_fn: ScoreFn, params) -> dict[str, float]:
    """Means over users with targets: {"recall@20": ..., "ndcg@20": ..., ...}."""
    return {k: float(np.mean(v, dtype=np.float64)) for k, v in self.per_user(score_fn, params).items()}


def dot_score_fn(params, users):
  """Score function for precomputed representations: params = (user_repr [n_users, d],
  item_repr [n_items, d]); returns [c, n_items]."""
  user_repr, item_repr = params
  return user_repr[users] @ item_repr.T


def popularity_scores(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """A popularity baseline as (user_repr [n_users, 1], item_repr [n_items, 1]) for dot_score_fn:
  every user ranks items by their number of training interactions."""
  pop = np.bincount(dataset.train.indices, minlength=dataset.n_items).astype(np.float32)
  return np.ones((dataset.n_users, 1), np.float32), pop[:, None]
