"""The bilevel TIL step (paper 4.4, Eq. 12-15), as small pure functions composed with jax.grad.

Per mini-batch (docs/DESIGN.md "The TIL step"):
  1. state s_t from the current representations under stop-gradient (Eq. 5 or 6);
     weights w_t = post(f(s_t; Lambda)) (Eq. 3)
  2. inner loss J_in(Theta, Lambda) = reduce_t w_t * BPR_t(Theta) + l2 (+ gamma * L_c for MI)
  3. lookahead Theta~(Lambda) = Theta - lr_look * grad_Theta J_in(Theta, Lambda)   (Eq. 15)
  4. outer loss J_out(Theta~) = unweighted mean BPR on the outer batch `outer`      (Eq. 12/13)
     grad_Lambda J_out(Theta~(Lambda)) by jax.grad straight through step 3 (Eq. 14)
  5. Lambda <- OPT_Lambda; Theta <- OPT_Theta on J_in with the updated weights.

Data parallelism (`settings.axis_name`, set by `til_jax.parallel`): the batch is split along B
over a named mesh axis; every loss is the global-batch value (psum'ed sums and counts) and every
gradient is pmean'ed, so the lookahead uses the global inner gradient and the hypergradient
differentiates through that collective. With axis_name None (default) nothing changes.

Three routes to the hypergradient, one small function each, chosen once (`hypergradient_fn`):
  autodiff  (default) jax.grad of J_out(Theta~(Lambda)) straight through the lookahead:
            reverse over reverse.
  jvp       J_in is linear in w, so with g_out = grad J_out(Theta~) held fixed,
            dJ_out/dw_t = -lr_look * <g_out, d grad_Theta J_in / dw_t>
                        = -lr_look * d/dw_t <grad_Theta J_in(Theta, w), g_out>,
            and <grad_Theta J_in, g_out> is the forward-mode derivative (jax.jvp) of J_in along
            g_out. So jax.grad over Lambda of -lr_look * jvp(J_in)(g_out) gives the exact
            hypergradient without a second-order reverse pass. Equal to `autodiff` to float64
            round-off (tests/test_til.py); on the 2-core CPU it was not faster (benchmarks/).
  first_order  (`first_order=True`) the jvp formula with g_out = grad J_out(Theta) taken at Theta
            instead of Theta~ (the DARTS-style first-order approximation): it drops the term
            lr_look * H_out * (Theta~ - Theta) of the exact hypergradient and needs no lookahead;
            its reported outer loss is J_out(Theta).
The clustering loss (MI) does not depend on Lambda: its value and gradient are computed once per
step and shared by the lookahead (as a constant shift) and the real update.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from til_jax import objectives
from til_jax.errors import ConfigError
from til_jax.models.base import triplet_scores
from til_jax.parallel import pmean, psum
from til_jax.til import clustering, states
from til_jax.til.weight_generator import WeightGenerator, activate, postprocess

INTERESTS = {"til_ui": "uni", "til_mi": "multi", "til_mik": "multi_kmeans"}
LOOKAHEADS = ("sgd", "optimizer")
OBJECTIVES = ("paper", "authors")


@dataclasses.dataclass(frozen=True)
class TILSettings:
  """Static settings of the TIL step (hashable). Built from a config by `from_config`: the config
  (configs/default.py) is the one place that holds their default values."""

  interest: str          # a state of til.states.STATES: uni | multi | multi_kmeans
  alpha: float           # Eq. 6 scaling of the cluster terms
  gamma: float           # Eq. 11 weight of the clustering loss
  kl_reduction: str      # Eq. 9 KL over items: sum (the paper) | mean
  kl_items: str          # Eq. 9 over all items (the paper) | batch: the step's distinct items
  tau: float             # Eq. 7 Student-t temperature
  n_clusters: int        # K
  lr_look: float         # Eq. 14-15 lookahead learning rate (the paper's second alpha)
  lookahead: str         # sgd: Eq. 15 at lr_look | optimizer: OPT_Theta's own next step
  objective: str         # paper: Eq. 12-15 | authors: the effective objective of their code
  negatives: int         # N triplets per positive (train.negatives); group_softmax normalises them
  loss_inputs: bool      # the state also holds the triplet's BPR loss and its per-user z-score
  loss_decay: float      # decay of the per-user running loss statistics (loss_inputs)
  activation: str        # Eq. 3 output: sigmoid | softplus | exp
  weight_norm: str       # none | mean | clip | softmax | group_softmax
  clip_max: float
  temperature: float
  reduction: str         # mean | sum
  first_order: bool
  hypergrad: str         # autodiff | jvp: two exact routes to Eq. 14 (module docstring)
  l2: float              # the model's L2 weight (config.optim.l2)
  outer_batch: str       # fresh | valid: the caller passes batch["outer"]; same: the inner batch
  steps_per_epoch: int   # optimiser steps in one epoch of the caller's data
  pretrain_steps: int    # plain BPR steps before the bilevel steps start
  eta_every: int         # eta_u recomputed every N steps; 0: once per epoch (steps_per_epoch)
  refresh_every: int     # hard memberships (and T) refreshed every N steps
  kmeans_iters: int      # Lloyd iterations per refresh for multi_kmeans
  row_lookahead: bool    # the step on the gathered rows of inner + outer batch (til_jax.rows)
  axis_name: str | None = None  # mesh axis the batch is split over (None: one device); runtime

  @classmethod
  def from_config(cls, config, interest: str, steps_per_epoch: int, **overrides) -> TILSettings:
    """Settings from `config.til` (after `til.modes.resolve`) and `config.optim.l2`.

    interest: uni | multi | multi_kmeans, or a method name (til_ui | til_mi | til_mik).
    steps_per_epoch: ceil(training pairs / batch size) of the data the steps run on; it sets
    the once-per-epoch eta refresh and converts the pre-training epochs into steps."""
    c = config.til
    interest = INTERESTS.get(interest, interest)
    if interest not in states.STATES:
      raise ValueError(f"unknown interest {interest!r}; allowed: {', '.join(states.STATES)}")
    # Plain BPR epochs before the bilevel steps: MI/MIK need embeddings worth clustering (paper
    # 5.4); `warmup_epochs` applies to every TIL method.
    epochs = max(int(c.warmup_epochs),
                 int(c.pretrain_epochs) if states.uses_clusters(interest) else 0)
    fields = dict(
        interest=interest, alpha=float(c.alpha), gamma=float(c.gamma), tau=float(c.tau),
        kl_reduction=c.kl_reduction, kl_items=c.kl_items, n_clusters=int(c.n_clusters),
        lr_look=float(c.lr_look), lookahead=c.lookahead, objective=c.objective,
        loss_inputs=bool(c.loss_inputs), negatives=int(config.train.get("negatives", 1)),
        loss_decay=float(c.loss_decay),
        activation=c.activation, weight_norm=c.weight_norm, clip_max=float(c.clip_max),
        temperature=float(c.temperature), reduction=c.reduction, first_order=bool(c.first_order),
        hypergrad=c.hypergrad, l2=float(config.optim.l2), outer_batch=c.outer_batch,
        steps_per_epoch=int(steps_per_epoch), pretrain_steps=epochs * int(steps_per_epoch),
        eta_every=int(c.eta_every), refresh_every=int(c.refresh_every),
        kmeans_iters=int(c.kmeans_iters), row_lookahead=bool(c.row_lookahead))
    settings = cls(**{**fields, **overrides})
    if settings.lookahead not in LOOKAHEADS:
      raise ValueError(f"unknown lookahead {settings.lookahead!r}; allowed: {', '.join(LOOKAHEADS)}")
    if (settings.weight_norm == "group_softmax") != (settings.negatives > 1):
      raise ConfigError("config.til.weight_norm: group_softmax normalises the weights over each "
                        "positive's train.negatives >= 2 negatives, and is the only weight_norm "
                        "for them")
    if settings.objective not in OBJECTIVES:
      raise ConfigError(f"config.til.objective: {settings.objective!r}; allowed: "
                        f"{', '.join(OBJECTIVES)}")
    if settings.objective == "authors" and (settings.first_order or settings.lookahead != "sgd"
                                            or settings.loss_inputs
                                            or settings.hypergrad != "autodiff"):
      raise ConfigError("config.til.objective: 'authors' has its own second-order SGD lookahead "
                        "and the paper's state (til.first_order=False, til.lookahead=sgd, "
                        "til.hypergrad=autodiff, til.loss_inputs=False)")
    if not 0.0 <= settings.loss_decay < 1.0:
      raise ConfigError(f"config.til.loss_decay: {settings.loss_decay} is not in [0, 1)")
    if settings.lookahead == "optimizer" and (settings.first_order or settings.hypergrad != "autodiff"):
      raise ConfigError("config.til.lookahead: 'optimizer' needs til.hypergrad=autodiff and "
                        "til.first_order=False (the jvp and first-order routes assume the SGD "
                        "lookahead, linear in the weights)")
    return settings

  @property
  def eta_period(self) -> int:
    return self.eta_every or self.steps_per_epoch


def steps_per_epoch(n_pairs: int, batch_size: int) -> int:
  """The steps of an epoch that uses every training pair once, the last batch padded."""
  return max(1, math.ceil(n_pairs / batch_size))


def generator(model) -> WeightGenerator:
  return WeightGenerator(hidden=model.repr_dim)


def state_size(model, settings: TILSettings | None = None) -> int:
  """The width of s_t: 2 * repr_dim (Eq. 5, 6), plus 2 with `loss_inputs`."""
  return 2 * model.repr_dim + (2 if settings is not None and settings.loss_inputs else 0)


def init_generator(key, model, settings: TILSettings | None = None):
  """Lambda: the weight generator's parameters for states of size `state_size`."""
  return generator(model).init(key, jnp.zeros((1, state_size(model, settings))))


