"""MovieLens-100K x MF, for the rating-aware case study (paper sec. 5.6.1, Fig. 4).

Run:  python -m experiments.main --config=configs/ml100k_mf.py:quick --workdir=runs/ml100k_mf
"""

from configs.base import make


def get_config(arg=None):
  return make("ml100k", "mf", arg, **{"train.batch_size": 1024, "til.n_clusters": 20})
