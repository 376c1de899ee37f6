"""The share of the embedding rows one training batch reads, MF vs batch-local 1-layer LightGCN.

  python -m benchmarks.row_share --data=gowalla --batch=5000

MF reads the batch's users, positives and negatives. LightGCN with one layer (its batch-local
propagation, til_jax.models.lightgcn) also reads every training neighbour of those users and
items. A row-sparse step pays only where that share is small: the number decides whether a graph
backbone declares row tables (`Backbone.row_tables`). Counting only (no timing).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from configs import default
from til_jax.train import loop


def shares(users, items, n_users, n_items, bu, bp, bn) -> dict:
  ub = np.unique(bu)
  ib = np.unique(np.concatenate([bp, bn]))
  nb_items = np.unique(items[np.isin(users, ub)])      # the batch users' training items
  nb_users = np.unique(users[np.isin(items, ib)])      # the batch items' training users
  ru, ri = np.union1d(ub, nb_users), np.union1d(ib, nb_items)
  return {"mf_users": ub.size / n_users, "mf_items": ib.size / n_items,
          "lightgcn_users": ru.size / n_users, "lightgcn_items": ri.size / n_items,
          "lightgcn_all": (ru.size + ri.size) / (n_users + n_items)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="gowalla")
  p.add_argument("--batch", type=int, default=5000)
  p.add_argument("--trials", type=int, default=3)
  a = p.parse_args(argv)
  c = default.get_config()
  c.data.name = a.data
  ds = loop.build(c)[0]
  users, items = ds.train.to_pairs()
  rng = np.random.default_rng(0)
  print(ds.summary())
  for _ in range(a.trials):
    t = rng.choice(users.size, min(a.batch, users.size), replace=False)
    s = shares(users, items, ds.n_users, ds.n_items, users[t], items[t],
               rng.integers(0, ds.n_items, t.size))
    print(" | ".join(f"{k} {100 * v:.1f}%" for k, v in s.items()), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
