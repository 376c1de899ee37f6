"""Gowalla x MF, BPR by default (--config.method=til_ui|til_mi|... for the others).

Run:  python -m experiments.main --config=configs/gowalla_mf.py:quick --workdir=runs/gowalla_mf_quick
      (`make run` runs exactly this). Budgets: `:quick` 100 epochs (patience 30), `:cpu` 10
      epochs (the experiments' cpu budget), default = the paper's protocol (3000 epochs, patience 100).
Expected (measured 2026-11-29, BUILD_NOTES.md): the quick budget reaches valid Recall@20 0.157 and
test Recall@20 0.158 / NDCG@20 0.097 at epoch 100 (seed 0), on the 2-core CPU in 1369 s of
training with the CPU shared by other jobs (3.7-4.1 s/epoch measured with one other job running).
"""

from configs.base import make


def get_config(arg=None):
  return make("gowalla", "mf", arg)
