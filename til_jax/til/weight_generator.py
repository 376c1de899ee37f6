"""The triplet weight generator f(s; Lambda) (Eq. 3) and the weight post-processing options.

  z = relu(W1 s + b1),   w = act(W2 z + b2),   W1: [d, 2d'], W2: [1, d]

`act` is the paper's sigmoid by default; softplus is what the authors' MF code used.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from til_jax.parallel import pmax, psum


class WeightGenerator(nn.Module):
  """s [B, 2r] -> raw pre-activation logits [B]. `hidden` is d of Eq. 3 (the repr size)."""

  hidden: int

  @nn.compact
  def __call__(self, s: jax.Array) -> jax.Array:
    z = nn.relu(nn.Dense(self.hidden, kernel_init=nn.initializers.xavier_uniform(), name="W1")(s))
    return nn.Dense(1, kernel_init=nn.initializers.xavier_uniform(), name="W2")(z)[:, 0]


def activate(logits: jax.Array, activation: str) -> jax.Array:
  """Eq. 3's output nonlinearity: "sigmoid" (paper), "softplus" (authors' code), "exp"."""
  if activation == "sigmoid":
    return jax.nn.sigmoid(logits)
  if activation == "softplus":
    return jax.nn.softplus(logits)
  if activation == "exp":
    return jnp.exp(logits)
  raise ValueError(f"unknown activation {activation!r}")


def postprocess(weights: jax.Array, logits: jax.Array, mask: jax.Array | None, how: str,
                clip_max: float = 5.0, temperature: float = 1.0,
                axis_name: str | None = None, group: int = 1) -> jax.Array:
  """Within-batch post-processing of the weights [B] (only the real rows count):

    none     w as generated (the paper)
    mean     w / mean(w): the batch mean is exactly 1, only relative importance is learnable
             (the sum constraint of paper 4.4, per batch)
    clip     clip(w, 0, clip_max) (the authors' code, [0, 5])
    softmax  n_real * softmax(logits / temperature) over the batch (learning-to-reweight style)
    group_softmax  N * softmax(logits / temperature) over each group of `group` = N consecutive
             triplets (the N negatives of one positive, `train.negatives`): importance over the
             negatives of the same (u, i), mean 1 in every group

  With `axis_name` (the batch split along B over that axis of shard_map/pmap) "mean" and
  "softmax" normalise over the global batch: sums and counts are psum'ed, the softmax shift is
  the global max (held constant: it cancels). Without, the collectives are the identity.
  """
  if how == "none":
    return weights
  if how == "clip":
    return jnp.clip(weights, 0.0, clip_max)
  if how == "group_softmax":   # groups never straddle devices (batch_size positives per device)
    z = (logits / temperature).reshape(-1, group)
    return (group * jax.nn.softmax(z, axis=1)).reshape(-1)
  m = jnp.ones_like(weights) if mask is None else mask.astype(weights.dtype)
  n = jnp.maximum(psum(jnp.sum(m), axis_name), 1.0)
  if how == "mean":
    return weights / (psum(jnp.sum(weights * m), axis_name) / n + 1e-12)
  if how == "softmax":
    z = jnp.where(m > 0, logits / temperature, -jnp.inf)
    e = jnp.exp(z - pmax(jax.lax.stop_gradient(jnp.max(z)), axis_name))  # the shift cancels
    return n * e / psum(jnp.sum(e), axis_name)
  raise ValueError(f"unknown weight post-processing {how!r}")
