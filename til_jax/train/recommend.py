"""Recommendations from a trained run, in the user's own ids.

`recommend(workdir, k, users=None, exclude_valid=False)` restores the run's best checkpoint
(its config from workdir/config.json), ranks every item for the asked users through the
evaluation's chunked full-ranking scorer (`til_jax.evaluation.top_k`, so any backbone works,
NeuMF and a user's own included), masks each user's training items (and valid items with
`exclude_valid`), and returns rows (user, rank, item, score) with the original ids saved with the
run (workdir/ids.npz). `python -m experiments.recommend` is the command line.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from til_jax.errors import InputError
from til_jax.evaluation import top_k
from til_jax.train import loop


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise InputError(f"{workdir}: no config.json (not a training workdir)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f)["config"])


def user_index(user_ids: np.ndarray, users) -> np.ndarray:
  """Internal indices of the original ids `users` (compared as text); InputError naming the
  unknown ones."""
  by_text = {str(u): i for i, u in enumerate(user_ids.tolist())}
  unknown = [str(u) for u in users if str(u) not in by_text]
  if unknown:
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise InputError(f"unknown user id(s): {', '.join(unknown[:5])}{more} (not in the run's data)")
  return np.asarray([by_text[str(u)] for u in users], np.int64)


def recommend(workdir: str, k: int = 20, users=None, exclude_valid: bool = False,
              chunk: int = 256) -> dict[str, np.ndarray]:
  """{"user", "rank", "item", "score"}: k rows per user (rank 1 = best), original ids; `users`
  are original ids (None: every user)."""
  if int(k) < 1:
    raise InputError(f"--k: must be >= 1, got {k}")
  config = load_config(workdir)
  dataset, model, _, state, consts = loop.restore(config, workdir, "best")
  path = os.path.join(workdir, "ids.npz")
  if os.path.exists(path):
    ids = np.load(path, allow_pickle=False)
    user_ids, item_ids = ids["user_ids"], ids["item_ids"]
  else:  # a run trained before ids.npz existed: the rebuilt data's maps
    user_ids, item_ids = dataset.original_ids()
  if (user_ids.size, item_ids.size) != (dataset.n_users, dataset.n_items):
    raise InputError(f"{workdir}/ids.npz: {user_ids.size} users x {item_ids.size} items, but the "
                     f"data now has {dataset.n_users} x {dataset.n_items}: it changed since training")
  k = min(int(k), dataset.n_items)
  index = np.arange(dataset.n_users) if users is None else user_index(user_ids, users)
  valid = dataset.extras.get("valid_full", dataset.valid)  # outer_batch=valid split valid in two
  exclude = dataset.train.union(valid) if exclude_valid else dataset.train
  mp = state.params["model"]
  reprs = jax.jit(model.represent)(mp, consts["graph"])
  items, scores = top_k(lambda p, u: model.full_scores(p[0], p[1], u), (mp, reprs), index,
                        exclude, k, chunk)
  keep = np.isfinite(scores)  # a user with fewer than k unmasked items gets fewer rows
  return {"user": np.repeat(user_ids[index], k).reshape(-1, k)[keep],
          "rank": np.broadcast_to(np.arange(1, k + 1), items.shape)[keep],
          "item": item_ids[items][keep], "score": scores[keep]}


def write_csv(rows: dict[str, np.ndarray], path: str) -> None:
  """user,rank,item,score (atomically: a temp file, then a rename)."""
  import csv
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["user", "rank", "item", "score"])
    for row in zip(rows["user"].tolist(), rows["rank"].tolist(), rows["item"].tolist(),
                   rows["score"].tolist()):
      w.writerow([row[0], row[1], row[2], f"{row[3]:.6g}"])
  os.replace(tmp, path)
