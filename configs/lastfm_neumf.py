"""lastfm x neumf, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/lastfm_neumf.py --workdir=runs/lastfm_neumf
      (append :quick or :cpu to the config path for the shorter budgets in configs/default.py)
Expected result and time: see RESULTS.md / BUILD_NOTES.md for the measured runs of this cell;
the paper's protocol (default budget) runs up to 3000 epochs with patience 100.
"""

from configs.base import make
from configs.lastfm_mf import BASELINE_KNOBS  # tuned on MF, shared by every backbone


def get_config(arg=None):
  return make("lastfm", "neumf", arg, **BASELINE_KNOBS)
