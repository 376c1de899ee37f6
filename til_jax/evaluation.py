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
  """Exact top-k item indices [c, k] of scores [c, n] (ties: lower index first)."""
  c, n = scores.shape
  if n <= 8 * k * block:
    return jax.lax.top_k(scores, k)[1]
  nb = -(-n // block)
  padded = jnp.pad(scores, ((0, 0), (0, nb * block - n)), constant_values=-jnp.inf)
  blocks = padded.reshape(c, nb, block)
  _, best = jax.lax.top_k(blocks.max(axis=2), k)          # [c, k] block ids
  best = jnp.sort(best, axis=1)                             # keep candidates in item order
  cand = jnp.take_along_axis(blocks, best[:, :, None], axis=1).reshape(c, k * block)
  _, pos = jax.lax.top_k(cand, k)
  return (best[:, :, None] * block + jnp.arange(block)).reshape(c, k * block)[
      jnp.arange(c)[:, None], pos]


def _chunk_metrics(scores, exclude, targets, n_targets, ks: tuple[int, ...]):
  """Per-user metric sums for one chunk.

  scores [c, n]; exclude [c, Lx] (pad = n); targets [c, Lt] (pad = -1); n_targets [c].
  Returns dict name -> [c] per-user values.
  """
  c, n = scores.shape
  rows = jnp.arange(c)[:, None]
  scores = scores.at[rows, exclude].set(-jnp.inf, mode="drop")
  kmax = max(ks)
  top = block_top_k(scores, kmax)                                        # [c, kmax]
  hit = (top[:, :, None] == targets[:, None, :]).any(axis=2).astype(jnp.float32)  # [c, kmax]
  disc = 1.0 / jnp.log2(jnp.arange(2, kmax + 2, dtype=jnp.float32))
  nt = n_targets.astype(jnp.float32)
  out = {}
  for k in ks:
    hits = hit[:, :k].sum(axis=1)
    dcg = (hit[:, :k] * disc[:k]).sum(axis=1)
    ideal = jnp.cumsum(disc[:k])[jnp.clip(n_targets, 1, k) - 1]
    safe = jnp.maximum(nt, 1.0)
    out[f"recall@{k}"] = hits / safe
    out[f"ndcg@{k}"] = dcg / ideal
    out[f"precision@{k}"] = hits / k
    out[f"hitrate@{k}"] = (hits > 0).astype(jnp.float32)
  return out


class Evaluator:
  """Full-ranking evaluator for one dataset split ("valid" or "test").

  Precomputes padded exclusion and target lists on the host once; `__call__(score_fn, params)`
  then runs one jit-compiled function per chunk of `chunk` users.
  """

  def __init__(self, dataset: Dataset, split: str = "valid", ks: Sequence[int] = (20,),
               chunk: int = 1024, users: np.ndarray | None = None):
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    self.ks = tuple(sorted(set(int(k) for k in ks)))
    self.n_items = dataset.n_items
    targets: CSR = getattr(dataset, split)
    exclude = dataset.train if split == "valid" else dataset.train.union(dataset.valid)
    lengths = targets.lengths
    users = np.flatnonzero(lengths > 0) if users is None else np.asarray(users)
    users = users[lengths[users] > 0]
    self.n_users = int(users.size)
    self.chunk = int(min(chunk, max(self.n_users, 1)))
    n_chunks = max(1, math.ceil(self.n_users / self.chunk))
    pad = n_chunks * self.chunk - self.n_users
    self.users = np.concatenate([users, np.zeros(pad, users.dtype)]).astype(np.int32)
    self.valid = np.concatenate([np.ones(self.n_users, bool), np.zeros(pad, bool)])
    ex = exclude.padded(self.n_items)[self.users]
    tg = targets.padded(-1)[self.users]
    self.exclude = ex.reshape(n_chunks, self.chunk, -1)
    self.targets = tg.reshape(n_chunks, self.chunk, -1)
    self.n_targets = lengths[self.users].astype(np.int32).reshape(n_chunks, self.chunk)
    self.users_c = self.users.reshape(n_chunks, self.chunk)
    self.valid_c = self.valid.reshape(n_chunks, self.chunk)

  @functools.cached_property
  def _compiled(self):
    ks = self.ks

    @functools.partial(jax.jit, static_argnums=0)
    def run(score_fn, params, users, exclude, targets, n_targets):
      return _chunk_metrics(score_fn(params, users), exclude, targets, n_targets, ks)
    return run

  def per_user(self, score_fn: ScoreFn, params) -> dict[str, np.ndarray]:
    """Per-user metrics [n_users] (in `self.users[:n_users]` order)."""
    parts: dict[str, list[np.ndarray]] = {}
    for c in range(self.users_c.shape[0]):
      m = self._compiled(score_fn, params, self.users_c[c], self.exclude[c], self.targets[c],
                         self.n_targets[c])
      for name, v in m.items():
        parts.setdefault(name, []).append(np.asarray(v)[self.valid_c[c]])
    return {k: np.concatenate(v) for k, v in parts.items()}

  def __call__(self, score_fn: ScoreFn, params) -> dict[str, float]:
    """Means over users with targets: {"recall@20": ..., "ndcg@20": ..., ...}."""
    return {k: float(np.mean(v, dtype=np.float64)) for k, v in self.per_user(score_fn, params).items()}


def dot_score_fn(params, users):
  """Score function for precomputed representations: params = (user_repr, item_repr)."""
  user_repr, item_repr = params
  return user_repr[users] @ item_repr.T


def popularity_scores(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """A popularity baseline as (user_repr [n_users, 1], item_repr [n_items, 1]) for dot_score_fn:
  every user ranks items by their number of training interactions."""
  pop = np.bincount(dataset.train.indices, minlength=dataset.n_items).astype(np.float32)
  return np.ones((dataset.n_users, 1), np.float32), pop[:, None]
