"""Which loses the learned weights' ranking of injected positives: the generator, or the state?

  python -m experiments.weight_drift --config=configs/lastfm_mf.py:converged \
      --config.method=til_ui --config.til.gen_eps=1e-20 --config.til.weight_norm=mean \
      --config.data.noise=pos --early=25 --root=runs/weight_drift/lastfm \
      --out=results/weight_drift_lastfm.csv

Under Noisy-Pos a TIL run's weight AUROC (clean vs injected positives) can peak early and then
fade (issue #18). The weights are the generator's function of the triplet's state, so either
the generator forgets, or the state stops telling the injected positives apart as the model
fits them. This trains the config twice, into <root>/early (stopped after --early epochs; the
epoch budget is the only difference, so its state is the full run's at that epoch) and
<root>/full (to its early stop), both resumable, then scores every (generator, model) pair of
three checkpoints (early, the full run's best, its latest): the weights the generator gives the
training pairs with the model's state (one uniform negative each, as the training loop's AUROC),
their AUROC against the injected flags and their spread. One row each in --out.
Bad input ends with one line `error: ...` and exit code 2 (experiments/cli.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli, common
from til_jax.errors import InputError


def _define_flags() -> None:
  """The command's flags (defined when it runs, so that importing the module for
  `cross_auroc` defines none)."""
  if "early" in flags.FLAGS:
    return
  config_flags.DEFINE_config_file("config", None, "configs/*.py[:arg] of a noisy TIL run",
                                  lock_config=False)
  flags.DEFINE_integer("early", 25, "epochs of the early run")
  flags.DEFINE_string("root", "runs/weight_drift", "folder of the two runs")
  flags.DEFINE_string("out", "", "CSV of the AUROC table (default <root>/weight_drift.csv)")


CHECKPOINTS = (("early", "early", "latest"), ("best", "full", "best"), ("latest", "full", "latest"))


def cross_auroc(config, early_dir: str, full_dir: str) -> list[dict]:
  """Rows (generator, model, their epochs, AUROC, weight std) for every pair of CHECKPOINTS."""
  import numpy as np

  from til_jax.evaluation import auroc
  from til_jax.train import loop
  states, epochs = {}, {}
  for name, run, which in CHECKPOINTS:
    wd = early_dir if run == "early" else full_dir
    dataset, _, method, states[name], consts = loop.restore(config, wd, which)
    with open(os.path.join(wd, "metrics.json")) as f:
      m = json.load(f)
    epochs[name] = m["best_epoch"] if which == "best" else m["epochs"]
  clean = loop.noise_flags(config, dataset, method)
  if clean is None:
    raise InputError("config: no injected positives to score (set config.data.noise=pos) or a "
                     "method without a weight generator")
  users, pos = dataset.train.to_pairs()
  neg = method.sampler.sample(users, np.random.default_rng(0))  # as loop.all_triplet_weights
  rows = []
  for g, _, _ in CHECKPOINTS:
    for m, _, _ in CHECKPOINTS:
      state = states[m].replace(gen_params=states[g].gen_params)
      w = loop.triplet_weights(method, state, consts, users, pos, neg)
      rows.append({"generator": g, "model": m, "generator_epoch": epochs[g],
                   "model_epoch": epochs[m], "auroc": round(float(auroc(w, clean)), 4),
                   "w_std": round(float(w.std()), 4)})
  return rows


def main(argv) -> None:
  del argv
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
  from til_jax.train import loop
  cfg = flags.FLAGS.config
  if cfg is None:
    raise InputError("--config is required, e.g. --config=configs/lastfm_mf.py:converged")
  if flags.FLAGS.early < 1:
    raise InputError(f"--early: must be >= 1, got {flags.FLAGS.early}")
  root = flags.FLAGS.root
  early_dir, full_dir = os.path.join(root, "early"), os.path.join(root, "full")
  full_epochs = int(cfg.train.epochs)
  with cfg.unlocked():
    cfg.train.epochs = flags.FLAGS.early
  loop.train_and_evaluate(cfg, early_dir)
  with cfg.unlocked():
    cfg.train.epochs = full_epochs
  loop.train_and_evaluate(cfg, full_dir)
  rows = cross_auroc(cfg, early_dir, full_dir)
  out = flags.FLAGS.out or os.path.join(root, "weight_drift.csv")
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  common.write_csv(out, rows)
  for r in rows:
    print(f"generator {r['generator']:6s} (epoch {r['generator_epoch']:4d})  model "
          f"{r['model']:6s} (epoch {r['model_epoch']:4d})  AUROC {r['auroc']:.3f}  "
          f"w std {r['w_std']:.3f}")
  print(f"-> {out}")


def run(argv=None):
  _define_flags()
  cli.run(main, argv)


if __name__ == "__main__":
  run()
