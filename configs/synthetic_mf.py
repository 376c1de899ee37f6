"""Synthetic data with planted noisy positives x MF: seconds on a CPU; used by tests.

Run:  python -m experiments.main --config=configs/synthetic_mf.py --workdir=runs/synthetic_mf
"""

from configs.base import make


def get_config(arg=None):
  c = make("synthetic", "mf", arg, **{"train.batch_size": 512, "train.epochs": 30,
                                      "train.patience": 30, "eval.every": 5, "til.n_clusters": 8,
                                      "til.pretrain_epochs": 5, "model.dim": 16})
  return c
