"""Full-ranking evaluation: Recall@k, NDCG@k, Precision@k, HitRate@k over all items.

Protocol (docs/DESIGN.md "Protocol"): every item is ranked for every user with targets; the user's
training items (and validation items when scoring test) are masked with -inf; Recall@k = hits /
|T_u|; NDCG@k uses binary gains, log2(rank + 1) discounts and an ideal DCG over min(|T_u|, k);
all metrics are averaged over users with |T_u| > 0. Ties are broken towards the lower item id.

Speed (benchmarks/eval_bench.py: Gowalla valid, 29,858 users x 40,981 items, 64-d, 2-core AVX2
CPU, idle): 2.1 s, of which the score matmul alone (157 GFLOP) is 1.3 s; with a full `lax.top_k`
it was 4.0 s. What it takes:
- `block_top_k` (exact: one vectorized pass of block maxima and two small top-k, +0.7 s)
  instead of a full `lax.top_k` over 41k items (a per-row partial sort on one thread, +2.6 s);
- train items masked by an in-place scatter of flat (row, item) pairs, not [chunk, max |train|]
  padded lists (812 wide on Gowalla, ~30x more scatter work);
- all chunks in one jit call (`lax.map`): per-chunk dispatch was ~1 s slower (worse threading).
`chunk` barely matters (128 to 1024: 2.1-2.3 s); `block` neither (16 to 64).
Everything runs in float32 with XLA's default options (nothing set in `jax.config` or
XLA_FLAGS). bf16 or f16 matmuls are slower on AVX2 CPUs (no native support) and NumPy/OpenBLAS
is slower than XLA's matmul here, so neither is used.
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
  """Exact top-k item indices [c, k] of scores [c, n], best first, ties to the lower index
  (the order of a stable descending sort).

  The items are cut into contiguous blocks of `block` (the last one may be shorter); one pass
  takes each block's maximum ([c, ceil(n / block)], a `reduce_window`, no copy of the scores),
  `lax.top_k` picks the k best blocks, and a second `lax.top_k` runs over their k * block items
  only, gathered in item order. Exact, ties included: a block left out has a maximum <= that of
  each of the k blocks kept (and a higher block index on equality, as `lax.top_k` prefers lower
  indices), so each kept block holds an item that ranks before every item of the block left out.
  On a 2-core CPU with n = 41k, k = 20 it costs about a quarter of a full `lax.top_k`
  (benchmarks/eval_bench.py).
  """
  c, n = scores.shape
  if n <= 2 * k * block:
    return jax.lax.top_k(scores, k)[1]
  nb = -(-n // block)
  block_max = jax.lax.reduce_window(scores, -jnp.inf, jax.lax.max, (1, block), (1, block),
                                    ((0, 0), (0, nb * block - n)))              # [c, nb]
  _, best = jax.lax.top_k(block_max, k)
  best = jnp.sort(best, axis=1)                                              # [c, k]
  items = (best[:, :, None] * block + jnp.arange(block, dtype=best.dtype)).reshape(c, k * block)
  cand = jnp.take_along_axis(scores, jnp.minimum(items, n - 1), axis=1)     # [c, k * block]
  cand = jnp.where(items < n, cand, -jnp.inf)      # past the end: ranks after any real item
  _, pos = jax.lax.top_k(cand, k)
  return jnp.take_along_axis(items, pos, axis=1)


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
def _run_chunks(score_fn, params, users, ex_rows, ex_cols, targets, n_targets, ks, block):
  """All chunks in one call (`lax.map`, one chunk in memory at a time): dict name -> [n_chunks, c]."""
  return jax.lax.map(lambda a: _chunk_metrics(score_fn(params, a[0]), *a[1:], ks, block),
                     (users, ex_rows, ex_cols, targets, n_targets))


def pad_chunks(users: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray, int]:
  """users [n] padded to whole chunks: (users [n_chunks * chunk] int32, real-row mask, chunk),
  the chunk capped at n (at least 1)."""
  n = users.size
  chunk = int(max(1, min(chunk, max(n, 1))))
  pad = max(1, math.ceil(n / chunk)) * chunk - n
  padded = np.concatenate([users, np.zeros(pad, users.dtype)]).astype(np.int32)
  return padded, np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]), chunk


def chunk_masks(users: np.ndarray, valid: np.ndarray, exclude: CSR, chunk: int):
  """The items to mask for users [n_chunks * chunk] (valid: real rows), as flat (row in chunk,
  item) pairs padded per chunk to the longest chunk (padding rows = chunk, dropped by the
  scatter): (ex_rows, ex_cols) [n_chunks, width] int32."""
  n_chunks = users.size // chunk
  ex_len = np.where(valid, exclude.lengths[users], 0)
  starts = exclude.indptr[users]
  row = np.repeat(np.arange(users.size), ex_len)
  pos = np.arange(row.size) - np.repeat(np.cumsum(ex_len) - ex_len, ex_len)
  cols = exclude.indices[np.repeat(starts, ex_len) + pos]
  per_chunk = ex_len.reshape(n_chunks, chunk).sum(axis=1)
  width = max(int(per_chunk.max(initial=0)), 1)
  ex_rows = np.full((n_chunks, width), chunk, np.int32)
  ex_cols = np.zeros((n_chunks, width), np.int32)
  chunk_of = row // chunk
  slot = np.arange(row.size) - np.repeat(np.cumsum(per_chunk) - per_chunk, per_chunk)
  ex_rows[chunk_of, slot] = row % chunk
  ex_cols[chunk_of, slot] = cols
  return ex_rows, ex_cols


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _top_chunks(score_fn, params, users, ex_rows, ex_cols, k: int, block: int):
  def one(a):
    scores = score_fn(params, a[0]).astype(jnp.float32).at[a[1], a[2]].set(-jnp.inf, mode="drop")
    items = block_top_k(scores, k, block)
    return items, jnp.take_along_axis(scores, items, axis=1)
  return jax.lax.map(one, (users, ex_rows, ex_cols))


def top_k(score_fn: ScoreFn, params, users: np.ndarray, exclude: CSR, k: int, chunk: int = 256,
          block: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """The k best items of each user of `users` [n] with the items of `exclude` masked, through
  the evaluation's chunked scorer: (items [n, k] int, scores [n, k] float32), best first, ties
  to the lower item id. A user with fewer than k unmasked items gets -inf scores at the end."""
  users = np.asarray(users, np.int64)
  n = users.size
  padded, valid, chunk = pad_chunks(users, chunk)
  n_chunks = padded.size // chunk
  ex_rows, ex_cols = chunk_masks(padded, valid, exclude, chunk)
  items, scores = _top_chunks(score_fn, params, jnp.asarray(padded.reshape(n_chunks, chunk)),
                              jnp.asarray(ex_rows), jnp.asarray(ex_cols), int(k), int(block))
  return (np.asarray(items).reshape(-1, k)[:n], np.asarray(scores).reshape(-1, k)[:n])


class Evaluator:
  """Full-ranking evaluator for one dataset split ("valid" or "test").

  Precomputes, on the host once, per chunk of `chunk` users: the (row, item) pairs to mask and
  the padded target lists; `__call__(score_fn, params)` then runs one jit-compiled call that
  loops over the chunks (`lax.map`). `score_fn(params, users [c]) -> scores [c, n_items]` is a
  static jit argument (a module-level function or another hashable callable); memory is
  O(chunk * n_items).
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
    self.users, self.valid, self.chunk = pad_chunks(users, chunk)
    n_chunks = self.users.size // self.chunk
    self.users_c = self.users.reshape(n_chunks, self.chunk)
    self.valid_c = self.valid.reshape(n_chunks, self.chunk)
    self.ex_rows, self.ex_cols = chunk_masks(self.users, self.valid, exclude, self.chunk)
    tg = targets.padded(-1)[self.users]
    self.targets = tg.reshape(n_chunks, self.chunk, -1)
    self.n_targets = lengths[self.users].astype(np.int32).reshape(n_chunks, self.chunk)

  @functools.cached_property
  def _device_arrays(self):
    return tuple(map(jnp.asarray, (self.users_c, self.ex_rows, self.ex_cols, self.targets,
                                   self.n_targets)))

  def per_user(self, score_fn: ScoreFn, params) -> dict[str, np.ndarray]:
    """Per-user metrics [n_users] (in `self.users[:n_users]` order)."""
    out = _run_chunks(score_fn, params, *self._device_arrays, self.ks, self.block)
    return {name: np.asarray(v).reshape(-1)[:self.n_users] for name, v in out.items()}

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


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half
  (the Mann-Whitney U statistic over the product of the class sizes, from average ranks).
  NaN when either class is empty."""
  scores = np.asarray(scores, np.float64)
  positive = np.asarray(positive, bool)
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  s = scores[order]
  ranks = np.empty(s.size, np.float64)
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  ends = np.r_[starts[1:], s.size]
  avg = (starts + ends + 1) / 2.0                      # 1-based average rank of each tie group
  ranks[order] = np.repeat(avg, ends - starts)
  u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))
