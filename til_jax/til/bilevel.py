"""The bilevel TIL step (paper 4.4, Eq. 12-15), as small pure functions composed with jax.grad.

Per mini-batch (DESIGN.md "TIL, as we implement it"):
  1. state s_t from the current representations under stop-gradient (Eq. 5 or 6);
     weights w_t = post(f(s_t; Lambda)) (Eq. 3)
  2. inner loss J_in(Theta, Lambda) = reduce_t w_t * BPR_t(Theta) + l2 (+ gamma * L_c for MI)
  3. lookahead Theta~(Lambda) = Theta - lr_look * grad_Theta J_in(Theta, Lambda)   (Eq. 15)
  4. outer loss J_out(Theta~) = unweighted mean BPR on the outer batch                (Eq. 12/13)
     grad_Lambda J_out(Theta~(Lambda)) by jax.grad straight through step 3 (Eq. 14)
  5. Lambda <- OPT_Lambda; Theta <- OPT_Theta on J_in with the updated weights.

Data parallelism (`settings.axis_name`, set by `til_jax.parallel`): the batch is split along B
over a named mesh axis; every loss is the global-batch value (psum'ed sums and counts) and every
gradient is pmean'ed, so the lookahead uses the global inner gradient and the hypergradient
differentiates through that collective. With axis_name None (default) nothing changes.

Two ways to the same exact hypergradient (`settings.hypergrad`):
  autodiff  (default) jax.grad of J_out(Theta~(Lambda)) straight through the lookahead:
            reverse over reverse.
  jvp       J_in is linear in w, so with g_out = grad J_out(Theta~) held fixed,
            dJ_out/dw_t = -lr_look * <g_out, d grad_Theta J_in / dw_t>
                        = -lr_look * d/dw_t <grad_Theta J_in(Theta, w), g_out>,
            and <grad_Theta J_in, g_out> is the forward-mode derivative (jax.jvp) of J_in along
            g_out. So jax.grad over Lambda of -lr_look * jvp(J_in)(g_out) gives the exact
            hypergradient without a second-order reverse pass. Equal to `autodiff` to float64
            round-off (tests/test_til.py); on the 2-core CPU it was not faster (benchmarks/).
The clustering loss (MI) does not depend on Lambda: its value and gradient are computed once per
step and shared by the lookahead (as a constant shift) and the real update.

`first_order=True` evaluates the outer gradient at Theta instead of Theta~ (the DARTS-style
first-order approximation): it drops the term lr_look * H_out * (Theta~ - Theta) of the exact
hypergradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from til_jax import objectives
from til_jax.parallel import pmean, psum
from til_jax.til import clustering, states
from til_jax.til.weight_generator import WeightGenerator, activate, postprocess


@dataclasses.dataclass(frozen=True)
class TILSettings:
  """Static settings of the TIL step (hashable; from `config.til`)."""

  interest: str = "uni"          # uni | multi | multi_kmeans
  alpha: float = 1.0             # Eq. 6 scaling of the cluster terms
  gamma: float = 1e-4            # Eq. 11 weight of the clustering loss
  kl_reduction: str = "sum"      # Eq. 9 KL over items: sum (the paper) | mean
  tau: float = 1.0               # Eq. 7 Student-t temperature
  lr_look: float = 1e-3          # Eq. 14-15 lookahead learning rate (the paper's second alpha)
  activation: str = "sigmoid"    # Eq. 3 output: sigmoid | softplus | exp
  weight_norm: str = "none"      # none | mean | clip | softmax
  clip_max: float = 5.0
  temperature: float = 1.0
  reduction: str = "mean"        # mean | sum
  first_order: bool = False
  l2: float = 1e-4
  eta_every: int = 1             # recompute eta_u every N steps (1 = exact at every step)
  hypergrad: str = "autodiff"    # autodiff | jvp: two exact routes to Eq. 14 (module docstring)
  refresh_every: int = 10        # hard memberships (and T) refreshed every N steps
  kmeans_iters: int = 5          # Lloyd iterations per refresh for multi_kmeans
  axis_name: str | None = None   # mesh axis the batch is split over (None: one device)


def generator(model) -> WeightGenerator:
  return WeightGenerator(hidden=model.repr_dim)


def init_generator(key, model):
  """Lambda: the weight generator's parameters for states of size 2 * repr_dim."""
  return generator(model).init(key, jnp.zeros((1, 2 * model.repr_dim)))


