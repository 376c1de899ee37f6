"""Matrix factorisation: y_ui = p_u . q_i (paper 4.1)."""

from __future__ import annotations

import dataclasses

import jax

from til_jax.models.base import Backbone, xavier
from til_jax.registry import BACKBONES


@BACKBONES.register("mf")
@dataclasses.dataclass(frozen=True)
class MF(Backbone):
  name = "mf"
  row_tables = {"user": ("users",), "item": ("pos", "neg")}

  def init(self, key):
    ku, ki = jax.random.split(key)
    return {"user": xavier(ku, (self.n_users, self.dim)), "item": xavier(ki, (self.n_items, self.dim))}

  def represent(self, params, graph):
    return params["user"], params["item"]

  def triplet_repr(self, params, graph, users, pos, neg):
    return params["user"][users], params["item"][pos], params["item"][neg]
