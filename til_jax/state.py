"""The one immutable training state: Flax's TrainState forked for two optimizers (model and
weight generator).

Optimizers stay out of the pytree; everything here is arrays, so Orbax saves it whole.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step: [] int32 global step; params: the model's pytree {"model": ..., "centres"?: [K, r]};
  opt_state: OPT_Theta's state; gen_params / gen_opt_state: the weight generator Lambda and
  OPT_Lambda's state (empty dicts for methods without one); aux: method state that is not
  optimised (eta [n_users, r], memberships [n_items], target T [n_items, K], sampler state)."""

  step: jax.Array
  params: Any
  opt_state: Any
  gen_params: Any
  gen_opt_state: Any
  aux: Any


def make_consts(train_users, train_items, graph=None) -> dict:
  """The static arrays every `update(state, batch, consts)` reads: the training pairs (user ids
  sorted ascending, item ids aligned; TIL's eta_u) and the backbone's `prepare` output."""
  return {"graph": {} if graph is None else graph, "train_users": jnp.asarray(train_users),
          "train_items": jnp.asarray(train_items)}
