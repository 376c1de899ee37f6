"""lastfm x mf, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/lastfm_mf.py:converged --workdir=runs/lastfm_mf
      (:quick, :cpu, :converged select the budgets of configs/default.py; default: the paper's)
Expected (measured 2026-12-01, CPU-2, seed 0, converged budget): BPR stops by patience at epoch
700 (best 600), valid Recall@20 0.2717, in about 40 s.
"""

from configs.base import make


def get_config(arg=None):
  # lr and L2 tuned for BPR on valid (results/grid_lastfm_mf_bpr.csv: lr {1e-4, 1e-3, 1e-2} x
  # L2 {1e-6 .. 1e-2}; results/grid_lastfm_mf_bpr_l2edge.csv: L2 {3e-2, 1e-1}, since the best
  # point was at the grid's edge), shared by every method of the row.
  # TIL-UI's gen_lr and lr_look: the defaults (1e-3, 1e-3) were the best of gen_lr {1e-4, 1e-3,
  # 1e-2} x lr_look {1e-3, 1e-2, 1e-1} on valid (results/grid_lastfm_mf_til_ui.csv and
  # results/grid_lastfm_mf_til_ui_gen_lr1e-4.csv), so nothing is set for them here. TIL-MI's
  # alpha and gamma: the defaults (1, 1e-4) were the best of alpha {0.1, 1, 10} x gamma {1e-4,
  # 1e-2} (results/grid_lastfm_mf_til_mi.csv).
  return make("lastfm", "mf", arg, **{"optim.lr": 1e-3, "optim.l2": 1e-2})
