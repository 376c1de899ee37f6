"""End-to-end item clustering for the Multi-Interest state (paper 4.3, Eq. 7-9), and K-means.

  Q_ik = (1 + ||q_i - Phi_k||^2 / tau)^(-(tau+1)/2) / sum_k' (...)          (Eq. 7)
  T_ik = (Q_ik^2 / sum_i Q_ik) / sum_k' (Q_ik'^2 / sum_i Q_ik')              (Eq. 8)
  L_c  = KL(T || Q) = sum_i sum_k T_ik log(T_ik / Q_ik)                      (Eq. 9)

T is held fixed between membership refreshes (stop-gradient), as in DEC (Xie et al. 2016),
which the paper follows. Hard memberships c_i = argmax_k Q_ik.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sq_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
  """||x_i - c_k||^2, [n, d] x [K, d] -> [n, K], clamped at 0."""
  d = (jnp.sum(x * x, axis=1, keepdims=True) - 2.0 * x @ centres.T
       + jnp.sum(centres * centres, axis=1)[None, :])
  return jnp.maximum(d, 0.0)


def _logits(x: jax.Array, centres: jax.Array, tau: float) -> jax.Array:
  return -(tau + 1.0) / 2.0 * jnp.log1p(sq_distances(x, centres) / tau)


def soft_assignment(x: jax.Array, centres: jax.Array, tau: float = 1.0) -> jax.Array:
  """Student-t soft assignment Q [n, K] (Eq. 7)."""
  return jax.nn.softmax(_logits(x, centres, tau), axis=1)


def log_soft_assignment(x: jax.Array, centres: jax.Array, tau: float = 1.0) -> jax.Array:
  """log Q [n, K] (Eq. 7) as a log-softmax: exact where Q underflows, and cheaper to
  differentiate than log(softmax) (value_and_grad of the Eq. 9 loss over Gowalla's items:
  0.68x, `python -m benchmarks.kl_logq_ab`)."""
  return jax.nn.log_softmax(_logits(x, centres, tau), axis=1)


def target_distribution(q: jax.Array) -> jax.Array:
  """Sharpened target T [n, K] (Eq. 8)."""
  w = q * q / jnp.sum(q, axis=0, keepdims=True)
  return w / jnp.sum(w, axis=1, keepdims=True)


def kl_per_item(target: jax.Array, q: jax.Array) -> jax.Array:
  """KL(T_i || Q_i) summed over clusters, [n]; T is treated as a constant."""
  return _kl_rows(target, jnp.log(q + 1e-30))


def _kl_rows(target: jax.Array, log_q: jax.Array) -> jax.Array:
  t = jax.lax.stop_gradient(target)
  return jnp.sum(jnp.where(t > 0, t * (jnp.log(jnp.maximum(t, 1e-30)) - log_q), 0.0), axis=1)


def _reduce(per_item: jax.Array, reduction: str, valid: jax.Array | None = None,
            n_items: int | None = None) -> jax.Array:
  if reduction not in ("sum", "mean"):
    raise ValueError(f"unknown KL reduction {reduction!r}; allowed: sum, mean")
  if valid is None:
    total = jnp.sum(per_item)
    return total / per_item.shape[0] if reduction == "mean" else total
  v = valid.astype(per_item.dtype)
  mean = jnp.sum(per_item * v) / jnp.maximum(jnp.sum(v), 1.0)
  return mean if reduction == "mean" else mean * n_items


def cluster_kl(target: jax.Array, x: jax.Array, centres: jax.Array, tau: float = 1.0,
               reduction: str = "sum", valid: jax.Array | None = None,
               n_items: int | None = None) -> jax.Array:
  """L_c of Eq. 9 from the item representations x [n, d]: KL(T || Q(x, centres)), the
  value `kl_loss(target, soft_assignment(x, centres, tau), reduction)` gives, computed from
  log Q (log_soft_assignment; what TIL-MI's step differentiates). With `valid` [n] (x the rows
  of a step's distinct items): their mean KL, the estimate of the all-item mean ("mean"), times
  `n_items` for "sum"."""
  return _reduce(_kl_rows(target, log_soft_assignment(x, centres, tau)), reduction, valid, n_items)


def kl_loss(target: jax.Array, q: jax.Array, reduction: str = "sum") -> jax.Array:
  """KL(T || Q) summed over clusters and summed (Eq. 9) or averaged ("mean") over items."""
  return _reduce(kl_per_item(target, q), reduction)


def hard_membership(x: jax.Array, centres: jax.Array) -> jax.Array:
  """c_i = argmax_k Q_ik = the nearest centre, [n] int32."""
  return jnp.argmin(sq_distances(x, centres), axis=1).astype(jnp.int32)


def kmeans_plus_plus(key, x: jax.Array, k: int) -> jax.Array:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): [n, d] -> centres [k, d]."""
  n = x.shape[0]
  k0, key = jax.random.split(key)
  first = x[jax.random.randint(k0, (), 0, n)]
  centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  d2 = jnp.sum((x - first) ** 2, axis=1)

  def body(c, carry):
    centres, d2, key = carry
    key, sub = jax.random.split(key)
    p = d2 / jnp.maximum(jnp.sum(d2), 1e-30)
    idx = jax.random.choice(sub, n, p=p)
    centres = centres.at[c].set(x[idx])
    d2 = jnp.minimum(d2, jnp.sum((x - x[idx]) ** 2, axis=1))
    return centres, d2, key

  centres, _, _ = jax.lax.fori_loop(1, k, body, (centres, d2, key))
  return centres


def lloyd(x: jax.Array, centres: jax.Array, iters: int) -> jax.Array:
  """`iters` Lloyd iterations from `centres`; an empty cluster keeps its centre."""
  k = centres.shape[0]

  def body(_, c):
    a = hard_membership(x, c)
    sums = jax.ops.segment_sum(x, a, k)
    counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), a, k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)

  return jax.lax.fori_loop(0, iters, body, centres)


def kmeans(key, x: jax.Array, k: int, iters: int = 25) -> jax.Array:
  """K-means with k-means++ seeding: [n, d] -> centres [k, d]."""
  return lloyd(x, kmeans_plus_plus(key, x, k), iters)
