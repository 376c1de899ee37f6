"""Losses, as pure functions of scores: BPR (Eq. 1), weighted BPR (Eq. 2), and the losses of
the baselines: T-CE and R-CE (Wang et al. 2021, checked against the official code
WenjieWWJ/DenoisingRec), their BPR versions TCE-BPR / RCE-BPR (the TIL paper's), and PRIS's
importance-weighted BPR (Lian et al. 2020, official code DefuLian/PRIS).

Every loss takes an optional `mask` [B] (1 for real triplets, 0 for the padding that keeps the
last batch of an epoch the same shape) and averages over the real rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array | None, axis_name: str | None = None) -> jax.Array:
  """Mean of x [B] over the real rows (mask [B] or None: every row) -> [].

  With `axis_name` (inside shard_map/pmap, the batch split along B over that axis): the mean over
  the real rows of every device, psum(masked sum) / psum(count), the single-device value."""
  if axis_name is None:
    if mask is None:
      return jnp.mean(x)
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)
  mask = jnp.ones_like(x) if mask is None else mask.astype(x.dtype)
  total, count = jax.lax.psum((jnp.sum(x * mask), jnp.sum(mask)), axis_name)
  return total / jnp.maximum(count, 1.0)


def bpr_per_triplet(pos_scores: jax.Array, neg_scores: jax.Array) -> jax.Array:
  """L_BPR(u, i, j) = -log sigmoid(y_ui - y_uj)  (Eq. 1), [B] -> [B]."""
  return -jax.nn.log_sigmoid(pos_scores - neg_scores)


def bpr_loss(pos_scores, neg_scores, mask=None, axis_name: str | None = None) -> jax.Array:
  """Mean BPR over the batch (unweighted); over every device's rows with `axis_name`."""
  return masked_mean(bpr_per_triplet(pos_scores, neg_scores), mask, axis_name)


def weighted_bpr_loss(pos_scores, neg_scores, weights, mask=None, reduction: str = "mean",
                      axis_name: str | None = None):
  """L_I-BPR = w_uij * L_BPR(u, i, j)  (Eq. 2), reduced over the batch (over every device's
  rows with `axis_name`).

  reduction: "mean" (the paper's batch objective) or "sum" (the authors' code).
  """
  per = weights * bpr_per_triplet(pos_scores, neg_scores)
  if reduction == "sum":
    total = jnp.sum(per if mask is None else per * mask)
    return total if axis_name is None else jax.lax.psum(total, axis_name)
  return masked_mean(per, mask, axis_name)


