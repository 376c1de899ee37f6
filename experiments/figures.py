"""Figures 3, 5, 6 and 7 of the paper, each as CSV data and a PNG plot (the `plots` extra):

  python -m experiments.figures --fig=3 --budget=cpu   # Recall@20 drop under Noisy-Pos/Neg/both
  python -m experiments.figures --fig=5 --budget=cpu   # TIL-MI Recall@20 vs number of clusters
  python -m experiments.figures --fig=6                # Recall@20 vs training time per method
  python -m experiments.figures --fig=7 --budget=cpu   # TIL-UI vs TIL-MIK vs TIL-MI

Clean runs are the Table 1 cells (`--table1-root`, the same cell layout and budget), so a
figure reuses what experiments.table1 already trained and vice versa; the other cells go under
<root>/fig<N>/ (restartable); the CSV and PNG go to `--out` (default: the root). Figure 4
(weights vs ratings on ML-100K) is produced by experiments.importance_study (stage ml100k),
which studies the learned weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from experiments import common, ledger

NOISES = ("pos", "neg", "both")


def clean_cell(a, method: str, seed: int, extra: dict | None = None) -> dict | None:
  return common.run_cell(os.path.join(a.table1_root, common.group(a.dataset, a.backbone)),
                         f"{method}/seed{seed}", common.config_path(a.dataset, a.backbone),
                         {"method": method, "seed": seed, **(extra or {})}, a.budget,
                         train=not a.report_only)


def fig3(a) -> list[dict]:
  rows = []
  for seed in a.seeds:
    for m in a.methods:
      base = clean_cell(a, m, seed)
      for noise in a.noises:
        r = common.run_cell(os.path.join(a.root, "fig3", common.group(a.dataset, a.backbone)),
                            f"{noise}/{m}/seed{seed}", common.config_path(a.dataset, a.backbone),
                            {"method": m, "seed": seed, "data.noise": noise, "data.noise_seed": seed},
                            a.budget, train=not a.report_only)
        if base and r and base["test"]["recall@20"] > 0:
          rows.append({"method": m, "seed": seed, "noise": noise,
                       "clean_recall@20": base["test"]["recall@20"],
                       "noisy_recall@20": r["test"]["recall@20"],
                       "drop_pct": 100 * (1 - r["test"]["recall@20"] / base["test"]["recall@20"])})
  common.write_csv(os.path.join(a.out, "fig3.csv"), rows)
  plt = common.pyplot()
  if plt and rows:
    methods = [m for m in a.methods if any(r["method"] == m for r in rows)]
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(a.noises)
    for k, noise in enumerate(a.noises):
      vals = [sum(r["drop_pct"] for r in rows if r["method"] == m and r["noise"] == noise)
              / max(1, sum(1 for r in rows if r["method"] == m and r["noise"] == noise)) for m in methods]
      ax.bar([x + k * width for x in range(len(methods))], vals, width, label=f"Noisy-{noise}")
    ax.set_xticks([x + width for x in range(len(methods))], methods)
    ax.set_ylabel("Recall@20 drop (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "fig3.png"), dpi=120)
  return rows


def own_clusters(dataset: str, backbone: str, budget: str) -> int | None:
  """TIL-MI's K in the (dataset, backbone) config at `budget`: Figure 5's point that is the
  Table 1 cell."""
  fields = common.cell_fields(common.cell_args(common.config_path(dataset, backbone),
                                               {"method": "til_mi"}, budget))
  return (fields or {}).get("til.n_clusters")


def fig5(a) -> list[dict]:
  """TIL-MI at each K; at the config's own K the Table 1 cell is that point."""
  rows = []
  config = common.config_path(a.dataset, a.backbone)
  own = own_clusters(a.dataset, a.backbone, a.budget)
  for seed in a.seeds:
    for k in a.clusters:
      m = clean_cell(a, "til_mi", seed) if k == own else common.run_cell(
          os.path.join(a.root, "fig5", common.group(a.dataset, a.backbone)), f"K{k}/seed{seed}", config,
          {"method": "til_mi", "seed": seed, "til.n_clusters": k}, a.budget, train=not a.report_only)
      if m:
        rows.append({"clusters": k, "seed": seed, "test_recall@20": m["test"]["recall@20"],
                     "valid_recall@20": m["valid"]["recall@20"]})
  common.write_csv(os.path.join(a.out, "fig5.csv"), rows)
  plt = common.pyplot()
  if plt and rows:
    fig, ax = plt.subplots(figsize=(4, 3))
    ks = sorted({r["clusters"] for r in rows})
    ax.plot(ks, [100 * common.mean_std([r["test_recall@20"] for r in rows if r["clusters"] == k])[0]
                 for k in ks], marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("clusters K")
    ax.set_ylabel("test Recall@20 (%)")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "fig5.png"), dpi=120)
  return rows


