"""A user's own backbone and training method, defined outside the package and registered with the
public entry points; also a config file (`get_config`) for the CLI, which imports it and so
registers both: `--config=tests/user_plugins.py`."""

import dataclasses

import jax
import jax.numpy as jnp

from configs import default
from til_jax.bpr import BPR, apply_grads
from til_jax.models import Backbone, register
from til_jax.models.base import triplet_scores, xavier
from til_jax.train import methods


@register("user_scaled_mf")
@dataclasses.dataclass(frozen=True)
class ScaledMF(Backbone):
  """y_ui = s * p_u . q_i with a learned global scale s (a parameter no built-in model has)."""

  name = "user_scaled_mf"

  def init(self, key):
    ku, ki = jax.random.split(key)
    return {"user": xavier(ku, (self.n_users, self.dim)), "item": xavier(ki, (self.n_items, self.dim)),
            "scale": jnp.ones(())}

  def represent(self, params, graph):
    return params["user"] * params["scale"], params["item"]


class HingeBPR(BPR):
  """A margin loss instead of BPR's log-sigmoid; reports the mean margin as a metric."""

  name = "user_hinge"

  def update(self, state, batch, consts):
    def objective(params):
      pos_s, neg_s = triplet_scores(self.model, params["model"], consts["graph"], batch["users"],
                                    batch["pos"], batch["neg"])
      m = batch["mask"].astype(pos_s.dtype)
      margin = pos_s - neg_s
      return jnp.sum(jax.nn.relu(1.0 - margin) * m) / jnp.sum(m), jnp.sum(margin * m) / jnp.sum(m)
    (loss, margin), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return apply_grads(state, self.tx, loss, grads, margin=margin)


methods.register("user_hinge", HingeBPR)


def get_config(arg=None):
  c = default.get_config(arg)
  c.method, c.model.name = "user_hinge", "user_scaled_mf"
  return c