def loss_features(losses, users, stats) -> jax.Array:
  """[B, 2]: the triplet's BPR loss and its z-score among the user's recent losses,
  (l - m_u) / (sd_u + 1e-6) from stats [n_users, 3] = (count, mean, mean of squares); 0 for a
  user without statistics yet."""
  st = stats[users]
  sd = jnp.sqrt(jnp.maximum(st[:, 2] - st[:, 1] ** 2, 0.0))
  z = jnp.where(st[:, 0] > 0, (losses - st[:, 1]) / (sd + 1e-6), 0.0)
  return jnp.stack([losses, z], axis=-1)


def update_loss_stats(stats, users, losses, mask, decay: float,
                      axis_name: str | None = None) -> jax.Array:
  """Per-user running loss statistics after a batch: each user's batch mean loss l_u (and of
  l^2) enters as m <- decay * m + (1 - decay) * l_u, or sets m on the user's first batch (over
  the global batch under data parallelism)."""
  n = stats.shape[0]
  m = mask.astype(losses.dtype)
  cnt, tot, tot2 = psum((jax.ops.segment_sum(m, users, n),
                         jax.ops.segment_sum(m * losses, users, n),
                         jax.ops.segment_sum(m * losses ** 2, users, n)), axis_name)
  mean, sq = tot / jnp.maximum(cnt, 1.0), tot2 / jnp.maximum(cnt, 1.0)
  seen, new = stats[:, 0] > 0, cnt > 0
  d = jnp.where(seen, decay, 0.0)
  upd = jnp.stack([stats[:, 0] + cnt, d * stats[:, 1] + (1 - d) * mean,
                   d * stats[:, 2] + (1 - d) * sq], axis=-1)
  return jnp.where(new[:, None], upd, stats)


