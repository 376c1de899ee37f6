"""The TIL input states (paper 4.2): Uni-Interest (Eq. 4-5) and Multi-Interest (Eq. 6).

All functions take representations that are already under stop-gradient: the state is data for
the weight generator, not a path for the embedding gradient (docs/DESIGN.md "The TIL step", step 1).

`STATES` names every state (`settings.interest`): a function (p_u, q_i, q_j, eta_u, mu_i, mu_j,
settings) -> s [B, 2r], and whether it reads item clusters (mu_* are then the centres of the
clusters of i and j; else None, and no clusters are kept). A new state is one function here,
registered with `@state(name)`, plus a training method that names it (til_jax.train.methods).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

STATES: dict[str, tuple] = {}


def state(name: str, clusters: bool = False):
  """Registers a state function under `name` (see the module docstring)."""
  def add(fn):
    STATES[name] = (fn, clusters)
    return fn
  return add


def uses_clusters(interest: str) -> bool:
  return STATES[interest][1]


def user_interest(item_repr: jax.Array, train_users: jax.Array, train_items: jax.Array,
                  n_users: int) -> jax.Array:
  """eta_u = mean_{v in S_u} q_v  (Eq. 4), exactly, as a segment mean over the training pairs.

  item_repr [n_items, r]; train_users/train_items [nnz] (sorted by user) -> [n_users, r].
  Users without training items get zeros.
  """
  sums = jax.ops.segment_sum(item_repr[train_items], train_users, n_users, indices_are_sorted=True)
  counts = jax.ops.segment_sum(jnp.ones_like(train_users, item_repr.dtype), train_users, n_users,
                               indices_are_sorted=True)
  return sums / jnp.maximum(counts, 1.0)[:, None]


def uni_interest_state(p_u, q_i, q_j, eta_u) -> jax.Array:
  """s^UI = (q_i*p_u + q_i*eta_u) || (q_j*p_u + q_j*eta_u)   (Eq. 5). [B, r] x4 -> [B, 2r]."""
  return jnp.concatenate([q_i * p_u + q_i * eta_u, q_j * p_u + q_j * eta_u], axis=-1)


def multi_interest_state(p_u, q_i, q_j, eta_u, mu_i, mu_j, alpha: float) -> jax.Array:
  """s^MI (Eq. 6): Eq. 5 plus alpha * (mu_c * p_u + mu_c * eta_u) on each side, where mu_ci,
  mu_cj [B, r] are the centres of the clusters of i and j. -> [B, 2r]."""
  pos = q_i * p_u + q_i * eta_u + alpha * (mu_i * p_u + mu_i * eta_u)
  neg = q_j * p_u + q_j * eta_u + alpha * (mu_j * p_u + mu_j * eta_u)
  return jnp.concatenate([pos, neg], axis=-1)


@state("uni")
def _uni(p_u, q_i, q_j, eta_u, mu_i, mu_j, settings):
  return uni_interest_state(p_u, q_i, q_j, eta_u)


@state("multi", clusters=True)   # TIL-MI: centres learned end to end (Eq. 7-9)
@state("multi_kmeans", clusters=True)   # TIL-MIK: K-means centres recomputed at each refresh
def _multi(p_u, q_i, q_j, eta_u, mu_i, mu_j, settings):
  return multi_interest_state(p_u, q_i, q_j, eta_u, mu_i, mu_j, settings.alpha)