def fig6(a) -> list[dict]:
  """Valid Recall@20 against cumulative training seconds, from the Table 1 cells' logs."""
  rows = []
  group = os.path.join(a.table1_root, common.group(a.dataset, a.backbone))
  for m in a.methods:
    path = os.path.join(group, m, f"seed{a.seeds[0]}", "metrics.jsonl")
    done = os.path.join(os.path.dirname(path), "metrics.json")
    if not (os.path.exists(path) and os.path.exists(done)):
      continue  # not finished: its curve is not the cell's
    with open(done) as f:
      if json.load(f).get("budget") != a.budget:
        continue
    epochs = {}
    with open(path) as f:  # a resumed run re-logs the epochs after its last checkpoint: keep the last
      for line in f:
        rec = json.loads(line)
        epochs[rec["epoch"]] = rec
    total = 0.0
    for e in sorted(epochs):
      total += epochs[e].get("seconds", 0.0)
      if "valid" in epochs[e]:
        rows.append({"method": m, "epoch": e, "train_seconds": round(total, 2),
                     "valid_recall@20": epochs[e]["valid"]["recall@20"]})
  common.write_csv(os.path.join(a.out, "fig6.csv"), rows)
  plt = common.pyplot()
  if plt and rows:
    fig, ax = plt.subplots(figsize=(5, 3))
    for m in a.methods:
      pts = [r for r in rows if r["method"] == m]
      if pts:
        ax.plot([r["train_seconds"] for r in pts], [100 * r["valid_recall@20"] for r in pts],
                marker="o" if len(pts) <= 30 else None, label=m)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("valid Recall@20 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "fig6.png"), dpi=120)
  return rows


def fig7(a) -> list[dict]:
  rows = []
  for seed in a.seeds:
    for m in ("til_ui", "til_mik", "til_mi"):
      r = clean_cell(a, m, seed)
      if r:
        rows.append({"method": m, "seed": seed, "test_recall@20": r["test"]["recall@20"],
                     "test_ndcg@20": r["test"]["ndcg@20"]})
  common.write_csv(os.path.join(a.out, "fig7.csv"), rows)
  plt = common.pyplot()
  if plt and rows:
    names = [m for m in ("til_ui", "til_mik", "til_mi") if any(r["method"] == m for r in rows)]
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(names, [100 * common.mean_std([r["test_recall@20"] for r in rows if r["method"] == m])[0]
                   for m in names])
    ax.set_ylabel("test Recall@20 (%)")
    lo = min(r["test_recall@20"] for r in rows)
    ax.set_ylim(100 * lo * 0.9, None)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "fig7.png"), dpi=120)
  return rows


FIGS = {"3": fig3, "5": fig5, "6": fig6, "7": fig7}


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--fig", required=True, choices=tuple(FIGS))
  p.add_argument("--dataset", default="gowalla")
  p.add_argument("--backbone", default="mf")
  p.add_argument("--methods", default="bpr,tce,rce_bpr,til_ui,til_mi")
  p.add_argument("--clusters", default="1,5,20,60,100")
  p.add_argument("--noises", default=",".join(NOISES), help="figure 3: which of pos,neg,both")
  p.add_argument("--seeds", default="0")
  p.add_argument("--budget", default="cpu", choices=tuple(common.BUDGETS))
  p.add_argument("--root", default="runs/figures")
  p.add_argument("--table1-root", default="runs/table1")
  p.add_argument("--report-only", action="store_true", help="plot the finished cells, run none")
  p.add_argument("--out", default="", help="folder of the CSV and PNG (default: --root), e.g. "
                 "results/converged_lastfm_mf")
  a = p.parse_args(argv)
  a.methods = [m for m in a.methods.split(",") if m]
  a.clusters = [int(k) for k in a.clusters.split(",") if k]
  a.noises = [n for n in a.noises.split(",") if n]
  if not a.noises or set(a.noises) - set(NOISES):
    p.error(f"--noises: {','.join(a.noises)!r} is not a list of {', '.join(NOISES)}")
  a.seeds = [int(s) for s in a.seeds.split(",") if s]
  a.out = a.out or a.root
  if not os.path.exists(common.config_path(a.dataset, a.backbone)):
    p.error(f"no config {common.config_path(a.dataset, a.backbone)}")
  return a


def main(argv=None) -> int:
  a = parse(argv)
  os.makedirs(a.root, exist_ok=True)
  os.makedirs(a.out, exist_ok=True)
  ledger.sync(a.root, a.table1_root)
  rows = FIGS[a.fig](a)
  print(f"figure {a.fig}: {len(rows)} rows -> {os.path.join(a.out, f'fig{a.fig}.csv')}")
  return 0 if rows else 1


if __name__ == "__main__":
  sys.exit(main())