def triplet_state(model, params, ctx, batch, settings: TILSettings, detach: bool = True):
  """s_t [B, 2r] (2r + 2 with `loss_inputs`) for the batch, computed under stop-gradient
  (Eq. 5 / Eq. 6); `detach=False`:
  differentiable in the representations (the authors' code; eta_u stays held)."""
  p = jax.lax.stop_gradient(params) if detach else params
  users, pos, neg = batch["users"], batch["pos"], batch["neg"]
  u, i, j = model.triplet_repr(p["model"], ctx["graph"], users, pos, neg)
  eta = ctx["eta"][users]
  fn, clusters = states.STATES[settings.interest]
  mu_i = mu_j = None
  if clusters:
    centres = p["centres"] if "centres" in p else ctx["centres"]
    mu_i, mu_j = centres[ctx["membership"][pos]], centres[ctx["membership"][neg]]
  s = fn(u, i, j, eta, mu_i, mu_j, settings)
  if settings.loss_inputs:
    losses = objectives.bpr_per_triplet(*triplet_scores(model, p["model"], ctx["graph"], users,
                                                        pos, neg))
    s = jnp.concatenate([s, loss_features(losses, users, ctx["loss_stats"])], axis=-1)
  return s


def triplet_weights(model, gen_params, s, mask, settings: TILSettings) -> jax.Array:
  """w [B] = post(act(f(s; Lambda)))  (Eq. 3 and the post-processing option)."""
  logits = generator(model).apply(gen_params, s)
  w = activate(logits, settings.activation)
  return postprocess(w, logits, mask, settings.weight_norm, settings.clip_max, settings.temperature,
                     settings.axis_name, settings.negatives)


