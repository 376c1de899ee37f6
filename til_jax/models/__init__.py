"""Backbones behind one interface (`til_jax.models.base.Backbone`), registered by name.

`register(name, cls)` (or `@register(name)`) adds a backbone; `make_model` builds the one named
by `config.model.name` with the other `config.model` fields as its dataclass fields.
"""

import dataclasses

from til_jax.errors import ConfigError
from til_jax.models.base import Backbone
from til_jax.models.lightgcn import LightGCN
from til_jax.models.mf import MF
from til_jax.models.mgccf import MGCCF
from til_jax.models.neumf import NeuMF
from til_jax.registry import BACKBONES

register = BACKBONES.register


def make_model(model_cfg, n_users: int, n_items: int) -> Backbone:
  """The backbone named by `config.model.name`, built with the config's other fields."""
  name = model_cfg.name
  cls = BACKBONES.get(name)
  kwargs = {k: v for k, v in dict(model_cfg).items() if k != "name"}
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"config.model.{unknown[0]}: not a field of backbone {name!r}; "
                      f"fields: {', '.join(sorted(fields - {'n_users', 'n_items'}))}")
  if kwargs.get("dim", 1) <= 0:
    raise ConfigError(f"config.model.dim: must be positive, got {kwargs['dim']}")
  return cls(n_users=n_users, n_items=n_items, **kwargs)


__all__ = ["BACKBONES", "Backbone", "LightGCN", "MF", "MGCCF", "NeuMF", "make_model", "register"]
