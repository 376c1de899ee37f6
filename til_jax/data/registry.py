"""Datasets by name or path: resolve, read, preprocess, cache, build a `Dataset`.

Resolution order for a named dataset: `config.data.root`, then `$TIL_DATA_DIR`, then the user
cache dir (`~/.cache/til_jax`). `config.data.path` (a pre-split folder) overrides the name.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from til_jax.data.dataset import CSR, Dataset
from til_jax.data.readers import read_split_dir
from til_jax.errors import ConfigError, InputError

# name -> folder name under a data root
FOLDERS = {"gowalla": "gowalla", "amazon-cd": "amazon-cd", "ml-100k": "ml-100k",
           "lastfm-2k": "lastfm-2k", "lastfm-360k": "lastfm-360k"}


def data_roots(root: str | None = None) -> list[str]:
  roots = []
  if root:
    roots.append(root)
  if os.environ.get("TIL_DATA_DIR"):
    roots.append(os.environ["TIL_DATA_DIR"])
  roots.append(os.path.join(os.path.expanduser("~"), ".cache", "til_jax"))
  return roots


def from_split_pairs(name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]],
                     source: str) -> Dataset:
  """Builds a Dataset from raw (users, items) per split, ids used as they are.

  Rule for cold items: a valid/test interaction whose item never occurs in train is dropped
  (it cannot be ranked meaningfully), and the count is logged.
  """
  n_users = 1 + max(int(p[0].max(initial=-1)) for p in parts.values())
  n_items = 1 + max(int(p[1].max(initial=-1)) for p in parts.values())
  if parts["train"][0].size == 0:
    raise InputError(f"{source}: the train split has no interactions")
  train = CSR.from_pairs(*parts["train"], n_users, n_items)
  seen = np.zeros(n_items, bool)
  seen[train.indices] = True
  out = {}
  for part in ("valid", "test"):
    u, i = parts[part]
    keep = seen[i]
    if (~keep).any():
      logging.warning("%s: dropped %d %s interactions with items unseen in train",
                      source, int((~keep).sum()), part)
    out[part] = CSR.from_pairs(u[keep], i[keep], n_users, n_items)
  return Dataset(name=name, n_users=n_users, n_items=n_items, train=train, **out)


def load_split_folder(folder: str, name: str | None = None) -> Dataset:
  return from_split_pairs(name or os.path.basename(os.path.normpath(folder)),
                          read_split_dir(folder), folder)


def resolve(name: str, root: str | None = None, split: str = "split-811-seed0") -> str:
  if name not in FOLDERS:
    raise ConfigError(f"config.data.name: unknown dataset {name!r}; "
                      f"known: {', '.join(sorted(FOLDERS) + ['synthetic'])}")
  tried = []
  for r in data_roots(root):
    cand = os.path.join(r, FOLDERS[name], split)
    tried.append(cand)
    if os.path.isdir(cand):
      return cand
  raise InputError(f"dataset {name!r} not found; looked for {' , '.join(tried)} "
                   "(set config.data.root or TIL_DATA_DIR)")


def load_dataset(data_cfg) -> Dataset:
  """The Dataset a config asks for (`data.path`, else `data.name`)."""
  path = data_cfg.get("path") or ""
  if path:
    return load_split_folder(path, data_cfg.get("name") or None)
  name = data_cfg.name
  if name == "synthetic":
    from til_jax.data.synthetic import make_synthetic
    return make_synthetic(**dict(data_cfg.get("synthetic", {})))
  return load_split_folder(resolve(name, data_cfg.get("root") or None), name)