def has_clusters(settings: TILSettings) -> bool:
  return settings.interest == "multi" and settings.gamma != 0.0


def cluster_loss(model, params, ctx, settings: TILSettings) -> jax.Array:
  """gamma * KL(T || Q) (Eq. 9, 11), summed or averaged over items (`kl_reduction`); T is the
  target held since the last refresh. Over all items, or (`kl_items=batch`) over the rows
  ctx["kl_items"] = (ids into the item representations and ctx["target"], valid) names: the
  step's distinct items, whose mean KL estimates the all-item mean (times n_items for "sum")."""
  if not has_clusters(settings):
    return jnp.zeros(())
  _, items = model.represent(params["model"], ctx["graph"])
  if "kl_items" not in ctx:
    return settings.gamma * clustering.cluster_kl(ctx["target"], items, params["centres"],
                                                  settings.tau, settings.kl_reduction)
  ids, valid = ctx["kl_items"]
  take = lambda x: jnp.take(x, ids, axis=0, mode="fill", fill_value=0)
  return settings.gamma * clustering.cluster_kl(take(ctx["target"]), take(items), params["centres"],
                                                settings.tau, settings.kl_reduction, valid,
                                                model.n_items)


def batch_items(batch, n_items: int) -> tuple[jax.Array, jax.Array]:
  """(the distinct items of the batch's positives and negatives [2B] padded with n_items, valid):
  ctx["kl_items"] for `kl_items=batch` on the dense path. Every item the batch reads, as the
  row path's rows_item_inner (a padded triplet repeats a real one, so its items are real)."""
  ids = jnp.concatenate([batch["pos"], batch["neg"]])
  ids = jnp.unique(ids, size=ids.shape[0], fill_value=n_items)
  return ids, ids < n_items


def inner_loss(params, weights, model, ctx, batch, settings: TILSettings, clusters: bool = True):
  """J_in(Theta, w) = reduce_t w_t * BPR_t + l2 * ||batch rows||^2 / 2 (+ gamma * L_c).

  The L2 term is a per-row batch mean (`model.l2`), so its global value is the pmean.
  `clusters=False` leaves out gamma * L_c (the caller adds it, see the module docstring)."""
  mp = params["model"]
  pos_s, neg_s = triplet_scores(model, mp, ctx["graph"], batch["users"], batch["pos"], batch["neg"])
  loss = objectives.weighted_bpr_loss(pos_s, neg_s, weights, batch["mask"], settings.reduction,
                                      settings.axis_name)
  reg = settings.l2 * pmean(model.l2(mp, ctx["graph"], batch["users"], batch["pos"], batch["neg"]),
                            settings.axis_name)
  return loss + reg + (cluster_loss(model, params, ctx, settings) if clusters else 0.0)


