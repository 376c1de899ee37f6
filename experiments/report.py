"""Every converged table and figure in results/, from the finished cells; trains nothing.

  python -m experiments.report            # after (or during) the campaign of RESULTS.md

Reads the cell folders the campaign commands write (defaults below) and writes:
  results/table1_converged.csv / .md         Table 1 (experiments.table1 --report-only)
  results/converged_<dataset>_<backbone>/    Figures 3, 5, 6, 7 of each group with cells
                                             (experiments.figures --report-only)
  results/importance_converged_<dataset>_*   the round-2 importance study (#18): clean.csv,
                                             noise.csv, .md and its PNGs
  results/table1_converged_<group>_<point>.* the Table 1 methods at another grid point (--points),
                                             e.g. lastfm MF at BPR's best L2 on a finer grid
A cell that has not finished is left out (the tables say how many seeds each number has), so
this can run beside the campaign. Finished cells come from runs/ and from their record in
results/cells/ (experiments.ledger). A table (with its .md and figures) that would have fewer
rows than the one in results/ (a checkout missing cells) is left as it is, the others are
replaced, and the command says which and exits 2, unless --allow-fewer. The runners' own
summaries in the cell roots (table1.md, importance.md, clean.csv, ...) are rewritten on the way,
as their report stages do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from experiments import common, figures, grid, importance_study, ledger, table1

# the importance study's files in its root -> their suffix in results/importance_converged_<dataset>
IMPORTANCE_FILES = {"clean.csv": "_clean.csv", "noise.csv": "_noise.csv", "importance.md": ".md",
                    "clean.png": "_clean.png", "noise_auroc.png": "_noise_auroc.png"}
FIG_METHODS = {"3": "bpr,pris,tce_bpr,til_ui,til_mi",
               "6": "bpr,pris,rce_bpr,til_ui,til_mi,til_mik",
               "7": "til_ui,til_mik,til_mi"}


def groups(root: str) -> list[tuple[str, str]]:
  """(dataset, backbone) of every Table 1 group folder under root with a finished cell."""
  found = {(r["dataset"], r["backbone"]) for r in table1.collect(root, "converged")}
  return sorted(found)


def _pm(xs: list[float]) -> str:
  mu, sd = common.mean_std(xs)
  return f"{100 * mu:.2f}" + (f" ± {100 * sd:.2f}" if len(xs) > 1 else "")


def _paired(a: dict, b: dict) -> str:
  """Relative difference of the mean and the paired-t p of seed -> value maps a and b."""
  both = sorted(set(a) & set(b))
  if len(both) < 2:
    return "-"
  x, y = [a[s] for s in both], [b[s] for s in both]
  return f"{100 * (sum(x) / sum(y) - 1):+.1f}% (p = {common.paired_ttest(x, y)[1]:.2g})"


def point_report(grid_root: str, table1_root: str, group: str, field: str, value: str,
                 methods: list[str]) -> tuple[list[dict], str]:
  """The Table 1 methods of `group` (e.g. lastfm_mf) trained at one other grid point (e.g.
  optim.l2=0.015; cells of `python -m experiments.grid --root=<grid_root>`): test metrics over
  seeds, each method against BPR at the same point and against its own Table 1 cells (paired)."""
  point = grid.point_name({field: grid._value(value)})  # the folder name grid gave the point
  t1 = {(r["method"], r["seed"]): r for r in table1.collect(table1_root, "converged")
        if common.group(r["dataset"], r["backbone"]) == group}
  cells = {}
  for m in methods:
    for seed, c in common.finished_seeds(os.path.join(grid_root, group, m, point),
                                         f"{group}/{m}/{point}", "converged"):
      cells.setdefault(m, {})[seed] = c
  rows, body = [], []
  for m in [m for m in methods if m in cells]:
    seeds = sorted(cells[m])
    test = {s: cells[m][s]["test"]["recall@20"] for s in seeds}
    for s in seeds:
      c = cells[m][s]
      rows.append({"group": group, field: value, "method": m, "seed": s,
                   "best_epoch": c["best_epoch"], "epochs": c["epochs"], "stop": table1.stop_of(c),
                   "valid_recall@20": c["valid"]["recall@20"], "test_recall@20": test[s],
                   "test_ndcg@20": c["test"]["ndcg@20"]})
    bpr = {s: c["test"]["recall@20"] for s, c in cells.get("bpr", {}).items()}
    own = {s: r["test_recall@20"] for (mm, s), r in t1.items() if mm == m}
    short = sum(table1.stop_of(cells[m][s]) != "patience" for s in seeds)
    body.append([m, len(seeds) if not short else f"{len(seeds)} ({short} not converged)",
                 _pm([cells[m][s]["valid"]["recall@20"] for s in seeds]), _pm(list(test.values())),
                 _pm([cells[m][s]["test"]["ndcg@20"] for s in seeds]),
                 _paired(test, bpr) if m != "bpr" else "", _paired(test, own)])
  text = (f"\n## {group} at {field}={value}\n\n"
          + common.markdown_table(["method", "seeds", "valid R@20", "test R@20", "test N@20",
                                   "vs BPR here", "vs its Table 1 cells"], body))
  return rows, text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--table1-root", default="runs/table1_converged")
  p.add_argument("--figures-root", default="runs/figures_converged")
  p.add_argument("--importance-root", default="runs/importance_converged",
                 help="holds one folder per dataset (importance_study --root=<this>/<dataset>)")
  p.add_argument("--results", default="results")
  p.add_argument("--runs", default="runs", help="the cells' base folder (their record: "
                 "<--results>/cells/<path under it>)")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--grid-root", default="runs/grid_l2fine",
                 help="cells of the --points (experiments.grid --root=<this>)")
  p.add_argument("--points", default="lastfm_mf:optim.l2=0.015",
                 help="GROUP:FIELD=VALUE,... : the Table 1 methods at another grid point")
  p.add_argument("--allow-fewer", action="store_true",
                 help="replace a table by one with fewer rows (e.g. cells left out as stale)")
  a = p.parse_args(argv)
  a.point_specs = []  # (group, field, value) of each --points entry
  for spec in [x for x in a.points.split(",") if x]:
    group, _, fv = spec.partition(":")
    field, _, value = fv.partition("=")
    if not (group and field and value):
      p.error(f"--points: {spec!r} is not GROUP:FIELD=VALUE")
    a.point_specs.append((group, field, value))
  os.makedirs(a.results, exist_ok=True)
  ledger.configure(a.runs, a.results)
  ledger.sync(a.table1_root, a.figures_root, a.importance_root, a.grid_root)
  # Written to a staging folder first; each table (with its .md and figures: `_unit`) is moved
  # into place only if it would not lose rows: a checkout that lacks some cells (their record
  # missing) must not overwrite the tables made from them, and need not hold back the others.
  stage = tempfile.mkdtemp(prefix=".report-", dir=a.results)
  try:
    write_all(a, stage)
    shrunk = [] if a.allow_fewer else _shrinking(stage, a.results)
    held = {_unit(rel) for rel, _, _ in shrunk}
    for here, _, files in os.walk(stage):
      for name in files:
        src = os.path.join(here, name)
        rel = os.path.relpath(src, stage)
        if _unit(rel) in held:
          continue
        dst = os.path.join(a.results, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
  finally:
    shutil.rmtree(stage, ignore_errors=True)
  if shrunk:
    kept = "; ".join(f"{rel}: {old} rows there, {new} from the finished cells"
                     for rel, old, new in shrunk)
    print("error: the finished cells would give tables with fewer rows than results/ holds "
          f"({kept}); those are left as they were, the others replaced. Train the missing cells "
          "(python -m experiments.campaign) or pass --allow-fewer", file=sys.stderr)
    return 2
  print(f"report: tables and figures of the finished cells in {a.results}/ "
        f"(commit {common.commit()})")
  return 0


def _unit(rel: str) -> str:
  """The table a file of write_all's belongs to, replaced or kept as a whole: a folder's files
  (a group's figures), an importance study's files (importance_converged_<dataset>_clean.csv,
  _noise.csv, .md and their PNGs), or a file's stem (table1_converged.csv and .md)."""
  if os.sep in rel:
    return rel.split(os.sep)[0]
  if rel.startswith("importance_converged_"):
    for suffix in IMPORTANCE_FILES.values():
      if rel.endswith(suffix):
        return rel[:-len(suffix)]
  return os.path.splitext(rel)[0]


def _rows(path: str) -> int:
  """The entries of a CSV: its rows, or for a curve (a table with an `epoch` column, e.g. fig6:
  method, epoch, ...) its distinct curves, the values of the columns before `epoch`, so a rerun
  cell that stopped earlier (fewer epochs) is not a lost entry."""
  import csv
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    return 0
  head, body = rows[0], [r for r in rows[1:] if any(x.strip() for x in r)]
  if "epoch" in head:
    return len({tuple(r[:head.index("epoch")]) for r in body})
  return len(body)


def _shrinking(stage: str, results: str) -> list[tuple[str, int, int]]:
  """(file, entries in results/, entries staged) of every staged CSV with fewer entries
  (_rows) than its counterpart in results/."""
  out = []
  for here, _, files in os.walk(stage):
    for name in sorted(f for f in files if f.endswith(".csv")):
      rel = os.path.relpath(os.path.join(here, name), stage)
      old = os.path.join(results, rel)
      if os.path.exists(old) and _rows(old) > _rows(os.path.join(stage, rel)):
        out.append((rel, _rows(old), _rows(os.path.join(stage, rel))))
  return out


def write_all(a, results: str) -> None:
  """Every table and figure of the finished cells into the folder `results`."""
  csv = os.path.join(results, "table1_converged.csv")
  table1.main([f"--root={a.table1_root}", "--budget=converged", "--report-only", f"--csv={csv}"])
  # its command line names the CSV where it lands (results/), not the staging folder
  with open(os.path.join(a.table1_root, "table1.md")) as f:
    text = f.read().replace(csv, os.path.join(a.results, "table1_converged.csv"))
  common.write_text(csv[:-4] + ".md", text)
  for dataset, backbone in groups(a.table1_root):
    out = os.path.join(results, f"converged_{common.group(dataset, backbone)}")
    for fig in ("3", "5", "6", "7"):
      if fig in ("3", "5") and not os.path.isdir(
          os.path.join(a.figures_root, f"fig{fig}", common.group(dataset, backbone))):
        continue  # no cell of this figure was run for the group
      figures.main([f"--fig={fig}", f"--dataset={dataset}", f"--backbone={backbone}",
                    "--budget=converged", f"--seeds={a.seeds}", f"--root={a.figures_root}",
                    f"--table1-root={a.table1_root}", f"--out={out}", "--report-only"]
                   + ([f"--methods={FIG_METHODS[fig]}"] if fig in FIG_METHODS else []))
  for group, field, value in a.point_specs:
    rows, text = point_report(a.grid_root, a.table1_root, group, field, value,
                              list(table1.ALL_METHODS))
    if rows:
      name = os.path.join(results,
                          f"table1_converged_{group}_{grid.point_name({field: grid._value(value)})}")
      common.write_csv(name + ".csv", rows)
      common.write_text(name + ".md", "# Table 1 methods at another grid point\n\n"
                        + common.header_lines("converged", "python -m experiments.report") + text)
  if os.path.isdir(a.importance_root):
    for dataset in sorted(os.listdir(a.importance_root)):
      root = os.path.join(a.importance_root, dataset)
      importance_study.main(["--stage=report", f"--dataset={dataset}", "--budget=converged",
                             f"--root={root}"])
      prefix = os.path.join(results, f"importance_converged_{dataset}")
      for name, suffix in IMPORTANCE_FILES.items():
        src = os.path.join(root, name)
        if os.path.exists(src) and os.path.getsize(src) > 2:  # not an empty stage's "\r\n"
          shutil.copyfile(src, prefix + suffix)


if __name__ == "__main__":
  sys.exit(main())
