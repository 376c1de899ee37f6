"""lastfm x lightgcn, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/lastfm_lightgcn.py --workdir=runs/lastfm_lightgcn
      (append :quick or :cpu to the config path for the shorter budgets in configs/default.py)
Expected result and time: see RESULTS.md / BUILD_NOTES.md for the measured runs of this cell;
the paper's protocol (default budget) runs up to 3000 epochs with patience 100.
"""

from configs.base import make
from configs.lastfm_mf import BASELINE_KNOBS  # tuned on MF, shared by every backbone

TUNED = ("results/grid_lastfm_lightgcn_bpr.csv",)  # BPR's lr and L2 (see below)


def get_config(arg=None):
  # lr and L2 tuned for BPR on valid, shared by every method of the row
  # (results/grid_lastfm_lightgcn_bpr.csv: lr {1e-3, 1e-2} x L2 {1e-4, 1e-3, 1e-2}, converged
  # budget, seed 0; lr 1e-4 left out, as it was the worst on lastfm x MF,
  # results/grid_lastfm_mf_bpr.csv): lr 1e-3, L2 1e-3, valid Recall@20 0.2794. The TIL and baseline
  # knobs are MF's (tuned there).
  return make("lastfm", "lightgcn", arg, **{"model.layers": 1,  # the paper: one layer
                                            "optim.lr": 1e-3, "optim.l2": 1e-3,
                                            **BASELINE_KNOBS})
