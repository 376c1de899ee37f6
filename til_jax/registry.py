"""Name -> class registries for the two kinds of plug-in: backbones and training methods.

    from til_jax.models import register          # = BACKBONES.register
    @register("my_mf")
    class MyMF(Backbone): ...

    from til_jax.train.methods import register   # = METHODS.register
    register("my_method", MyMethod)

The package's own backbones and methods register themselves where they are defined; config
validation (`til_jax.train.config_check`) and the builders read the allowed names from here, so
a class registered from outside the package trains through `train_and_evaluate` and the CLI
(`--config.model.name=my_mf`, `--config.method=my_method`) like a built-in one.

A method class may name the method-owned config sections it reads, or single fields of them
(`config_sections`, e.g. ("til",) or ("baselines.beta",); til_jax.train.config_check.
METHOD_SECTIONS), and fields of those it does not read after all (`config_ignores`): a resume
or a finished experiment cell then ignores changes to the others.
A class without the attribute, or a subclass of a built-in defined outside til_jax that does
not set it, is judged on every field.
"""

from __future__ import annotations

from collections.abc import Callable

from til_jax.errors import ConfigError


class Registry:
  """A name -> class table for one config field (`field`, e.g. "model.name")."""

  def __init__(self, kind: str, field: str):
    self.kind, self.field = kind, field
    self._classes: dict[str, type] = {}

  def register(self, name: str, cls: type | None = None) -> Callable | type:
    """`register(name, cls)`, or `@register(name)` as a class decorator. A name registered
    again is replaced (a user may override a built-in)."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

    def add(c: type) -> type:
      self._classes[name] = c
      return c
    return add if cls is None else add(cls)

  def get(self, name: str) -> type:
    if name not in self._classes:
      raise ConfigError(f"config.{self.field}: unknown {self.kind} {name!r}; allowed: "
                        f"{', '.join(self.names())}")
    return self._classes[name]

  def names(self) -> tuple[str, ...]:
    return tuple(sorted(self._classes))

  def __contains__(self, name: str) -> bool:
    return name in self._classes


BACKBONES = Registry("backbone", "model.name")
METHODS = Registry("method", "method")