def triplet_state(model, params, ctx, batch, settings: TILSettings, prefix: str = ""):
  """s_t [B, 2r] for the batch, computed under stop-gradient (Eq. 5 / Eq. 6)."""
  p = jax.lax.stop_gradient(params)
  users, pos, neg = batch[prefix + "users"], batch[prefix + "pos"], batch[prefix + "neg"]
  u, i, j = model.triplet_repr(p["model"], ctx["graph"], users, pos, neg)
  eta = ctx["eta"][users]
  if settings.interest == "uni":
    return states.uni_interest_state(u, i, j, eta)
  centres = p["centres"] if "centres" in p else ctx["centres"]
  mu_i, mu_j = centres[ctx["membership"][pos]], centres[ctx["membership"][neg]]
  return states.multi_interest_state(u, i, j, eta, mu_i, mu_j, settings.alpha)


def triplet_weights(model, gen_params, s, mask, settings: TILSettings) -> jax.Array:
  """w [B] = post(act(f(s; Lambda)))  (Eq. 3 and the post-processing option)."""
  logits = generator(model).apply(gen_params, s)
  w = activate(logits, settings.activation)
  return postprocess(w, logits, mask, settings.weight_norm, settings.clip_max, settings.temperature,
                     settings.axis_name)


def batch_scores(model, model_params, graph, users, pos, neg):
  u, i, j = model.triplet_repr(model_params, graph, users, pos, neg)
  return model.pair_score(model_params, u, i), model.pair_score(model_params, u, j)


def has_clusters(settings: TILSettings) -> bool:
  return settings.interest == "multi" and settings.gamma != 0.0


def cluster_loss(model, params, ctx, settings: TILSettings) -> jax.Array:
  """gamma * KL(T || Q) over all items (Eq. 9, 11), summed or averaged over items
  (`kl_reduction`); T is the target held since the last refresh."""
  if not has_clusters(settings):
    return jnp.zeros(())
  _, items = model.represent(params["model"], ctx["graph"])
  q = clustering.soft_assignment(items, params["centres"], settings.tau)
  return settings.gamma * clustering.kl_loss(ctx["target"], q, settings.kl_reduction)


def inner_loss(params, weights, model, ctx, batch, settings: TILSettings, clusters: bool = True):
  """J_in(Theta, w) = reduce_t w_t * BPR_t + l2 * ||batch rows||^2 / 2 (+ gamma * L_c).

  The L2 term is a per-row batch mean (`model.l2`), so its global value is the pmean.
  `clusters=False` leaves out gamma * L_c (the caller adds it, see the module docstring)."""
  mp = params["model"]
  pos_s, neg_s = batch_scores(model, mp, ctx["graph"], batch["users"], batch["pos"], batch["neg"])
  loss = objectives.weighted_bpr_loss(pos_s, neg_s, weights, batch["mask"], settings.reduction,
                                      settings.axis_name)
  reg = settings.l2 * pmean(model.l2(mp, ctx["graph"], batch["users"], batch["pos"], batch["neg"]),
                            settings.axis_name)
  return loss + reg + (cluster_loss(model, params, ctx, settings) if clusters else 0.0)


def lookahead(params, weights, model, ctx, batch, settings: TILSettings, shift=None):
  """Theta~ = Theta - lr_look * grad_Theta J_in(Theta, w)   (Eq. 15), a plain SGD step, with the
  global-batch gradient under data parallelism (pmean: see the module docstring).

  `shift`: the clustering loss's gradient (a pytree like `params`), added to grad J_in, which
  then leaves that term out; None: J_in computes everything itself."""
  g = pmean(jax.grad(inner_loss)(params, weights, model, ctx, batch, settings, shift is None),
            settings.axis_name)
  if shift is not None:
    g = jax.tree.map(jnp.add, g, shift)
  return jax.tree.map(lambda p, d: p - settings.lr_look * d, params, g)


def outer_loss(params, model, ctx, batch, axis_name: str | None = None) -> jax.Array:
  """J_out = unweighted mean BPR on the outer batch (keys "o_users", "o_pos", "o_neg")."""
  pos_s, neg_s = batch_scores(model, params["model"], ctx["graph"], batch["o_users"],
                              batch["o_pos"], batch["o_neg"])
  return objectives.bpr_loss(pos_s, neg_s, batch.get("o_mask"), axis_name)