def lookahead(params, weights, model, ctx, batch, settings: TILSettings, shift=None):
  """Theta~ = Theta - lr_look * grad_Theta J_in(Theta, w)   (Eq. 15), a plain SGD step, with the
  global-batch gradient under data parallelism (pmean: see the module docstring).

  `lookahead=optimizer`: Theta~ is instead the real OPT_Theta's next step on that gradient,
  ctx["opt"] = (tx, opt_state), with the optimizer's state (Adam's moments and count) held
  constant: for Adam, Theta - lr * m'_hat / (sqrt(v'_hat) + eps) with m' = b1 m + (1 - b1) g and
  v' = b2 v + (1 - b2) g^2, differentiated through g only (set by `til_update`).

  `shift`: the clustering loss's gradient (a pytree like `params`), added to grad J_in, which
  then leaves that term out; None: J_in computes everything itself."""
  g = pmean(jax.grad(inner_loss)(params, weights, model, ctx, batch, settings, shift is None),
            settings.axis_name)
  if shift is not None:
    g = jax.tree.map(jnp.add, g, shift)
  if settings.lookahead == "optimizer":
    tx, opt_state = ctx["opt"]
    upd, _ = tx.update(g, jax.lax.stop_gradient(opt_state), params)
    return optax.apply_updates(params, upd)
  return jax.tree.map(lambda p, d: p - settings.lr_look * d, params, g)


def outer_loss(params, model, ctx, outer, axis_name: str | None = None,
               reduction: str = "mean") -> jax.Array:
  """J_out = unweighted BPR on the outer batch `outer` (users, pos, neg, mask), its mean (Eq.
  13) or, with reduction="sum", its sum (the authors' code)."""
  pos_s, neg_s = triplet_scores(model, params["model"], ctx["graph"], outer["users"], outer["pos"],
                                outer["neg"])
  if reduction == "sum":
    return objectives.weighted_bpr_loss(pos_s, neg_s, 1.0, outer.get("mask"), "sum", axis_name)
  return objectives.bpr_loss(pos_s, neg_s, outer.get("mask"), axis_name)


def hypergrad_autodiff(gen_params, params, s, model, ctx, batch, outer, settings, shift=None):
  """Exact Eq. 14 by jax.grad of J_out(Theta~(Lambda)) through the lookahead."""
  def objective(gp):
    w = triplet_weights(model, gp, s, batch["mask"], settings)
    return outer_loss(lookahead(params, w, model, ctx, batch, settings, shift), model, ctx, outer,
                      settings.axis_name)
  value, grads = jax.value_and_grad(objective)(gen_params)
  return value, pmean(grads, settings.axis_name)


def _along(gen_params, params, g_out, s, model, ctx, batch, settings):
  """grad over Lambda of -lr_look * <grad_Theta J_in(Theta, w(Lambda)), g_out> (forward mode)."""
  def objective(gp):
    w = triplet_weights(model, gp, s, batch["mask"], settings)
    _, along = jax.jvp(lambda th: inner_loss(th, w, model, ctx, batch, settings, False),
                       (params,), (g_out,))
    return -settings.lr_look * along
  return pmean(jax.grad(objective)(gen_params), settings.axis_name)


