"""lastfm x mf, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/lastfm_mf.py:converged --workdir=runs/lastfm_mf
      (:quick, :cpu, :converged select the budgets of configs/default.py; default: the paper's)
Expected (measured 2026-12-01, CPU-2, seed 0, converged budget): BPR stops by patience at epoch
700 (best 600), valid Recall@20 0.2717, in about 40 s.
"""

from configs.base import make

# The baselines' own knobs, tuned on lastfm x MF on valid (converged budget, seed 0, at the row's
# lr and L2; results/grid_lastfm_mf_<method>.csv and the *_edge.csv points beyond a grid's edge)
# and shared by every lastfm backbone (configs/lastfm_{lightgcn,neumf,mgccf}.py import them). A
# knob two methods share takes the point with the best mean valid Recall@20 over the two.
BASELINE_KNOBS = {
    # T-CE / TCE-BPR (grid_lastfm_mf_tce.csv, _tce_bpr.csv, _tce_drop_edge.csv,
    # _tce_bpr_drop_edge.csv): 0.1 / 30000 steps gives T-CE 0.2633 (its best 0.2642 at 0.1 /
    # 3000) and TCE-BPR 0.2644 (its best 0.2665 at 0.05 / 30000), the best mean of the pair
    "baselines.drop_rate": 0.1, "baselines.num_gradual": 30000,
    # R-CE / RCE-BPR (grid_lastfm_mf_rce.csv, _rce_bpr.csv): 0.25, the best mean of the pair
    # (R-CE 0.2540, its best 0.2553 at 0.1; RCE-BPR 0.2772, its best)
    "baselines.beta": 0.25,
    # AOBPR (grid_lastfm_mf_aobpr.csv, _aobpr_edge.csv): lambda 0.2 |I|, interior of
    # {0.01, 0.05, 0.2, 0.5, 1.0}: 0.2774
    "baselines.aobpr_lambda": 0.2,
    # WBPR (grid_lastfm_mf_wbpr.csv, _wbpr_edge.csv): exponent 0.25 of {0.25, 0.5, 1.0}: 0.2754
    # (exponent 0 is uniform sampling, i.e. BPR: 0.2717 at this lr and L2)
    "baselines.wbpr_exponent": 0.25,
    # PRIS (grid_lastfm_mf_pris.csv, _pris_edge.csv): K 5 of {5, 20, 100}: 0.2589 (0.2581,
    # 0.2576: flat within 1%; K 100 was 0.2563 before its 2026-12-08 rerun)
    "baselines.pris_clusters": 5,
}


# The grids that tuned BPR's lr and L2 for this row (experiments.campaign runs a row, a figure or
# an importance study only on a config that names them).
TUNED = ("results/grid_lastfm_mf_bpr.csv", "results/grid_lastfm_mf_bpr_l2edge.csv")


def get_config(arg=None):
  # lr and L2 tuned for BPR on valid (results/grid_lastfm_mf_bpr.csv: lr {1e-4, 1e-3, 1e-2} x
  # L2 {1e-6 .. 1e-2}; results/grid_lastfm_mf_bpr_l2edge.csv: L2 {3e-2, 1e-1}, since the best
  # point was at the grid's edge), shared by every method of the row.
  # TIL-UI's gen_lr and lr_look: the defaults (1e-3, 1e-3) were the best of gen_lr {1e-4, 1e-3,
  # 1e-2} x lr_look {1e-3, 1e-2, 1e-1} on valid (results/grid_lastfm_mf_til_ui.csv and
  # results/grid_lastfm_mf_til_ui_gen_lr1e-4.csv), so nothing is set for them here. TIL-MI's
  # alpha and gamma: the defaults (1, 1e-4) were the best of alpha {0.1, 1, 10} x gamma {1e-4,
  # 1e-2} (results/grid_lastfm_mf_til_mi.csv).
  return make("lastfm", "mf", arg, **{"optim.lr": 1e-3, "optim.l2": 1e-2, **BASELINE_KNOBS})
