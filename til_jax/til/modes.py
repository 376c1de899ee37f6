"""Named TIL variants: `config.til.mode`.

  default  the config's own til fields (configs/default.py holds the project's defaults)
  paper    exactly the paper's TIL (section 4): sigmoid weights (Eq. 3), mean weighted BPR
           (Eq. 2, 12), no weight post-processing, outer loss = unweighted BPR on a fresh
           training batch (Eq. 13), KL summed over items (Eq. 9), exact hypergradient. Fields
           set here override the config's til fields; the optimizer stays `optim.*` (Adam by
           default, as in the paper; `optim.name=sgd` gives the SGD variant).
  authors  the authors' public code's choices: softplus weights clipped to [0, 5] (its
           `--trick clip` option; the code's default `raw` does not clip), summed weighted
           loss, the inner batch itself as the outer batch (the best variant of the
           importance study, RESULTS.md; its weights end up at the clip).
  authors_code  what the authors' code computes (`til.objective=authors`, til/bilevel.py
           `authors_grads`): the model also trained by the outer loss, the state undetached,
           their optimizers' weight decay; eta_u is held as in this library (their code's user
           mean is live).
"""

from __future__ import annotations

import copy

PAPER = {"activation": "sigmoid", "weight_norm": "none", "reduction": "mean",
         "kl_reduction": "sum", "kl_items": "all", "outer_batch": "fresh", "first_order": False,
         "lookahead": "sgd", "loss_inputs": False, "objective": "paper", "freeze_epoch": 0}
AUTHORS = {"activation": "softplus", "weight_norm": "clip", "clip_max": 5.0, "reduction": "sum",
           "outer_batch": "same"}
# The authors' code's effective objective and optimizers (BUILD_NOTES.md, 2026-12-01): the model
# trained on weighted + lookahead-unweighted BPR with an undetached state, both losses summed, the
# inner batch as the outer one, unclipped softplus weights, lookahead 1e-3, coupled weight decay
# 1e-2 on the model and 1e-1 on the controller. Keys with a dot name fields outside config.til.
AUTHORS_CODE = {"activation": "softplus", "weight_norm": "none", "reduction": "sum",
                "outer_batch": "same", "lr_look": 1e-3, "objective": "authors",
                "gen_weight_decay": 0.1, "optim.weight_decay": 1e-2}
PRESETS = {"paper": PAPER, "authors": AUTHORS, "authors_code": AUTHORS_CODE}
MODES = ("default",) + tuple(PRESETS)


def resolve(config):
  """The config a run computes with: a copy with the mode's fields applied (or `config` itself)."""
  mode = config.til.get("mode", "default") if "til" in config else "default"
  if mode == "default":
    return config
  if mode not in PRESETS:
    from til_jax.errors import ConfigError
    raise ConfigError(f"config.til.mode: {mode!r} is not allowed; allowed: {', '.join(MODES)}")
  c = copy.deepcopy(config)
  with c.unlocked():
    for k, v in PRESETS[mode].items():
      section, field = k.split(".") if "." in k else ("til", k)
      c[section][field] = v
  return c
