"""Hyper-parameter grids on valid (one command, restartable), for the converged Table 1.

  python -m experiments.grid --dataset=lastfm --backbone=mf --method=bpr --budget=converged \
      --grid="optim.lr=1e-4,1e-3,1e-2;optim.l2=1e-6,1e-5,1e-4,1e-3,1e-2" --seeds=0

Each grid point is a cell (an `experiments.main` run) in <root>/<dataset>_<backbone>/<method>/
<point>/seed<k>; finished cells are read, not rerun, so an interrupted grid resumes. After every
cell `results/grid_<dataset>_<backbone>_<method>.csv` is rewritten: one row per finished cell
with the point's fields, valid Recall@20 / NDCG@20, the best epoch (epochs-to-best), the first
epoch at 94% of the best valid Recall@20 (for TIL-MI's pre-training), the epochs run, the stop
reason and the training seconds. Only valid metrics are written: the choice is made
on valid, the test set stays unseen. `--fixed` sets fields shared by every point (e.g. the tuned
lr and L2 of BPR while a method's own knobs are searched). The best point is printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

from experiments import common, ledger


def parse_grid(text: str) -> dict[str, list]:
  """"a.b=1,2;c=x" -> {"a.b": [1, 2], "c": ["x"]} (numbers parsed, the rest kept as strings)."""
  grid = {}
  for part in filter(None, (p.strip() for p in text.split(";"))):
    if "=" not in part:
      raise ValueError(f"--grid: {part!r} is not FIELD=V1,V2,...")
    field, values = part.split("=", 1)
    grid[field.strip()] = [_value(v.strip()) for v in values.split(",") if v.strip()]
    if not grid[field.strip()]:
      raise ValueError(f"--grid: {field!r} has no values")
  return grid


def _value(v: str):
  for cast in (int, float):
    try:
      return cast(v)
    except ValueError:
      pass
  return {"True": True, "False": False}.get(v, v)


def point_name(point: dict) -> str:
  return "_".join(f"{k.split('.')[-1]}{v}" for k, v in point.items())


# The share of its best valid Recall@20 by which a BPR run's embeddings count as trained enough
# to cluster: TIL-MI's pre-training on a dataset is the first epoch its tuned BPR cell reaches
# it (column epoch_94pct; lastfm x MF at its tuned lr and L2: epoch 250; configs/default.py).
PRETRAIN_PCT = 94


def grid_rows(root: str, points: list[dict], seeds: list[int], fixed: dict, config: str,
              method: str, budget: str) -> list[dict]:
  rows = []
  for point, seed in itertools.product(points, seeds):
    workdir = os.path.join(root, point_name(point), f"seed{seed}")
    path = os.path.join(workdir, "metrics.json")
    overrides = {**fixed, **point, "method": method, "seed": seed}
    if not os.path.exists(path) or common.stale_reason(workdir, config, overrides, budget):
      continue  # not finished, or trained with other fields ([stale] in the run's output)
    with open(path) as f:
      m = json.load(f)
    rows.append({**point, **{f"fixed:{k}": v for k, v in fixed.items()}, "seed": seed,
                 "valid_recall@20": m["valid"]["recall@20"], "valid_ndcg@20": m["valid"]["ndcg@20"],
                 "best_epoch": m["best_epoch"], "epochs": m["epochs"], "stop": m.get("stop", ""),
                 f"epoch_{PRETRAIN_PCT}pct": common.epochs_to_fraction(workdir, PRETRAIN_PCT / 100),
                 "train_seconds": m["train_seconds"], "budget": m.get("budget", ""),
                 "best_phase": common.best_phase(workdir, m)})
  return rows


def write_grid_csv(out: str, rows: list[dict]) -> None:
  """The grid's CSV (results/, committed), written only once a cell has finished: a grid none of
  whose cells is finished in this checkout (stopped before its first, or by a campaign's --end)
  leaves the file it would replace as it is, rather than a header-only one."""
  if rows:
    common.write_csv(out, rows)


def best(rows: list[dict], keys: list[str]) -> dict | None:
  """The point with the highest mean valid Recall@20 over its seeds."""
  by = {}
  for r in rows:
    by.setdefault(tuple(r[k] for k in keys), []).append(r["valid_recall@20"])
  if not by:
    return None
  k, v = max(by.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
  return {**dict(zip(keys, k)), "valid_recall@20": sum(v) / len(v), "seeds": len(v)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", required=True)
  p.add_argument("--backbone", default="mf")
  p.add_argument("--method", default="bpr")
  p.add_argument("--grid", required=True, help="FIELD=V1,V2;FIELD=... (the product is searched)")
  p.add_argument("--fixed", default="", help="FIELD=V;... shared by every point")
  p.add_argument("--seeds", default="0")
  p.add_argument("--budget", default="converged", choices=tuple(common.BUDGETS))
  p.add_argument("--root", default="runs/grid")
  p.add_argument("--out", default="", help="CSV (default results/grid_<dataset>_<backbone>_<method>.csv)")
  a = p.parse_args(argv)
  try:
    grid = parse_grid(a.grid)
    fixed = {k: v[0] for k, v in parse_grid(a.fixed).items()}
  except ValueError as e:
    p.error(str(e))
  config = common.config_path(a.dataset, a.backbone)
  if not os.path.exists(config):
    p.error(f"no config {config} for --dataset {a.dataset} x --backbone {a.backbone}")
  seeds = [int(s) for s in a.seeds.split(",") if s]
  keys = list(grid)
  points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
  root = os.path.join(a.root, common.group(a.dataset, a.backbone), a.method)
  out = a.out or os.path.join("results", f"grid_{common.group(a.dataset, a.backbone)}_{a.method}.csv")
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  ledger.sync(root)
  for point, seed in itertools.product(points, seeds):
    common.run_cell(root, os.path.join(point_name(point), f"seed{seed}"), config,
                    {**fixed, **point, "method": a.method, "seed": seed}, a.budget)
    write_grid_csv(out, grid_rows(root, points, seeds, fixed, config, a.method, a.budget))
  rows = grid_rows(root, points, seeds, fixed, config, a.method, a.budget)
  write_grid_csv(out, rows)
  print(f"{len(rows)} cells in {out}; best on valid: {best(rows, keys)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
