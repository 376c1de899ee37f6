"""Config validation: one-line errors naming the field and the allowed values."""

from __future__ import annotations

import json

from til_jax import models, optim  # noqa: F401  (importing models registers the backbones)
from til_jax.errors import ConfigError
from til_jax.registry import BACKBONES, METHODS
from til_jax.til import modes
from til_jax.train import methods  # noqa: F401  (registers BPR, the baselines and TIL)

CHOICES = {
    "til.outer_batch": ("fresh", "same", "valid"),
    "til.activation": ("sigmoid", "softplus", "exp"),
    "til.weight_norm": ("none", "mean", "clip", "softmax", "group_softmax"),
    "train.negative_pick": ("all", "hardest"),
    "til.reduction": ("mean", "sum"),
    "til.mode": modes.MODES,
    "optim.name": optim.MODEL_OPTIMIZERS,
    "til.kl_reduction": ("mean", "sum"),
    "til.kl_items": ("all", "batch"),
    "til.lookahead": ("sgd", "optimizer"),
    "til.objective": ("paper", "authors"),
    "til.hypergrad": ("jvp", "autodiff"),
    "data.noise": ("none", "pos", "neg", "both"),
    "parallel.backend": ("shard_map", "pmap"),
    "eval.metric": None,
}
POSITIVE_INT = ("train.batch_size", "train.negatives", "train.epochs", "train.patience", "eval.every",
                "eval.chunk", "checkpoint.every", "checkpoint.keep", "model.dim", "til.n_clusters",
                "til.refresh_every", "til.freeze_negatives")
NONNEG_INT = ("til.eta_every", "til.freeze_epoch")
POSITIVE_FLOAT = ("optim.lr", "train.loss_scale", "til.lr_look", "til.gen_lr", "til.tau",
                  "til.temperature", "til.gen_eps",   # gen_eps 0: 0/0 where a gradient is 0
                  "til.freeze_temper")
NONNEG_FLOAT = ("optim.l2", "optim.weight_decay", "til.gen_weight_decay",
                "til.gamma", "til.gen_l2", "til.alpha")
# Fields that do not change what a run computes: a resumed run may change them. (parallel:
# any device count or backend computes the same numbers within float32 rounding.)
VOLATILE = ("checkpoint", "train.epochs", "train.patience", "export_embeddings", "budget",
            "parallel", "log", "eval.weight_auroc")
# Fields added after runs were written, with the value that computes what a run computed before
# the field existed: a workdir whose config lacks one resumes when the new config holds it.
BEFORE_FIELD = {
    "optim.weight_decay": 0.0, "train.negatives": 1, "train.negative_pick": "all",
    "train.loss_scale": 1.0, "til.kl_items": "all", "til.lookahead": "sgd",
    "til.objective": "paper", "til.gen_weight_decay": 0.0, "til.loss_inputs": False,
    "til.loss_decay": 0.9, "til.row_lookahead": False, "til.gen_eps": 1e-8,
    "til.freeze_epoch": 0, "til.freeze_temper": 1.0, "til.freeze_negatives": 4,
}


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def validate(config) -> None:
  """Types, ranges and allowed names of every field a run reads; the method and backbone names
  are the registered ones (`til_jax.registry`), built-in or the user's own."""
  METHODS.get(config.get("method"))
  BACKBONES.get(_get(config, "model.name"))
  for field, allowed in CHOICES.items():
    v = _get(config, field)
    if allowed is not None and v is not None and v not in allowed:
      raise ConfigError(f"config.{field}: {v!r} is not allowed; allowed: {', '.join(allowed)}")
  for field in POSITIVE_INT:
    v = _get(config, field)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
      raise ConfigError(f"config.{field}: must be a positive integer, got {v!r}")
  for field in NONNEG_INT:
    v = _get(config, field)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
      raise ConfigError(f"config.{field}: must be an integer >= 0, got {v!r}")
  for field in POSITIVE_FLOAT:
    v = _get(config, field)
    if v is not None and not (float(v) > 0):
      raise ConfigError(f"config.{field}: must be > 0, got {v!r}")
  for field in NONNEG_FLOAT:
    v = _get(config, field)
    if v is not None and not (float(v) >= 0):
      raise ConfigError(f"config.{field}: must be >= 0, got {v!r}")
  ks = _get(config, "eval.ks")
  if not ks or any((not isinstance(k, int)) or k <= 0 for k in ks):
    raise ConfigError(f"config.eval.ks: must be a non-empty list of positive integers, got {ks!r}")
  if config.eval.metric.split("@")[0] not in ("recall", "ndcg", "precision", "hitrate") or \
      int(config.eval.metric.split("@")[1]) not in ks:
    raise ConfigError(f"config.eval.metric: {config.eval.metric!r} must be one of recall|ndcg|"
                      f"precision|hitrate @ a k in config.eval.ks {list(ks)}")
  _validate_parallel(config)
  frac = _get(config, "til.meta_fraction")
  if frac is not None and not 0.0 < float(frac) < 1.0:
    raise ConfigError(f"config.til.meta_fraction: must be in (0, 1), got {frac!r}")


