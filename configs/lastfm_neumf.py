"""lastfm x neumf, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/lastfm_neumf.py --workdir=runs/lastfm_neumf
      (append :quick or :cpu to the config path for the shorter budgets in configs/default.py)
Expected result and time: see RESULTS.md / BUILD_NOTES.md for the measured runs of this cell;
the paper's protocol (default budget) runs up to 3000 epochs with patience 100.
"""

from configs.base import make
from configs.lastfm_mf import BASELINE_KNOBS  # tuned on MF, shared by every backbone

TUNED = ("results/grid_lastfm_neumf_bpr.csv", "results/grid_lastfm_neumf_bpr_edge.csv")


def get_config(arg=None):
  # lr and L2 tuned for BPR on valid, shared by every method of the row
  # (results/grid_lastfm_neumf_bpr.csv: lr {1e-3, 1e-2} x L2 {1e-4, 1e-3, 1e-2}, converged
  # budget, seed 0; its best at both edges, so results/grid_lastfm_neumf_bpr_edge.csv: lr
  # {1e-2, 3e-2} x L2 {1e-2, 3e-2}): lr 1e-2, L2 1e-2, valid Recall@20 0.1954 (3e-2 on either
  # axis: 0.1734 / 0.1564). The TIL and baseline knobs are MF's (tuned there).
  return make("lastfm", "neumf", arg, **{"optim.lr": 1e-2, "optim.l2": 1e-2, **BASELINE_KNOBS})