def hypergradient(gen_params, params, s, model, ctx, batch, settings: TILSettings,
                  cluster_grads=None):
  """d J_out(Theta~(Lambda)) / d Lambda (Eq. 14), exact through the lookahead by default.

  `cluster_grads` (MI): the clustering loss's gradient, computed by the caller once per step
  (None: the lookahead computes it). Returns (J_out(Theta~), gradient pytree like gen_params),
  global under data parallelism."""
  ax = settings.axis_name
  if settings.hypergrad not in ("jvp", "autodiff"):
    raise ValueError(f"unknown hypergrad {settings.hypergrad!r}; allowed: jvp, autodiff")

  def weights(gp):
    return triplet_weights(model, gp, s, batch["mask"], settings)

  if settings.hypergrad == "autodiff":
    def objective(gp):
      theta_tilde = lookahead(params, weights(gp), model, ctx, batch, settings, cluster_grads)
      if settings.first_order:
        # Linearise J_out around Theta: J_out(Theta) + <grad J_out(Theta), Theta~ - Theta>.
        g_out = pmean(jax.grad(outer_loss)(params, model, ctx, batch, ax), ax)
        delta = jax.tree.map(lambda a, b: a - b, theta_tilde, params)
        lin = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g_out), jax.tree.leaves(delta)))
        return jax.lax.stop_gradient(outer_loss(params, model, ctx, batch, ax)) + lin
      return outer_loss(theta_tilde, model, ctx, batch, ax)
    value, grads = jax.value_and_grad(objective)(gen_params)
    return value, pmean(grads, ax)

  theta_tilde = lookahead(params, weights(gen_params), model, ctx, batch, settings, cluster_grads)
  if settings.first_order:  # the outer gradient at Theta instead of Theta~
    value = outer_loss(theta_tilde, model, ctx, batch, ax)
    g_out = jax.grad(outer_loss)(params, model, ctx, batch, ax)
  else:
    value, g_out = jax.value_and_grad(outer_loss)(theta_tilde, model, ctx, batch, ax)
  g_out = jax.lax.stop_gradient(pmean(g_out, ax))

  def objective(gp):
    w = weights(gp)
    _, along = jax.jvp(lambda th: inner_loss(th, w, model, ctx, batch, settings, False),
                       (params,), (g_out,))
    return -settings.lr_look * along
  grads = jax.grad(objective)(gen_params)
  return value, pmean(grads, ax)


def til_update(params, opt_state, gen_params, gen_opt_state, model, ctx, batch,
               tx: optax.GradientTransformation, gen_tx: optax.GradientTransformation,
               settings: TILSettings) -> tuple[Any, Any, Any, Any, dict]:
  """One full bilevel step: update Lambda by the hypergradient, then Theta by OPT_Theta on the
  weighted inner loss with the new weights. Returns the new (params, opt_state, gen_params,
  gen_opt_state) and step metrics."""
  s = triplet_state(model, params, ctx, batch, settings)
  # The clustering loss (MI) does not depend on Lambda: its value and gradient once per step,
  # shared by the lookahead and the real update.
  c_loss, c_grads = jnp.zeros(()), None
  if has_clusters(settings):
    c_loss, c_grads = jax.value_and_grad(cluster_loss, argnums=1)(model, params, ctx, settings)
  j_out, g_gen = hypergradient(gen_params, params, s, model, ctx, batch, settings, c_grads)
  upd, gen_opt_state = gen_tx.update(g_gen, gen_opt_state, gen_params)
  gen_params = optax.apply_updates(gen_params, upd)
  w = jax.lax.stop_gradient(triplet_weights(model, gen_params, s, batch["mask"], settings))
  ax = settings.axis_name
  loss, grads = jax.value_and_grad(inner_loss)(params, w, model, ctx, batch, settings, False)
  grads = pmean(grads, ax)
  if c_grads is not None:
    loss = loss + c_loss
    grads = jax.tree.map(jnp.add, grads, c_grads)
  upd, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, upd)
  m = batch["mask"].astype(w.dtype)
  n = jnp.maximum(psum(m.sum(), ax), 1.0)
  w_mean = psum(jnp.sum(w * m), ax) / n
  metrics = {"loss": loss, "outer_loss": j_out, "w_mean": w_mean,
             "w_std": jnp.sqrt(psum(jnp.sum(m * (w - w_mean) ** 2), ax) / n),
             "hypergrad_norm": optax.tree.norm(g_gen), "grad_norm": optax.tree.norm(grads)}
  return params, opt_state, gen_params, gen_opt_state, metrics
