"""Small on-disk datasets the tests write themselves."""

import os

import numpy as np


def write_split(folder: str, n_users: int = 40, n_items: int = 30, per_user: int = 10,
                seed: int = 0) -> str:
  """A random split folder (train/valid/test .txt, `user item item ...`) with planted structure:
  users prefer items of their group, so a model can learn something in a few epochs."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  parts = {"train": [], "valid": [], "test": []}
  for u in range(n_users):
    group = u % 3
    pool = [i for i in range(n_items) if i % 3 == group]
    items = rng.choice(pool, size=min(per_user, len(pool)), replace=False)
    parts["test"].append((u, items[:1]))
    parts["valid"].append((u, items[1:2]))
    parts["train"].append((u, items[2:]))
  for name, rows in parts.items():
    with open(os.path.join(folder, f"{name}.txt"), "w") as f:
      for u, its in rows:
        f.write(" ".join(map(str, [u, *its])) + "\n")
  return folder