def bce_with_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Pointwise binary cross-entropy, per sample: -[y log s(x) + (1-y) log(1-s(x))]."""
  return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def drop_rate(step, max_rate: float, num_gradual: int) -> jax.Array:
  """T-CE's schedule (Wang et al. 2021, code WenjieWWJ/DenoisingRec `drop_rate_schedule`):
  eps(t) = np.linspace(0, eps_max, num_gradual)[t] = eps_max * t / (num_gradual - 1) for
  t < num_gradual, then eps_max. t counts optimisation steps from 0. [] -> [] float32."""
  t = jnp.asarray(step, jnp.float32)
  return max_rate * jnp.minimum(1.0, t / max(int(num_gradual) - 1, 1))


def n_dropped(rate, n_real) -> jax.Array:
  """How many samples T-CE drops out of `n_real`: the original keeps int((1 - rate) * n) (in
  float64); the 1e-3 absorbs float32 rounding of (1 - rate) * n (exact for n < 10^4). [] int32."""
  n_real = jnp.asarray(n_real, jnp.float32)
  keep = jnp.floor((1.0 - jnp.asarray(rate, jnp.float32)) * n_real + 1e-3)
  return jnp.clip(n_real - keep, 0, n_real).astype(jnp.int32)


def truncated_mask(losses: jax.Array, rate, mask=None, at_risk=None) -> jax.Array:
  """Keep-mask [n] bool of T-CE's truncated loss (Wang et al. 2021, Eq. 6 and `loss_function` of
  the official code): drop the `n_dropped(rate, n_real)` samples with the largest key, where the
  key is the loss of a sample at risk and 0 for the others (the code sorts loss * label, so only
  positives are dropped unless more than all of them must go). Padding rows (mask 0) are never
  counted nor kept. Ties: the earlier index is dropped first. The keys carry no gradient.

  losses [n]; rate []; mask [n] or None; at_risk [n] bool or None (None: every sample).
  """
  n = losses.shape[0]
  real = jnp.ones((n,), bool) if mask is None else mask > 0
  key = jax.lax.stop_gradient(losses)
  if at_risk is not None:
    key = jnp.where(at_risk, key, 0.0)
  key = jnp.where(real, key, -jnp.inf)
  n_drop = n_dropped(rate, jnp.sum(real))
  order = jnp.argsort(-key, stable=True)  # largest first
  ranks = jnp.empty_like(order).at[order].set(jnp.arange(n, dtype=order.dtype))
  return (ranks >= n_drop) & real


def pointwise(pos_logits, neg_logits, mask=None):
  """(logits [2B], labels [2B], mask [2B] or None): positives labelled 1, sampled negatives 0."""
  logits = jnp.concatenate([pos_logits, neg_logits])
  labels = jnp.concatenate([jnp.ones_like(pos_logits), jnp.zeros_like(neg_logits)])
  return logits, labels, None if mask is None else jnp.concatenate([mask, mask])


def tce_loss(pos_logits, neg_logits, rate, mask=None) -> jax.Array:
  """T-CE (Wang et al. 2021): BCE on positives (label 1) and one sampled negative each (label 0);
  the positives with the largest BCE are dropped (`truncated_mask`, at most the `rate` fraction
  of all 2B samples). Mean over the kept samples, as the official code. [B], [B] -> []."""
  logits, labels, m = pointwise(pos_logits, neg_logits, mask)
  losses = bce_with_logits(logits, labels)
  keep = truncated_mask(losses, rate, m, at_risk=labels > 0).astype(losses.dtype)
  return jnp.sum(losses * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def rce_weights(logits, labels, beta: float) -> jax.Array:
  """R-CE weights, held constant: sigmoid(y)^beta for positives, (1 - sigmoid(y))^beta for
  negatives."""
  p = jax.nn.sigmoid(jax.lax.stop_gradient(logits))
  return jnp.where(labels > 0, p, 1.0 - p) ** beta


def rce_loss(pos_logits, neg_logits, beta: float, mask=None) -> jax.Array:
  """R-CE (Wang et al. 2021, Eq. 8): mean over the 2B samples of w * BCE, w = `rce_weights`
  held constant (the official code detaches sigmoid(y)). [B], [B] -> []."""
  logits, labels, m = pointwise(pos_logits, neg_logits, mask)
  return masked_mean(rce_weights(logits, labels, beta) * bce_with_logits(logits, labels), m)


def tce_bpr_loss(pos_scores, neg_scores, rate, mask=None) -> jax.Array:
  """TCE-BPR (the TIL paper's variant, no canonical version): drop the `n_dropped(rate, B)`
  triplets with the largest BPR loss (every triplet is at risk), mean BPR over the rest."""
  losses = bpr_per_triplet(pos_scores, neg_scores)
  keep = truncated_mask(losses, rate, mask).astype(losses.dtype)
  return jnp.sum(losses * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def rce_bpr_weights(pos_scores, neg_scores, beta: float) -> jax.Array:
  """RCE-BPR weights, held constant: sigmoid(y_ui - y_uj)^beta."""
  return jax.nn.sigmoid(jax.lax.stop_gradient(pos_scores - neg_scores)) ** beta


def rce_bpr_loss(pos_scores, neg_scores, beta: float, mask=None) -> jax.Array:
  """RCE-BPR: mean over the batch of sigmoid(y_ui - y_uj)^beta (constant) * BPR(u, i, j)."""
  w = rce_bpr_weights(pos_scores, neg_scores, beta)
  return masked_mean(w * bpr_per_triplet(pos_scores, neg_scores), mask)


def pris_weights(neg_scores: jax.Array, log_q: jax.Array) -> jax.Array:
  """PRIS self-normalised importance weights (Lian et al. 2020; official code `compute_loss`):
  w_l = softmax_l(y_uj_l - log Q(j_l | u)), held constant. [B, L], [B, L] -> [B, L].

  The official code takes softmax(-(y_ui - y_uj) - log Q), the same numbers (y_ui is constant
  over l), without a stop-gradient; we hold the weights constant
  (docs/DESIGN.md "Baselines")."""
  return jax.nn.softmax(jax.lax.stop_gradient(neg_scores) - log_q, axis=-1)


def pris_loss(pos_scores, neg_scores, log_q, mask=None) -> jax.Array:
  """PRIS: mean over the batch of sum_l w_l * BPR(u, i, j_l). [B], [B, L], [B, L] -> []."""
  w = pris_weights(neg_scores, log_q)
  per = jnp.sum(w * bpr_per_triplet(pos_scores[:, None], neg_scores), axis=-1)
  return masked_mean(per, mask)
