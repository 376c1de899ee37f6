"""The backbone interface every training method relies on.

A backbone is a frozen (hashable) dataclass, so it can be a static argument of jit. All methods
are pure functions of their arguments:

  init(key) -> params                                  parameter pytree
  prepare(dataset) -> graph                            static device arrays (adjacency, ...)
  represent(params, graph) -> (U [n_users, r], I [n_items, r])
      the full representations: what the TIL state is built from and what evaluation scores
  triplet_repr(params, graph, users, pos, neg) -> (u, i, j), each [B, r]
      the batch's representations (for MF a gather; graph models may propagate locally)
  pair_score(params, u, i) -> [B]                      score from representations (dot for MF)
  full_scores(params, reprs, users) -> [c, n_items]    scores of every item for a user chunk
  l2(params, graph, users, pos, neg) -> scalar         L2 of the batch's ego rows, per triplet
  row_tables: {table: batch keys} or None              the row-indexed parameter tables and the
      batch ids that index them, when the batch functions read no other rows of them (MF,
      NeuMF); the row-sparse step (`til_jax.rows`) needs it, None trains on the dense path

A user's own JAX model implements the same methods (subclass `Backbone` for the defaults) and
every method of the library (BPR, TIL, baselines) trains it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Params = Any


def xavier(key, shape, dtype=jnp.float32):
  """Xavier/Glorot uniform, as the paper's implementation details (5.4) say."""
  return jax.nn.initializers.glorot_uniform()(key, shape, dtype)


def rows_sq(*rows: jax.Array) -> jax.Array:
  """Mean over the batch of 0.5 * sum of squared entries of each row block: [B, d]... -> []."""
  return sum(0.5 * jnp.sum(r * r) for r in rows) / rows[0].shape[0]


@dataclasses.dataclass(frozen=True)
class Backbone:
  """Defaults shared by dot-product backbones; subclasses override what differs."""

  n_users: int
  n_items: int
  dim: int = 64

  name = "backbone"
  row_tables = None  # see the module docstring

  def init(self, key) -> Params:
    raise NotImplementedError

  def prepare(self, dataset) -> dict:
    return {}

  def represent(self, params: Params, graph: dict) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def triplet_repr(self, params, graph, users, pos, neg):
    u_all, i_all = self.represent(params, graph)
    return u_all[users], i_all[pos], i_all[neg]

  def pair_score(self, params, u, i) -> jax.Array:
    return jnp.sum(u * i, axis=-1)

  def full_scores(self, params, reprs, users) -> jax.Array:
    u_all, i_all = reprs
    return u_all[users] @ i_all.T

  def l2(self, params, graph, users, pos, neg) -> jax.Array:
    return rows_sq(params["user"][users], params["item"][pos], params["item"][neg])

  @property
  def repr_dim(self) -> int:
    return self.dim


def triplet_scores(model, params, graph, users, pos, neg) -> tuple[jax.Array, jax.Array]:
  """(y_ui [B], y_uj [B]): the scores of a batch of triplets through `model`'s interface."""
  u, i, j = model.triplet_repr(params, graph, users, pos, neg)
  return model.pair_score(params, u, i), model.pair_score(params, u, j)
