"""Dense Adam vs row-sparse (lazy) Adam at equal epochs: the quality check that decides the
default of `optim.name` (one command, restartable).

  python -m experiments.optimizer_study --cells=gowalla:mf:bpr,amazon-cd:mf:bpr,gowalla:mf:til_ui \
      --optims=adam,sparse_adam --seeds=0,1 --epochs=100

Each (dataset, backbone, method, optimizer, seed) is a cell (an `experiments.main` run) in
<root>/<dataset>_<backbone>/<method>/<optim>/seed<k> that trains exactly `--epochs` epochs
(patience = epochs, so no early stop) with evaluation on valid every `--eval-every` epochs; the
reported test metrics are those of the best valid checkpoint, as everywhere else. After every cell
the CSV (default results/optimizer_study.csv) is rewritten, and at the end a table of the mean
over seeds with the relative difference of each optimizer from the first of `--optims` (the
reference) is printed and written beside the CSV (.md). `sparse_adam` may become the default
only if it is within `--tolerance` (1% relative) of dense Adam, or better, on every row.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

from experiments import common, ledger

BUDGET = "quick"  # epochs, patience and eval.every are overridden from the flags below


def parse_cells(text: str) -> list[tuple[str, str, str]]:
  cells = []
  for part in filter(None, (p.strip() for p in text.split(","))):
    bits = part.split(":")
    if len(bits) != 3:
      raise ValueError(f"--cells: {part!r} is not DATASET:BACKBONE:METHOD")
    cells.append(tuple(bits))
  return cells


def cell_name(dataset, backbone, method, optim, seed) -> str:
  return os.path.join(common.group(dataset, backbone), method, optim, f"seed{seed}")


def overrides(method: str, optim: str, seed: int, epochs: int, every: int) -> dict:
  return {"method": method, "optim.name": optim, "seed": seed, "train.epochs": epochs,
          "train.patience": epochs, "eval.every": every}


def row(root, dataset, backbone, method, optim, seed) -> dict | None:
  workdir = os.path.join(root, cell_name(dataset, backbone, method, optim, seed))
  path = os.path.join(workdir, "metrics.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    m = json.load(f)
  return {"dataset": dataset, "backbone": backbone, "method": method, "optim": optim,
          "seed": seed, "best_epoch": m["best_epoch"], "epochs": m["epochs"],
          "valid_recall@20": m["valid"]["recall@20"], "test_recall@20": m["test"]["recall@20"],
          "test_ndcg@20": m["test"]["ndcg@20"], "train_seconds": m["train_seconds"],
          "commit": common.cell_commit(workdir)}


def report(rows: list[dict], optims: list[str], tolerance: float) -> tuple[str, bool]:
  """Markdown table of means over seeds and relative differences from optims[0]; and whether
  every other optimizer is within `tolerance` (relative) of it, or better, on every row and
  metric (False when a row lacks a seed of either)."""
  ref, ok = optims[0], True
  groups = {}
  for r in rows:
    groups.setdefault((r["dataset"], r["backbone"], r["method"]), {}).setdefault(
        r["optim"], {})[r["seed"]] = r
  out = []
  for key, by_optim in groups.items():
    seeds = sorted(set.intersection(*(set(by_optim.get(o, {})) for o in optims)))
    if not seeds:
      ok = False
      continue
    means = {o: {m: common.mean_std([by_optim[o][s][m] for s in seeds])[0]
                 for m in ("valid_recall@20", "test_recall@20", "test_ndcg@20", "train_seconds")}
             for o in optims}
    for o in optims:
      cells = [*key, o, len(seeds)]
      for m in ("valid_recall@20", "test_recall@20", "test_ndcg@20"):
        rel = means[o][m] / means[ref][m] - 1.0
        if o != ref and rel < -tolerance:
          ok = False
        cells.append(f"{100 * means[o][m]:.2f}" + ("" if o == ref else f" ({100 * rel:+.1f}%)"))
      cells.append(f"{means[o]['train_seconds']:.0f}")
      out.append(cells)
  header = ["dataset", "backbone", "method", "optim", "seeds", "valid R@20 %", "test R@20 %",
            "test N@20 %", "train s"]
  return common.markdown_table(header, out), ok


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cells", default="gowalla:mf:bpr,amazon-cd:mf:bpr,gowalla:mf:til_ui")
  p.add_argument("--optims", default="adam,sparse_adam")
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--epochs", type=int, default=100)
  p.add_argument("--eval-every", type=int, default=5)
  p.add_argument("--tolerance", type=float, default=0.01)
  p.add_argument("--root", default="runs/optimizer_study")
  p.add_argument("--out", default="results/optimizer_study.csv")
  p.add_argument("--report-only", action="store_true", help="report the finished cells, run none")
  a = p.parse_args(argv)
  try:
    cells = parse_cells(a.cells)
  except ValueError as e:
    p.error(str(e))
  optims = [o for o in a.optims.split(",") if o]
  seeds = [int(s) for s in a.seeds.split(",") if s]
  for dataset, backbone, _ in cells:
    if not os.path.exists(common.config_path(dataset, backbone)):
      p.error(f"--cells: no config {common.config_path(dataset, backbone)}")
  os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
  ledger.sync(a.root)

  def rows():
    return [r for c, o, s in itertools.product(cells, optims, seeds)
            if (r := row(a.root, *c, o, s)) is not None]

  if not a.report_only:
    # seed-major, so both optimizers of a seed finish before the next seed starts
    for (dataset, backbone, method), seed, optim in itertools.product(cells, seeds, optims):
      common.run_cell(a.root, cell_name(dataset, backbone, method, optim, seed),
                      common.config_path(dataset, backbone),
                      overrides(method, optim, seed, a.epochs, a.eval_every), BUDGET)
      common.write_csv(a.out, rows())
  done = rows()
  common.write_csv(a.out, done)
  table, ok = report(done, optims, a.tolerance)
  text = (f"# {' vs '.join(optims)} at {a.epochs} epochs\n\n"
          + common.header_lines(BUDGET, "python -m experiments.optimizer_study " + " ".join(
              sys.argv[1:] if argv is None else argv))
          + f"- overriding the budget: train.epochs={a.epochs}, train.patience={a.epochs}, "
          f"eval.every={a.eval_every}\n\n" + table
          + f"\nEvery other optimizer within {100 * a.tolerance:g}% (relative) of {optims[0]} or "
          f"better on every row: {'yes' if ok else 'no'}\n")
  common.write_text(os.path.splitext(a.out)[0] + ".md", text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