def hypergrad_jvp(gen_params, params, s, model, ctx, batch, outer, settings, shift=None):
  """Exact Eq. 14 by forward mode: g_out = grad J_out(Theta~) held fixed, then `_along`."""
  ax = settings.axis_name
  w = triplet_weights(model, gen_params, s, batch["mask"], settings)
  theta_tilde = lookahead(params, w, model, ctx, batch, settings, shift)
  value, g_out = jax.value_and_grad(outer_loss)(theta_tilde, model, ctx, outer, ax)
  g_out = jax.lax.stop_gradient(pmean(g_out, ax))
  return value, _along(gen_params, params, g_out, s, model, ctx, batch, settings)


def hypergrad_first_order(gen_params, params, s, model, ctx, batch, outer, settings, shift=None):
  """First-order Eq. 14: the jvp formula with g_out = grad J_out(Theta) (no lookahead)."""
  ax = settings.axis_name
  value, g_out = jax.value_and_grad(outer_loss)(params, model, ctx, outer, ax)
  g_out = jax.lax.stop_gradient(pmean(g_out, ax))
  return value, _along(gen_params, params, g_out, s, model, ctx, batch, settings)


HYPERGRADIENTS = {"autodiff": hypergrad_autodiff, "jvp": hypergrad_jvp}


def hypergradient_fn(settings: TILSettings):
  """The route `settings` ask for: f(gen_params, params, s, model, ctx, batch, outer, settings,
  shift) -> (J_out, d J_out / d Lambda), global under data parallelism."""
  if settings.first_order:
    return hypergrad_first_order
  if settings.hypergrad not in HYPERGRADIENTS:
    raise ValueError(f"unknown hypergrad {settings.hypergrad!r}; allowed: {', '.join(HYPERGRADIENTS)}")
  return HYPERGRADIENTS[settings.hypergrad]


def hypergradient(gen_params, params, s, model, ctx, batch, outer, settings: TILSettings,
                  shift=None):
  """d J_out(Theta~(Lambda)) / d Lambda (Eq. 14) by the route of `settings`: (J_out, grads)."""
  return hypergradient_fn(settings)(gen_params, params, s, model, ctx, batch, outer, settings, shift)


def til_update(params, opt_state, gen_params, gen_opt_state, model, ctx, batch, outer,
               tx: optax.GradientTransformation, gen_tx: optax.GradientTransformation,
               settings: TILSettings, look_tx: optax.GradientTransformation | None = None
               ) -> tuple[Any, Any, Any, Any, dict]:
  """One full bilevel step: update Lambda by the hypergradient, then Theta by OPT_Theta on the
  weighted inner loss with the new weights. Returns the new (params, opt_state, gen_params,
  gen_opt_state) and step metrics. `look_tx`: what `lookahead=optimizer` differentiates, with
  the state of `tx` (None: `tx` itself; give Adam an eps_root > 0, see `TIL.from_config`)."""
  if settings.lookahead == "optimizer":
    ctx = {**ctx, "opt": (look_tx or tx, opt_state)}
  gen_params, gen_opt_state, grads, metrics = bilevel_grads(
      params, gen_params, gen_opt_state, model, ctx, batch, outer, gen_tx, settings)
  upd, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, upd), opt_state, gen_params, gen_opt_state, metrics


def _metrics(loss, j_out, w, mask, g_gen, grads, ax) -> dict:
  m = mask.astype(w.dtype)
  n = jnp.maximum(psum(m.sum(), ax), 1.0)
  w_mean = psum(jnp.sum(w * m), ax) / n
  return {"loss": loss, "outer_loss": j_out, "w_mean": w_mean,
          "w_std": jnp.sqrt(psum(jnp.sum(m * (w - w_mean) ** 2), ax) / n),
          "hypergrad_norm": optax.tree.norm(g_gen), "grad_norm": optax.tree.norm(grads)}


