"""TIL learns importance on data with planted noise (til_jax.data.synthetic ground truth)."""

import numpy as np

from configs import synthetic_mf
from til_jax.train import loop


def auroc(score: np.ndarray, label: np.ndarray) -> float:
  """P(score of a random positive > score of a random negative), ties counted half."""
  order = np.argsort(score, kind="stable")
  ranks = np.empty(score.size)
  ranks[order] = np.arange(1, score.size + 1)
  for v in np.unique(score[np.r_[False, np.diff(score[order]) == 0]] if score.size else []):
    ranks[score == v] = ranks[score == v].mean()
  pos = label.astype(bool)
  n1, n0 = pos.sum(), (~pos).sum()
  return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_auroc_helper():
  assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])) == 1.0
  assert auroc(np.array([0.4, 0.3, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
  assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


def test_clean_triplets_get_higher_weights_than_planted_noise(tmp_path):
  """After 30 BPR warm-up epochs and 30 TIL-UI epochs (mean-one weights, fresh outer batch),
  the weights rank clean training triplets above injected noisy positives: AUROC >= 0.7
  (measured 0.739, BUILD_NOTES.md). Paper mode (no normalisation, no warm-up) stays near 0.55."""
  c = synthetic_mf.get_config()
  c.method = "til_ui"
  c.train.epochs = 60
  c.eval.every = 30
  c.til.eta_every = 1
  c.til.warmup_epochs = 30
  c.til.weight_norm = "mean"
  c.til.outer_batch = "fresh"
  c.til.gen_lr = 1e-2
  loop.train_and_evaluate(c, str(tmp_path / "w"))
  dataset, model, method, state, consts = loop.restore(c, str(tmp_path / "w"))
  users, pos, neg, w = loop.all_triplet_weights(method, state, dataset, consts)
  clean = dataset.extras["clean"]
  assert 0.1 < (~clean).mean() < 0.4  # the generator planted noisy positives
  assert auroc(w, clean) >= 0.7
  assert w[clean].mean() > 1.5 * w[~clean].mean()