def _validate_parallel(config) -> None:
  """config.parallel: types and ranges here; device counts against the machine and
  batch_size divisibility in til_jax.parallel (they need the devices)."""
  if _get(config, "parallel") is None:
    return
  for field, lo in (("num_devices", 0), ("num_processes", 0), ("process_id", -1)):
    v = _get(config, f"parallel.{field}")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
      raise ConfigError(f"config.parallel.{field}: must be an integer >= {lo}, got {v!r}")
  v = _get(config, "parallel.shard_embeddings")
  if v is not None and not isinstance(v, bool):
    raise ConfigError(f"config.parallel.shard_embeddings: must be True or False, got {v!r}")
  coord = _get(config, "parallel.coordinator")
  if coord is not None and not isinstance(coord, str):
    raise ConfigError(f"config.parallel.coordinator: must be 'host:port' or '', got {coord!r}")
  if coord:
    host, _, port = coord.rpartition(":")
    if not host or not port.isdigit():
      raise ConfigError(f"config.parallel.coordinator: must be 'host:port', got {coord!r}")
    n, pid = _get(config, "parallel.num_processes") or 0, _get(config, "parallel.process_id")
    if n and pid is not None and pid >= n:
      raise ConfigError(f"config.parallel.process_id: {pid} must be < config.parallel."
                        f"num_processes ({n})")


def check_against_data(config, dataset) -> None:
  """What a config asks of the data that only the data can answer (methods check their own)."""
  kmax = max(config.eval.ks)
  if kmax > dataset.n_items:
    raise ConfigError(f"config.eval.ks: k={kmax} is larger than the number of items "
                      f"({dataset.n_items})")


# Config sections that belong to a family of methods; a method reads those it names in its
# class's `config_sections` (BPR: none, TIL: "til"), or only some of their fields, named whole
# (each baseline: its own knobs, e.g. "baselines.pris_clusters"). Read by any method that asks
# for it: til.meta_fraction with train.meta_to_train (BPR on train + meta).
METHOD_SECTIONS = ("til", "baselines")


def relevant(identity: dict) -> dict:
  """The fields of an identity that its method reads: the fields of the method-owned sections
  (METHOD_SECTIONS) that its class's `config_sections` does not name (a section, or a field of
  one), and those its `config_ignores` names, left out (TIL-UI: the clustering's fields). A
  method whose class does not say (no `config_sections`), or a name not registered here, keeps
  every field."""
  name = identity.get("method")
  cls = METHODS.get(name) if isinstance(name, str) and name in METHODS else None
  reads = getattr(cls, "config_sections", None)
  if reads is None:
    return dict(identity)
  ignores = set(getattr(cls, "config_ignores", ()))

  def used(k: str) -> bool:
    if k == "til.meta_fraction" and identity.get("train.meta_to_train"):
      return True
    if not any(k.startswith(s + ".") for s in METHOD_SECTIONS):
      return True
    return k not in ignores and any(k == r or k.startswith(r + ".") for r in reads)
  return {k: v for k, v in identity.items() if used(k)}


def completed(old: dict, new: dict) -> dict:
  """A saved identity `old` with the fields `new` has and `old` lacks at their BEFORE_FIELD
  value (the value that computes what a run computed before the field existed)."""
  return {**{k: BEFORE_FIELD[k] for k in new if k not in old and k in BEFORE_FIELD}, **old}


def identity_diff(old: dict, new: dict) -> list[str]:
  """The fields in which a saved identity `old` and `new` define different runs (sorted):
  those `new`'s method reads, with `old` completed by BEFORE_FIELD."""
  a, b = relevant(completed(old, new)), relevant(new)
  return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def same_identity(old: dict, new: dict) -> bool:
  """Whether a saved identity `old` and `new` define the same run (identity_diff is empty)."""
  return not identity_diff(old, new)


def identity(config) -> dict:
  """The flattened config fields that define what a run computes (VOLATILE ones left out)."""
  flat = {}

  def walk(node, prefix):
    for k, v in node.items():
      key = f"{prefix}{k}"
      if any(key == f or key.startswith(f + ".") for f in VOLATILE):
        continue
      if hasattr(v, "items"):
        walk(v, key + ".")
      else:
        flat[key] = json.loads(json.dumps(v, default=str))
  walk(config, "")
  return flat
