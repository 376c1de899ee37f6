"""Losses, as pure functions of scores: BPR (Eq. 1), weighted BPR (Eq. 2), and the
pointwise/pairwise denoising losses of the baselines (T-CE, R-CE and their BPR versions).

Every loss takes an optional `mask` [B] (1 for real triplets, 0 for the padding that keeps the
last batch of an epoch the same shape) and averages over the real rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.mean(x)
  mask = mask.astype(x.dtype)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def bpr_per_triplet(pos_scores: jax.Array, neg_scores: jax.Array) -> jax.Array:
  """L_BPR(u, i, j) = -log sigmoid(y_ui - y_uj)  (Eq. 1), [B] -> [B]."""
  return -jax.nn.log_sigmoid(pos_scores - neg_scores)


def bpr_loss(pos_scores, neg_scores, mask=None) -> jax.Array:
  """Mean BPR over the batch (unweighted)."""
  return masked_mean(bpr_per_triplet(pos_scores, neg_scores), mask)


def weighted_bpr_loss(pos_scores, neg_scores, weights, mask=None, reduction: str = "mean"):
  """L_I-BPR = w_uij * L_BPR(u, i, j)  (Eq. 2), reduced over the batch.

  reduction: "mean" (the paper's batch objective) or "sum" (the authors' code).
  """
  per = weights * bpr_per_triplet(pos_scores, neg_scores)
  if reduction == "sum":
    return jnp.sum(per if mask is None else per * mask)
  return masked_mean(per, mask)


def bce_with_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Pointwise binary cross-entropy, per sample: -[y log s(x) + (1-y) log(1-s(x))]."""
  return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def drop_rate(step, max_rate: float, num_gradual: int) -> jax.Array:
  """T-CE's schedule eps(t) = eps_max * min(1, t / num_gradual) (Wang et al. 2021)."""
  return max_rate * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / num_gradual)


def truncated_mask(losses: jax.Array, rate, mask=None) -> jax.Array:
  """Keep-mask [n] that drops the `rate` fraction of the largest losses among the real rows.

  The number dropped is floor(rate * n_real); ties are broken towards the later index.
  """
  n_real = losses.shape[0] if mask is None else jnp.sum(mask)
  n_drop = jnp.floor(rate * n_real).astype(jnp.int32)
  big = jnp.where(mask > 0, losses, -jnp.inf) if mask is not None else losses
  order = jnp.argsort(-jax.lax.stop_gradient(big), stable=True)  # largest first
  ranks = jnp.empty_like(order).at[order].set(jnp.arange(order.shape[0]))
  keep = ranks >= n_drop
  return keep if mask is None else keep & (mask > 0)


def tce_loss(pos_logits, neg_logits, rate, mask=None) -> jax.Array:
  """T-CE: BCE on positives (label 1) and sampled negatives (label 0); the `rate` fraction of
  the largest-loss samples is dropped from the batch. Returns the mean over kept samples."""
  logits = jnp.concatenate([pos_logits, neg_logits])
  labels = jnp.concatenate([jnp.ones_like(pos_logits), jnp.zeros_like(neg_logits)])
  m = None if mask is None else jnp.concatenate([mask, mask])
  losses = bce_with_logits(logits, labels)
  keep = truncated_mask(losses, rate, m).astype(losses.dtype)
  return jnp.sum(losses * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def rce_weights(logits, labels, beta: float) -> jax.Array:
  """R-CE weights, held constant: sigmoid(y)^beta for positives, (1 - sigmoid(y))^beta for
  negatives."""
  p = jax.nn.sigmoid(jax.lax.stop_gradient(logits))
  return jnp.where(labels > 0, p, 1.0 - p) ** beta


def rce_loss(pos_logits, neg_logits, beta: float, mask=None) -> jax.Array:
  logits = jnp.concatenate([pos_logits, neg_logits])
  labels = jnp.concatenate([jnp.ones_like(pos_logits), jnp.zeros_like(neg_logits)])
  m = None if mask is None else jnp.concatenate([mask, mask])
  return masked_mean(rce_weights(logits, labels, beta) * bce_with_logits(logits, labels), m)


def tce_bpr_loss(pos_scores, neg_scores, rate, mask=None) -> jax.Array:
  """TCE-BPR: drop the `rate` fraction of triplets with the largest BPR loss."""
  losses = bpr_per_triplet(pos_scores, neg_scores)
  keep = truncated_mask(losses, rate, mask).astype(losses.dtype)
  return jnp.sum(losses * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def rce_bpr_weights(pos_scores, neg_scores, beta: float) -> jax.Array:
  """RCE-BPR weights, held constant: sigmoid(y_ui - y_uj)^beta."""
  return jax.nn.sigmoid(jax.lax.stop_gradient(pos_scores - neg_scores)) ** beta


def rce_bpr_loss(pos_scores, neg_scores, beta: float, mask=None) -> jax.Array:
  w = rce_bpr_weights(pos_scores, neg_scores, beta)
  return masked_mean(w * bpr_per_triplet(pos_scores, neg_scores), mask)
