"""TIL as an optax-style pair over an explicit state: the public API for other JAX pipelines.

    from configs import default
    from til_jax.state import make_consts
    from til_jax.til import bilevel
    from til_jax.til.api import TIL

    config = default.get_config()                 # the one source of every default
    config.method = "til_mi"
    steps = bilevel.steps_per_epoch(len(train_users), config.train.batch_size)
    til = TIL.from_config(config, model, steps_per_epoch=steps)
    state = til.init(jax.random.key(0))           # TrainState: params, both optax states, aux
    consts = make_consts(train_users, train_items)   # the training pairs, sorted by user
    update = jax.jit(til.update)
    for batch in batches:                         # users/pos/neg/mask [B], "outer": the same keys
      state, metrics = update(state, batch, consts)

`update` owns every schedule, on the step counter in `state` (so a resumed state continues it):
  * pre-training: plain BPR for `settings.pretrain_steps` steps (TIL-MI / TIL-MIK: the paper's
    500 epochs; `til.warmup_epochs` for every interest);
  * the first bilevel step of TIL-MI / TIL-MIK: K-means (k-means++ seeding, the key kept in the
    state) on the item representations: centres, memberships, target T;
  * eta_u (Eq. 4) recomputed exactly every `eta_every` steps of the bilevel phase, or once per
    epoch (every `steps_per_epoch` steps) when `eta_every` is 0;
  * hard memberships, T (and TIL-MIK's Lloyd centres) every `refresh_every` steps.
Nothing else is asked of the caller: no refresh calls, no host-side hooks. The library's
training loop (`til_jax.train.loop`, through `til_jax.train.methods`) scans the two branches of
this `update` itself, each over the epochs of its phase (`pretrain_update`, then
`bilevel_update`: pre-training is whole epochs), and draws no outer batch for pre-training. An
outside pipeline that feeds `update` the same batches, with an outer batch at every step
(pre-training too: the cond traces both branches), gets the same numbers (tests/test_til_api.py
checks the state after 3 epochs, rtol 2e-5).

The outer batch (Eq. 13): `settings.outer_batch` "same" uses the inner batch itself and needs no
"outer" key; "fresh" (a second, independent training batch) and "valid" (held-out pairs) read
`batch["outer"]`, a dict of users/pos/neg/mask like the batch.

`model` is anything with the backbone interface of `til_jax.models.base` (init, represent,
triplet_repr, pair_score, l2, repr_dim, n_users, n_items).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from til_jax import objectives, optim, rows
from til_jax.bpr import bpr_step, sparse_bpr_step
from til_jax.errors import ConfigError
from til_jax.models.base import triplet_scores
from til_jax.state import TrainState
from til_jax.til import bilevel, clustering, modes, states
from til_jax.til.bilevel import TILSettings

__all__ = ["TIL", "TILSettings"]

# The bilevel step's metrics that a pre-training step does not have (NaN there).
BILEVEL_ONLY = ("outer_loss", "w_mean", "w_std", "hypergrad_norm")


def _inner_rows(batch, table: str) -> jax.Array:
  """The rows of `table` the inner batch reads (rows_<T>_inner when the index covers an outer
  batch too; see til_jax.rows.add_row_index)."""
  return batch.get(f"rows_{table}_inner", batch[f"rows_{table}"])


CLUSTER_AUX = ("centres", "membership", "target", "ready")  # what init_clusters/recluster set


def _cluster_fields(state: TrainState) -> dict:
  return {"centres": state.params.get("centres"),
          "aux": {k: state.aux[k] for k in CLUSTER_AUX if k in state.aux}}


def _where(pred, fn, state: TrainState, consts) -> TrainState:
  """fn(state, consts) where `pred`, else `state`, for an fn that changes the cluster fields
  only: a lax.cond over those fields alone. A cond whose branches return the whole state makes
  XLA CPU copy the tables every step (BUILD_NOTES.md, 2026-12-03)."""
  new = jax.lax.cond(pred, lambda: _cluster_fields(fn(state, consts)),
                     lambda: _cluster_fields(state))
  params = state.params if new["centres"] is None else {**state.params, "centres": new["centres"]}
  return state.replace(params=params, aux={**state.aux, **new["aux"]})


def _key_data(key) -> jax.Array:
  """A key as raw uint32 data (storable by Orbax): typed keys are unwrapped, raw ones kept."""
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


@dataclasses.dataclass(frozen=True)
class TIL:
  """TIL-UI / TIL-MI / TIL-MIK (settings.interest = uni | multi | multi_kmeans) for `model`, with
  OPT_Theta `tx` and OPT_Lambda `gen_tx`.

  look_tx: the transformation `lookahead=optimizer` differentiates (None: `tx`); from a config
  it is `tx` with Adam's eps_root > 0, so its step has a finite derivative where nu = 0.

  lazy_adam: (lr, eps) of row-sparse Adam (`optim.name=sparse_adam`, `til_jax.rows.adam_rows`):
  the steps run on the rows the inner and outer batch touch, and OPT_Theta moves the moments and
  parameters of the rows the inner batch reads only (`tx` must be optax.adam at the same lr and
  eps: its state is the one updated). None: OPT_Theta is `tx` on the whole tree."""

  model: object
  settings: TILSettings
  tx: optax.GradientTransformation
  gen_tx: optax.GradientTransformation
  lazy_adam: tuple[float, float] | None = None
  look_tx: optax.GradientTransformation | None = None  # lookahead=optimizer: `tx` with eps_root

  def __post_init__(self):
    if self.on_rows and (getattr(self.model, "row_tables", None) is None
                         or (bilevel.has_clusters(self.settings)
                             and self.settings.kl_items == "all")):
      field = ("config.til.row_lookahead" if self.lazy_adam is None
               else "config.optim.name: sparse_adam")
      raise ConfigError(f"{field}: needs a backbone with row tables (mf, neumf), and for til_mi "
                        "til.kl_items=batch (the KL over all items reads every row)")
    if self.on_rows and self.settings.objective != "paper":
      raise ConfigError("config.til.objective: 'authors' runs on the dense path only (its outer "
                        "loss also trains the rows only the outer batch reads)")
    if self.on_rows and self.settings.loss_inputs:
      raise ConfigError("config.til.loss_inputs: runs on the dense path only (not with "
                        "til.row_lookahead or optim.name=sparse_adam)")
    if self.on_rows and self.settings.lookahead != "sgd":
      raise ConfigError("config.til.lookahead: 'optimizer' runs on the dense path only (not with "
                        "til.row_lookahead or optim.name=sparse_adam)")

  @property
  def on_rows(self) -> bool:
    """Whether the steps run on the batch's rows: each batch then carries the host row index
    (`til_jax.rows.add_row_index(..., with_outer=True)`)."""
    return self.settings.row_lookahead or self.lazy_adam is not None

  @classmethod
  def from_config(cls, config, model, steps_per_epoch: int, interest: str | None = None) -> TIL:
    """From a config (configs/default.py's fields; `til.mode` applied here): the settings, Adam
    (or SGD) on `config.optim`, the generator's optimizer on `config.til`. `interest`: uni |
    multi | multi_kmeans or a method name; None: `config.method`."""
    config = modes.resolve(config)
    settings = TILSettings.from_config(config, interest or config.method, steps_per_epoch)
    lazy = ((float(config.optim.lr), float(config.optim.eps))
            if config.optim.name == "sparse_adam" else None)
    look = (optim.model_optimizer(config.optim, eps_root=1e-30)
            if settings.lookahead == "optimizer" else None)
    return cls(model, settings, optim.model_optimizer(config.optim),
               optim.generator_optimizer(config.til), lazy, look)

  def with_axis_name(self, axis_name: str | None) -> TIL:
    """The same TIL with its losses and gradients reduced over the mesh axis `axis_name`."""
    return dataclasses.replace(self, settings=dataclasses.replace(self.settings,
                                                                  axis_name=axis_name))

  # ----------------------------------------------------------------------------- state

  def init(self, key, params=None, *, cluster_key=None) -> TrainState:
    """A fresh TrainState. params: the model's {"model": ...} pytree (None: `model.init` with a
    key split from `key`); Lambda is drawn from `key`; `cluster_key` seeds the K-means++ of
    TIL-MI/MIK at the end of pre-training (None: folded from `key`)."""
    if params is None:
      k_model, key = jax.random.split(key)
      params = {"model": self.model.init(k_model)}
    gen_params = bilevel.init_generator(key, self.model, self.settings)
    r, k = self.model.repr_dim, self.settings.n_clusters
    aux = {"eta": jnp.zeros((self.model.n_users, r), jnp.float32)}
    if self.settings.loss_inputs:   # (count, mean, mean of squares) of each user's BPR losses
      aux["loss_stats"] = jnp.zeros((self.model.n_users, 3), jnp.float32)
    if states.uses_clusters(self.settings.interest):
      aux["membership"] = jnp.zeros((self.model.n_items,), jnp.int32)
      aux["target"] = jnp.zeros((self.model.n_items, k), jnp.float32)
      aux["ready"] = jnp.zeros((), jnp.bool_)
      aux["cluster_key"] = _key_data(jax.random.fold_in(key, 1) if cluster_key is None
                                     else cluster_key)
      centres = jnp.zeros((k, r), jnp.float32)
      if self.settings.interest == "multi":
        params = {**params, "centres": centres}  # learned: part of Gamma = [Theta || Phi]
      else:
        aux["centres"] = centres                 # til_mik: recomputed by K-means, not learned
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                      gen_params=gen_params, gen_opt_state=self.gen_tx.init(gen_params), aux=aux)

  # ------------------------------------------------------------------------- the step

  def update(self, state: TrainState, batch, consts) -> tuple[TrainState, dict]:
    """One step: plain BPR while pre-training, else the scheduled refreshes and one bilevel step
    (Eq. 12-15). Pure; jit it at the top. Metrics: loss, grad_norm, and (NaN while
    pre-training) outer_loss, w_mean, w_std, hypergrad_norm.

    The phase is chosen in the step, by a lax.cond on state.step. A caller that knows it (the
    library's training loop: pre-training is whole epochs) can call the two branches,
    `pretrain_update` and `bilevel_update`, itself: the same numbers, without the cond, which
    on XLA CPU costs about a BPR step (BUILD_NOTES.md, 2026-12-03)."""
    if self.settings.pretrain_steps == 0:
      return self.bilevel_update(state, batch, consts)
    return jax.lax.cond(state.step < self.settings.pretrain_steps,
                        lambda st: self.pretrain_update(st, batch, consts),
                        lambda st: self.bilevel_update(st, batch, consts), state)

  def pretrain_update(self, state: TrainState, batch, consts) -> tuple[TrainState, dict]:
    """`update` while state.step < settings.pretrain_steps: one plain BPR step (lazy Adam on
    the inner batch's rows with `lazy_adam`). Reads no outer batch; the bilevel metrics are NaN."""
    s = self.settings
    if self.lazy_adam is not None:   # on the inner batch's rows (the outer one's are unread)
      b = {**batch, **{f"rows_{t}": _inner_rows(batch, t) for t in self.model.row_tables}}
      state, m = sparse_bpr_step(state, b, self.model, consts["graph"], s.l2, *self.lazy_adam)
    else:
      state, m = bpr_step(state, batch, self.model, consts["graph"], self.tx, s.l2, s.axis_name)
    return state, {**m, **{k: jnp.full((), jnp.nan, m["loss"].dtype) for k in BILEVEL_ONLY}}

  def frozen_update(self, state: TrainState, batch, consts) -> tuple[TrainState, dict]:
    """A step after `freeze`: plain BPR weighted by the frozen weight of each triplet's positive,
    w = state.aux["pair_weight"][batch["pair"]] (mean_b w_b L_BPR, Eq. 2 with w held); the
    generator and eta are left as they are. batch["pair"] [B]: each triplet's index into the
    training pairs the weights were computed for (`epoch_triplets(..., with_pair=True)`).
    Metrics: loss, grad_norm, w_mean / w_std of the batch's weights; outer_loss and
    hypergrad_norm are NaN (no bilevel step)."""
    s = self.settings
    if "pair_weight" not in state.aux:
      raise ValueError("frozen_update reads state.aux['pair_weight']: call `freeze` first")
    w = jnp.take(state.aux["pair_weight"], batch["pair"], axis=0)
    b = {**batch, "weight": w}
    if self.lazy_adam is not None:
      b.update({f"rows_{t}": _inner_rows(batch, t) for t in self.model.row_tables})
      state, m = sparse_bpr_step(state, b, self.model, consts["graph"], s.l2, *self.lazy_adam)
    else:
      state, m = bpr_step(state, b, self.model, consts["graph"], self.tx, s.l2, s.axis_name)
    w_mean = objectives.masked_mean(w, batch["mask"], s.axis_name)
    w_var = objectives.masked_mean(jnp.square(w - w_mean), batch["mask"], s.axis_name)
    nan = jnp.full((), jnp.nan, m["loss"].dtype)
    return state, {**m, "outer_loss": nan, "hypergrad_norm": nan, "w_mean": w_mean,
                   "w_std": jnp.sqrt(w_var)}

  @staticmethod
  def freeze(state: TrainState, pair_weights) -> TrainState:
    """The state with the weights [n_pairs] that `frozen_update` reads from now on (e.g. the
    generator's weights of every training pair, averaged over a few negatives, normalised to
    mean 1: the library's `til.freeze_epoch`). The array's shape must match the one already in
    the state (a state that will be frozen holds ones from its start, so checkpoints keep one
    structure)."""
    w = jnp.asarray(pair_weights, jnp.float32)
    old = state.aux.get("pair_weight")
    if old is not None and old.shape != w.shape:
      raise ValueError(f"pair weights of shape {w.shape}; the state holds {old.shape}")
    return state.replace(aux={**state.aux, "pair_weight": w})

  def bilevel_update(self, state: TrainState, batch, consts) -> tuple[TrainState, dict]:
    """`update` from step settings.pretrain_steps on: the scheduled refreshes and one bilevel
    step (Eq. 12-15)."""
    return self._bilevel(state, batch, self._outer(batch), consts)

  def _outer(self, batch):
    if self.settings.outer_batch == "same":
      return {k: batch[k] for k in ("users", "pos", "neg", "mask")}
    if "outer" not in batch:
      raise ValueError(f"settings.outer_batch={self.settings.outer_batch!r} reads batch['outer'] "
                       "(users/pos/neg/mask of the outer batch); pass it, or use 'same'")
    return batch["outer"]

  def _bilevel(self, state, batch, outer, consts):
    if self.on_rows:
      return self._bilevel_rows(state, batch, outer, consts)
    state = self._scheduled(state, consts)
    ctx = {"graph": consts["graph"], **state.aux}
    if self.settings.kl_items == "batch" and bilevel.has_clusters(self.settings):
      ctx["kl_items"] = bilevel.batch_items(batch, self.model.n_items)
    params, opt_state, gen_params, gen_opt_state, metrics = bilevel.til_update(
        state.params, state.opt_state, state.gen_params, state.gen_opt_state, self.model, ctx,
        batch, outer, self.tx, self.gen_tx, self.settings, self.look_tx)
    aux = state.aux
    if self.settings.loss_inputs:   # this batch's losses (before the step) join the statistics
      mp = jax.lax.stop_gradient(state.params["model"])
      losses = objectives.bpr_per_triplet(*triplet_scores(
          self.model, mp, consts["graph"], batch["users"], batch["pos"], batch["neg"]))
      aux = {**aux, "loss_stats": bilevel.update_loss_stats(
          aux["loss_stats"], batch["users"], losses, batch["mask"], self.settings.loss_decay,
          self.settings.axis_name)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         gen_params=gen_params, gen_opt_state=gen_opt_state, aux=aux), metrics

  def _bilevel_rows(self, state, batch, outer, consts):
    """The same bilevel step on the rows the inner and outer batch touch (`til.row_lookahead`):
    the tables, eta and the memberships gathered at those rows (host index: rows_<T> and the
    inv_<k> of batch and batch["outer"]), so the lookahead and the second-order pass never touch
    the whole table. Dense OPT_Theta: the gradient is scattered back (the dense step's
    gradient); lazy Adam (`optim.name=sparse_adam`): it moves the rows the inner batch reads."""
    state = self._scheduled(state, consts)
    tables = self.model.row_tables
    idx = {t: batch[f"rows_{t}"] for t in tables}
    view, inner = rows.row_view(state.params["model"], batch, tables)
    if self.settings.outer_batch == "same":
      outer_v = {k: inner[k] for k in ("users", "pos", "neg", "mask")}
    else:
      outer_v = {**outer, **{k: outer[f"inv_{k}"] for ks in tables.values() for k in ks}}
    table_of = {k: t for t, ks in tables.items() for k in ks}
    aux = dict(state.aux)
    aux["eta"] = jnp.take(aux["eta"], idx[table_of["users"]], axis=0, mode="fill", fill_value=0)
    item_rows = idx[table_of["pos"]]
    if "membership" in aux:
      aux["membership"] = jnp.take(aux["membership"], item_rows, mode="fill", fill_value=0)
    if bilevel.has_clusters(self.settings):   # kl_items=batch: the KL over the inner batch's items
      aux["target"] = jnp.take(aux["target"], item_rows, axis=0, mode="fill", fill_value=0)
      inner_items = _inner_rows(batch, table_of["pos"])
      aux["kl_items"] = (jnp.arange(item_rows.shape[0]), inner_items < self.model.n_items)
    params_v = {**state.params, "model": view}
    gen_params, gen_opt_state, g_view, metrics = bilevel.bilevel_grads(
        params_v, state.gen_params, state.gen_opt_state, self.model,
        {"graph": consts["graph"], **aux}, inner, outer_v, self.gen_tx, self.settings)
    if self.lazy_adam is not None:
      moved = {"model": {t: _inner_rows(batch, t) for t in tables}}  # the inner gradient's rows
      lr, eps = self.lazy_adam
      params, opt_state = rows.adam_rows(g_view, state.opt_state, state.params, moved, lr, eps=eps)
    else:
      grads = rows.scatter_grads(g_view, state.params, {"model": idx})
      upd, opt_state = self.tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, upd)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state, gen_params=gen_params,
                         gen_opt_state=gen_opt_state), metrics

  # -------------------------------------------------------------------- the schedules

  def _scheduled(self, state: TrainState, consts) -> TrainState:
    """What is due at this step, in order: K-means initialisation (MI/MIK, once), eta_u, and the
    membership refresh; each an exact recomputation from the current representations."""
    s = self.settings
    if states.uses_clusters(s.interest):
      state = _where(jnp.logical_not(state.aux["ready"]), self.init_clusters, state, consts)
    due = (state.step - s.pretrain_steps) % s.eta_period == 0
    eta = jax.lax.cond(due, lambda: self.eta(state, consts), lambda: state.aux["eta"])
    state = state.replace(aux={**state.aux, "eta": eta})
    if not states.uses_clusters(s.interest):
      return state
    return _where(state.step % s.refresh_every == 0, self.recluster, state, consts)

  def _items(self, state, consts) -> jax.Array:
    return self.model.represent(jax.lax.stop_gradient(state.params["model"]), consts["graph"])[1]

  def eta(self, state: TrainState, consts) -> jax.Array:
    """eta_u for every user (Eq. 4), exactly, from the current item representations."""
    return states.user_interest(self._items(state, consts), consts["train_users"],
                                consts["train_items"], self.model.n_users)

  def init_clusters(self, state: TrainState, consts) -> TrainState:
    """Multi-Interest: K-means (k-means++ seeding from the state's key) on the item
    representations (paper 5.4); sets centres, memberships and the target T."""
    items = self._items(state, consts)
    key = jax.random.wrap_key_data(state.aux["cluster_key"])
    centres = clustering.kmeans(key, items, self.settings.n_clusters)
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

  def recluster(self, state: TrainState, consts) -> TrainState:
    """Hard memberships and T from the current centres (TIL-MIK: after `kmeans_iters` Lloyd
    iterations from them)."""
    s = self.settings
    items = self._items(state, consts)
    aux = dict(state.aux)
    if s.interest == "multi":
      centres = jax.lax.stop_gradient(state.params["centres"])
    else:
      centres = aux["centres"] = clustering.lloyd(items, aux["centres"], s.kmeans_iters)
    aux["membership"] = clustering.hard_membership(items, centres)
    aux["target"] = clustering.target_distribution(clustering.soft_assignment(items, centres, s.tau))
    return state.replace(aux=aux)

  # ------------------------------------------------------------------------- analysis

  def refreshed(self, state: TrainState, consts) -> TrainState:
    """The state with eta_u and the memberships recomputed from the current representations."""
    state = state.replace(aux={**state.aux, "eta": self.eta(state, consts)})
    if states.uses_clusters(self.settings.interest):
      state = self.recluster(state, consts)
    return state

  def weights(self, state: TrainState, batch, consts, refresh: bool = True) -> jax.Array:
    """The weights w [B] the generator gives the batch's triplets now, with eta_u and the
    memberships recomputed from the current representations (`refresh=False`: as `state`
    holds them, e.g. once `refreshed` for many batches)."""
    if refresh:
      state = self.refreshed(state, consts)
    ctx = {"graph": consts["graph"], **state.aux}
    s = bilevel.triplet_state(self.model, state.params, ctx, batch, self.settings)
    return bilevel.triplet_weights(self.model, state.gen_params, s, batch["mask"], self.settings)
