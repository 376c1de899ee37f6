"""gowalla x mgccf, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/gowalla_mgccf.py --workdir=runs/gowalla_mgccf
      (append :quick or :cpu to the config path for the shorter budgets in configs/default.py)
Expected result and time: see RESULTS.md / BUILD_NOTES.md for the measured runs of this cell;
the paper's protocol (default budget) runs up to 3000 epochs with patience 100.
"""

from configs.base import make


def get_config(arg=None):
  return make("gowalla", "mgccf", arg, **{"model.layers": 1})  # the paper: one propagation layer
