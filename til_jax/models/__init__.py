"""Backbones behind one interface (see `til_jax.models.base`)."""

from til_jax.errors import ConfigError
from til_jax.models.base import Backbone
from til_jax.models.mf import MF

REGISTRY: dict[str, type] = {"mf": MF}


def register(name: str, cls: type) -> None:
  REGISTRY[name] = cls


def _load_optional():
  # Graph/MLP backbones live in their own modules; import lazily so a missing one is a clear error.
  for name, mod, cls in (("neumf", "neumf", "NeuMF"), ("lightgcn", "lightgcn", "LightGCN"),
                         ("mgccf", "mgccf", "MGCCF")):
    if name not in REGISTRY:
      try:
        module = __import__(f"til_jax.models.{mod}", fromlist=[cls])
        REGISTRY[name] = getattr(module, cls)
      except ImportError:
        pass


def make_model(model_cfg, n_users: int, n_items: int) -> Backbone:
  """The backbone named by `config.model.name`, built with the config's fields."""
  _load_optional()
  name = model_cfg.name
  if name not in REGISTRY:
    raise ConfigError(f"config.model.name: unknown backbone {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
  kwargs = {k: v for k, v in dict(model_cfg).items() if k != "name"}
  cls = REGISTRY[name]
  import dataclasses
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"config.model.{unknown[0]}: not a field of backbone {name!r}; "
                      f"fields: {', '.join(sorted(fields - {'n_users', 'n_items'}))}")
  if kwargs.get("dim", 1) <= 0:
    raise ConfigError(f"config.model.dim: must be positive, got {kwargs['dim']}")
  return cls(n_users=n_users, n_items=n_items, **kwargs)


__all__ = ["Backbone", "MF", "make_model", "register", "REGISTRY"]