def authors_grads(params, gen_params, gen_opt_state, model, ctx, batch, outer,
                  gen_tx: optax.GradientTransformation, settings: TILSettings):
  """The effective objective of the authors' code (haolun-wu/TIL main_MF.py; BUILD_NOTES.md):
  with the weights w(s(Theta); Lambda) of an undetached state and the old Lambda,
    J_in(Theta, Lambda),  Theta~ = Theta - lr_look grad_Theta J_in  (second order through w too),
    J_out summed over the outer batch when `reduction` is sum (their code sums both losses),
    the model's gradient  d/dTheta [J_in + J_out(Theta~(Theta, Lambda))]  (their "frozen"
    embeddings are not frozen, so the outer loss trains them too),
    Lambda's gradient     d/dLambda J_out(Theta~)  (their controller's J_in gradient is zeroed).
  Same returns as `bilevel_grads`."""
  ax = settings.axis_name

  def weights(th, gp):
    s = triplet_state(model, th, ctx, batch, settings, detach=False)
    return triplet_weights(model, gp, s, batch["mask"], settings)

  def j_in(th, gp):
    return inner_loss(th, weights(th, gp), model, ctx, batch, settings)

  def j_out(th, gp):
    g = pmean(jax.grad(j_in)(th, gp), ax)
    # Their outer loss is summed like the inner one (main_MF.py: out_loss = torch.sum(out_loss)).
    return outer_loss(jax.tree.map(lambda p, d: p - settings.lr_look * d, th, g), model, ctx,
                      outer, ax, settings.reduction)

  loss, g_in = jax.value_and_grad(j_in)(params, gen_params)
  j, (g_out, g_gen) = jax.value_and_grad(j_out, argnums=(0, 1))(params, gen_params)
  grads = pmean(jax.tree.map(jnp.add, g_in, g_out), ax)
  g_gen = pmean(g_gen, ax)
  w = jax.lax.stop_gradient(weights(params, gen_params))
  upd, gen_opt_state = gen_tx.update(g_gen, gen_opt_state, gen_params)
  gen_params = optax.apply_updates(gen_params, upd)
  return gen_params, gen_opt_state, grads, _metrics(loss, j, w, batch["mask"], g_gen, grads, ax)


def bilevel_grads(params, gen_params, gen_opt_state, model, ctx, batch, outer,
                  gen_tx: optax.GradientTransformation, settings: TILSettings):
  """Steps 1-5 of the module docstring up to OPT_Theta: Lambda updated by the hypergradient,
  and the gradient of J_in (with the new weights) for the model's update. Returns (gen_params,
  gen_opt_state, grads like params, metrics). `objective=authors`: `authors_grads`."""
  if settings.objective == "authors":
    return authors_grads(params, gen_params, gen_opt_state, model, ctx, batch, outer, gen_tx,
                         settings)
  s = triplet_state(model, params, ctx, batch, settings)
  # The clustering loss (MI) does not depend on Lambda: its value and gradient once per step,
  # shared by the lookahead and the real update.
  c_loss, c_grads = jnp.zeros(()), None
  if has_clusters(settings):
    c_loss, c_grads = jax.value_and_grad(cluster_loss, argnums=1)(model, params, ctx, settings)
    if "kl_items" in ctx:  # kl_items=batch: each device's own items, averaged over devices
      c_loss, c_grads = pmean(c_loss, settings.axis_name), pmean(c_grads, settings.axis_name)
  j_out, g_gen = hypergradient(gen_params, params, s, model, ctx, batch, outer, settings, c_grads)
  upd, gen_opt_state = gen_tx.update(g_gen, gen_opt_state, gen_params)
  gen_params = optax.apply_updates(gen_params, upd)
  w = jax.lax.stop_gradient(triplet_weights(model, gen_params, s, batch["mask"], settings))
  ax = settings.axis_name
  loss, grads = jax.value_and_grad(inner_loss)(params, w, model, ctx, batch, settings, False)
  grads = pmean(grads, ax)
  if c_grads is not None:
    loss = loss + c_loss
    grads = jax.tree.map(jnp.add, grads, c_grads)
  return gen_params, gen_opt_state, grads, _metrics(loss, j_out, w, batch["mask"], g_gen, grads,
                                                    ax)
