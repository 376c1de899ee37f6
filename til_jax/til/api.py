"""TIL for any backbone, as pure functions: the public API for other JAX pipelines.

    from til_jax.til import api
    til = api.TIL(model, api.TILSettings(interest="uni"), optax.adam(1e-3), optax.adam(1e-3))
    state = til.init(jax.random.key(0))
    consts = til.consts(train_users, train_items)            # the training pairs, sorted by user
    step = jax.jit(til.step)
    state = til.refresh_eta(state, consts)                   # eta_u, e.g. once per epoch
    state, metrics = step(state, batch, consts)              # batch: users/pos/neg/mask + o_*

`model` is anything with the backbone interface of `til_jax.models.base` (init, represent,
triplet_repr, pair_score, l2, repr_dim, n_users, n_items). The library's training loop
(`til_jax.train.methods.TIL`) is a thin wrapper over this class.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from til_jax.til import bilevel, clustering, states
from til_jax.til.bilevel import TILSettings
from til_jax.train.state import TrainState

__all__ = ["TIL", "TILSettings"]


@dataclasses.dataclass(frozen=True)
class TIL:
  """TIL-UI / TIL-MI / TIL-MIK (settings.interest = uni | multi | multi_kmeans) for `model`."""

  model: object
  settings: TILSettings
  tx: optax.GradientTransformation
  gen_tx: optax.GradientTransformation
  n_clusters: int = 60

  def init_extra(self, key, params):
    """Adds what TIL needs to the model's `params` ({"model": ...}): (params, gen_params, aux)."""
    gen_params = bilevel.init_generator(key, self.model)
    r = self.model.repr_dim
    aux = {"eta": jnp.zeros((self.model.n_users, r), jnp.float32)}
    if self.settings.interest != "uni":
      aux["membership"] = jnp.zeros((self.model.n_items,), jnp.int32)
      aux["target"] = jnp.zeros((self.model.n_items, self.n_clusters), jnp.float32)
      aux["ready"] = jnp.zeros((), jnp.bool_)
      centres = jnp.zeros((self.n_clusters, r), jnp.float32)
      if self.settings.interest == "multi":
        params = {**params, "centres": centres}  # learned: part of Gamma = [Theta || Phi]
      else:
        aux["centres"] = centres                 # til_mik: recomputed by K-means, not learned
    return params, gen_params, aux

  def init(self, key) -> TrainState:
    """A fresh TrainState: model parameters from model.init, Lambda, both optimizer states."""
    k_model, k_gen = jax.random.split(key)
    params, gen_params, aux = self.init_extra(k_gen, {"model": self.model.init(k_model)})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                      gen_params=gen_params, gen_opt_state=self.gen_tx.init(gen_params), aux=aux)

  def consts(self, train_users, train_items, graph=None) -> dict:
    """Static arrays the step reads: the training pairs (sorted by user) and the model graph."""
    return {"graph": {} if graph is None else graph, "train_users": jnp.asarray(train_users),
            "train_items": jnp.asarray(train_items)}

  def init_clusters(self, state: TrainState, consts, key) -> TrainState:
    """Multi-Interest: K-means (k-means++ seeding) once on the item representations, e.g. after
    pre-training (paper 5.4); sets centres, memberships and the target T."""
    _, items = self.model.represent(state.params["model"], consts["graph"])
    centres = clustering.kmeans(key, items, self.n_clusters)
    params, aux = dict(state.params), dict(state.aux)
    if self.settings.interest == "multi":
      params["centres"] = centres
    else:
      aux["centres"] = centres
    aux["membership"] = clustering.hard_membership(items, centres)
    aux["target"] = clustering.target_distribution(
        clustering.soft_assignment(items, centres, self.settings.tau))
    aux["ready"] = jnp.ones((), jnp.bool_)
    return state.replace(params=params, aux=aux)

  def eta(self, state: TrainState, consts) -> jax.Array:
    """eta_u for every user (Eq. 4), exactly, from the current item representations."""
    items = self.model.represent(jax.lax.stop_gradient(state.params["model"]), consts["graph"])[1]
    return states.user_interest(items, consts["train_users"], consts["train_items"],
                                self.model.n_users)

  def refresh_eta(self, state: TrainState, consts) -> TrainState:
    """Recompute eta_u now: what a caller does once per epoch when `eta_every` is 0."""
    return state.replace(aux={**state.aux, "eta": self.eta(state, consts)})

  def refresh(self, state: TrainState, consts) -> TrainState:
    """eta_u every `eta_every` steps (0: never here; the caller runs `refresh_eta`, e.g. once
    per epoch); memberships, T (and K-means centres for til_mik) every `refresh_every` steps;
    each an exact recomputation from the current representations."""
    s = self.settings
    aux = dict(state.aux)
    model_params = jax.lax.stop_gradient(state.params["model"])

    def item_repr():
      return self.model.represent(model_params, consts["graph"])[1]

    if s.eta_every > 0:
      aux["eta"] = jax.lax.cond(state.step % s.eta_every == 0, lambda _: self.eta(state, consts),
                                lambda _: aux["eta"], None)
    if s.interest == "uni":
      return state.replace(aux=aux)
    learned = s.interest == "multi"
    current = jax.lax.stop_gradient(state.params["centres"]) if learned else aux["centres"]

    def recluster(_):
      items = item_repr()
      centres = current if learned else clustering.lloyd(items, current, s.kmeans_iters)
      q = clustering.soft_assignment(items, centres, s.tau)
      return centres, clustering.hard_membership(items, centres), clustering.target_distribution(q)

    centres, aux["membership"], aux["target"] = jax.lax.cond(
        state.step % s.refresh_every == 0, recluster,
        lambda _: (current, aux["membership"], aux["target"]), None)
    if not learned:
      aux["centres"] = centres
    return state.replace(aux=aux)

  def step(self, state: TrainState, batch, consts):
    """One bilevel step (Eq. 12-15) after the scheduled refreshes. Pure; jit it at the top."""
    state = self.refresh(state, consts)
    ctx = {"graph": consts["graph"], **state.aux}
    params, opt_state, gen_params, gen_opt_state, metrics = bilevel.til_update(
        state.params, state.opt_state, state.gen_params, state.gen_opt_state, self.model, ctx,
        batch, self.tx, self.gen_tx, self.settings)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         gen_params=gen_params, gen_opt_state=gen_opt_state), metrics

  def weights(self, state: TrainState, batch, consts):
    """The weights w [B] the generator currently gives the batch's triplets (after refresh of
    the state, as the next step would see them)."""
    state = self.refresh(self.refresh_eta(state, consts).replace(step=jnp.zeros((), jnp.int32)),
                         consts)
    ctx = {"graph": consts["graph"], **state.aux}
    s = bilevel.triplet_state(self.model, state.params, ctx, batch, self.settings)
    return bilevel.triplet_weights(self.model, state.gen_params, s, batch["mask"], self.settings)
