"""The two optimizers of a run, from the config: OPT_Theta (the model's) and OPT_Lambda (the
weight generator's, TIL only)."""

from __future__ import annotations

import optax

from til_jax.errors import ConfigError

MODEL_OPTIMIZERS = ("adam", "sparse_adam", "sgd")


def model_optimizer(optim, eps_root: float = 0.0) -> optax.GradientTransformation:
  """OPT_Theta from `config.optim`: Adam (the paper), plain SGD, or sparse_adam, whose state is
  Adam's: the row-sparse step (`til_jax.rows.adam_rows`) updates it on the touched rows only, and
  methods and backbones without a row-sparse step refuse it (til_jax.bpr). `eps_root`: Adam's
  root epsilon (sqrt(nu_hat + eps_root)), > 0 where the step itself is differentiated (TIL's
  `lookahead=optimizer`: at nu = 0 the root's derivative is infinite)."""
  if optim.name not in MODEL_OPTIMIZERS:
    raise ConfigError(f"config.optim.name: {optim.name!r}; allowed: {', '.join(MODEL_OPTIMIZERS)}")
  wd = float(optim.get("weight_decay", 0.0))
  if wd and optim.name == "sparse_adam":
    raise ConfigError("config.optim.weight_decay: decays every row at every step, which a lazy "
                      "(sparse_adam) step does not do; use optim.name=adam or optim.l2")
  tx = (optax.sgd(float(optim.lr)) if optim.name == "sgd"
        else optax.adam(float(optim.lr), eps=float(optim.eps), eps_root=eps_root))
  # weight_decay: coupled L2 (PyTorch Adam's weight_decay, the authors' code): wd * theta added
  # to the gradient of every parameter before the moments
  return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx


def generator_optimizer(til) -> optax.GradientTransformation:
  """OPT_Lambda from `config.til`: Adam at `gen_lr` with epsilon `gen_eps`, AdamW when `gen_l2`
  > 0, and coupled L2 (PyTorch Adam's weight_decay) when `gen_weight_decay` > 0. Adam's step is
  lr * m / (sqrt(v) + eps): where the hypergradient's entries are far below eps (the paper's mean
  losses with lr_look 1e-3 give entries of 1e-13..5e-10), it is about lr * |g| / eps, not lr."""
  lr, l2, eps = float(til.gen_lr), float(til.gen_l2), float(til.get("gen_eps", 1e-8))
  tx = optax.adamw(lr, eps=eps, weight_decay=l2) if l2 else optax.adam(lr, eps=eps)
  wd = float(til.get("gen_weight_decay", 0.0))
  return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
