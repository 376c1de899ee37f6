"""Every converged table and figure in results/, from the finished cells; trains nothing.

  python -m experiments.report            # after (or during) the campaign of RESULTS.md

Reads the cell folders the campaign commands write (defaults below) and writes:
  results/table1_converged.csv / .md         Table 1 (experiments.table1 --report-only)
  results/converged_<dataset>_<backbone>/    Figures 3, 5, 6, 7 of each group with cells
                                             (experiments.figures --report-only)
  results/importance_converged_<dataset>_*   the round-2 importance study (#18): clean.csv,
                                             noise.csv, .md and its PNGs
A cell that has not finished is left out (the tables say how many seeds each number has), so
this can run beside the campaign. The runners' own summaries in the cell roots (table1.md,
importance.md, clean.csv, ...) are rewritten on the way, as their report stages do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from experiments import common, figures, importance_study, table1

FIG_METHODS = {"3": "bpr,pris,tce_bpr,til_ui,til_mi",
               "6": "bpr,pris,rce_bpr,til_ui,til_mi,til_mik",
               "7": "til_ui,til_mik,til_mi"}


def groups(root: str) -> list[tuple[str, str]]:
  """(dataset, backbone) of every Table 1 group folder under root with a finished cell."""
  found = {(r["dataset"], r["backbone"]) for r in table1.collect(root, "converged")}
  return sorted(found)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--table1-root", default="runs/table1_converged")
  p.add_argument("--figures-root", default="runs/figures_converged")
  p.add_argument("--importance-root", default="runs/importance_converged",
                 help="holds one folder per dataset (importance_study --root=<this>/<dataset>)")
  p.add_argument("--results", default="results")
  p.add_argument("--seeds", default="0,1,2")
  a = p.parse_args(argv)
  os.makedirs(a.results, exist_ok=True)
  csv = os.path.join(a.results, "table1_converged.csv")
  table1.main([f"--root={a.table1_root}", "--budget=converged", "--report-only", f"--csv={csv}"])
  shutil.copyfile(os.path.join(a.table1_root, "table1.md"), csv[:-4] + ".md")
  for dataset, backbone in groups(a.table1_root):
    out = os.path.join(a.results, f"converged_{dataset}_{backbone}")
    for fig in ("3", "5", "6", "7"):
      if fig in ("3", "5") and not os.path.isdir(
          os.path.join(a.figures_root, f"fig{fig}", f"{dataset}_{backbone}")):
        continue  # no cell of this figure was run for the group
      figures.main([f"--fig={fig}", f"--dataset={dataset}", f"--backbone={backbone}",
                    "--budget=converged", f"--seeds={a.seeds}", f"--root={a.figures_root}",
                    f"--table1-root={a.table1_root}", f"--out={out}", "--report-only"]
                   + ([f"--methods={FIG_METHODS[fig]}"] if fig in FIG_METHODS else []))
  if os.path.isdir(a.importance_root):
    for dataset in sorted(os.listdir(a.importance_root)):
      root = os.path.join(a.importance_root, dataset)
      importance_study.main(["--stage=report", f"--dataset={dataset}", "--budget=converged",
                             f"--root={root}"])
      prefix = os.path.join(a.results, f"importance_converged_{dataset}")
      for name, suffix in (("clean.csv", "_clean.csv"), ("noise.csv", "_noise.csv"),
                           ("importance.md", ".md"), ("clean.png", "_clean.png"),
                           ("noise_auroc.png", "_noise_auroc.png")):
        src = os.path.join(root, name)
        if os.path.exists(src) and os.path.getsize(src) > 2:  # not an empty stage's "\r\n"
          shutil.copyfile(src, prefix + suffix)
  print(f"report: tables and figures of the finished cells in {a.results}/ "
        f"(commit {common.commit()})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
