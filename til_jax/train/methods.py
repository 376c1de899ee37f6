"""Training methods by name (`config.method`): BPR, the TIL family, and the baselines.

A method owns three things:
  * `init(key, params)` -> (params, gen_params, aux): its extra state;
  * `epoch_batches(epoch, rng)` -> dict of host arrays [steps, B] (its sampler);
  * `update(state, batch, consts, phase)` -> (state, metrics): one pure step, scanned over an
    epoch inside jit; `phase(epoch)` picks a variant (TIL-MI pre-trains with plain BPR);
  * `on_epoch_start(state, epoch, consts)` -> state: host-side hooks (K-means initialisation).

Data parallelism (`til_jax.parallel`): `with_axis_name(name)` returns a copy whose `update`
computes global-batch losses and gradients with collectives over the named mesh axis (the
batch split along B). BPR and the TIL family do (`supports_axis_name`); a subclass that
overrides `update` must say so itself, otherwise it runs under plain jit with sharded arrays.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import jax
import numpy as np
import optax

from til_jax import objectives
from til_jax.data.dataset import CSR, Dataset
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.errors import ConfigError
from til_jax.parallel import pmean
from til_jax.til import api, bilevel
from til_jax.train.state import TrainState


def bpr_objective(params, model, graph, batch, l2: float, axis_name: str | None = None):
  """Mean BPR (Eq. 1) + l2 * mean_batch ||ego rows||^2 / 2; over the global batch with
  `axis_name` (psum'ed BPR sums and counts, pmean'ed L2 batch mean)."""
  mp = params["model"]
  pos_s, neg_s = bilevel.batch_scores(model, mp, graph, batch["users"], batch["pos"], batch["neg"])
  reg = model.l2(mp, graph, batch["users"], batch["pos"], batch["neg"])
  return objectives.bpr_loss(pos_s, neg_s, batch["mask"], axis_name) + l2 * pmean(reg, axis_name)


def apply_grads(state: TrainState, tx, loss, grads, **extra_metrics):
  upd, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, upd)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **extra_metrics}
  return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


class BPR:
  """Plain BPR: one fresh uniform negative per positive each epoch."""

  name = "bpr"
  axis_name: str | None = None  # set by with_axis_name for the data-parallel step

  def __init__(self, model, dataset: Dataset, tx, config):
    self.model, self.dataset, self.tx, self.config = model, dataset, tx, config
    self.l2 = float(config.optim.l2)
    self.batch_size = int(config.train.batch_size)
    self.sampler = UniformNegativeSampler(dataset.train)

  def init(self, key, params):
    return params, {}, {}

  @property
  def supports_axis_name(self) -> bool:
    """Whether `update` reduces over `axis_name`: true for BPR's and TIL's own update; a
    subclass that overrides update overrides this too if it reduces."""
    return type(self).update in (BPR.update, TIL.update)

  def with_axis_name(self, axis_name: str | None):
    """A shallow copy whose update reduces over the mesh axis `axis_name`."""
    m = copy.copy(self)
    m.axis_name = axis_name
    return m

  def make_gen_tx(self):
    return None

  def phase(self, epoch: int) -> str:
    return "main"

  def on_epoch_start(self, state, epoch: int, consts):
    return state

  def epoch_batches(self, epoch: int, rng: np.random.Generator) -> dict:
    return epoch_triplets(self.dataset.train, self.sampler, rng, self.batch_size)

  def bpr_update(self, state: TrainState, batch, consts):
    loss, grads = jax.value_and_grad(bpr_objective)(state.params, self.model, consts["graph"],
                                                    batch, self.l2, self.axis_name)
    return apply_grads(state, self.tx, loss, pmean(grads, self.axis_name))

  def update(self, state, batch, consts, phase: str):
    return self.bpr_update(state, batch, consts)


class TIL(BPR):
  """Triplet Importance Learning: til_ui (Eq. 5), til_mi (Eq. 6 + end-to-end clustering) and
  til_mik (Eq. 6 with K-means centres recomputed at every refresh; paper Fig. 7)."""

  INTEREST = {"til_ui": "uni", "til_mi": "multi", "til_mik": "multi_kmeans"}

  def __init__(self, model, dataset, tx, config, name: str):
    super().__init__(model, dataset, tx, config)
    self.name = name
    c = config.til
    self.settings = bilevel.TILSettings(
        interest=self.INTEREST[name], alpha=float(c.alpha), gamma=float(c.gamma), tau=float(c.tau),
        kl_reduction=c.get("kl_reduction", "sum"), hypergrad=c.get("hypergrad", "autodiff"),
        lr_look=float(c.lr_look), activation=c.activation, weight_norm=c.weight_norm,
        clip_max=float(c.clip_max), temperature=float(c.temperature), reduction=c.reduction,
        first_order=bool(c.first_order), l2=self.l2, eta_every=int(c.eta_every),
        refresh_every=int(c.refresh_every), kmeans_iters=int(c.kmeans_iters))
    self.n_clusters = int(c.n_clusters)
    self.outer_batch = c.outer_batch
    # Plain BPR epochs before the bilevel steps start: MI/MIK need embeddings worth clustering
    # (paper 5.4); `warmup_epochs` (default 0) applies to every TIL method.
    self.pretrain_epochs = max(int(c.get("warmup_epochs", 0)),
                               int(c.pretrain_epochs) if self.settings.interest != "uni" else 0)
    self.gen_lr = float(c.gen_lr)
    self.gen_l2 = float(c.gen_l2)
    if self.outer_batch == "valid":
      self.meta = dataset.extras.get("meta")
      if self.meta is None:
        raise ConfigError("config.til.outer_batch=valid needs a meta split of valid "
                          "(set config.til.meta_fraction > 0)")
      self.meta_sampler = UniformNegativeSampler(dataset.train.union(self.meta))

  @functools.cached_property
  def _refresh_eta(self):
    return jax.jit(self.core.refresh_eta)

  def make_gen_tx(self):
    return optax.adamw(self.gen_lr, weight_decay=self.gen_l2) if self.gen_l2 else optax.adam(self.gen_lr)

  @property
  def core(self) -> api.TIL:
    settings = self.settings if self.axis_name is None else dataclasses.replace(
        self.settings, axis_name=self.axis_name)
    return api.TIL(self.model, settings, self.tx, self.gen_tx, self.n_clusters)

  def init(self, key, params):
    return self.core.init_extra(key, params)

  def phase(self, epoch: int) -> str:
    return "pretrain" if epoch < self.pretrain_epochs else "main"

  def on_epoch_start(self, state: TrainState, epoch: int, consts):
    """eta_u once per epoch (`til.eta_every` 0, the default); at the end of pre-training: K-means
    (k-means++) once on the item representations."""
    if self.settings.eta_every == 0 and epoch >= self.pretrain_epochs:
      state = self._refresh_eta(state, consts)
    if self.settings.interest == "uni" or epoch < self.pretrain_epochs or bool(state.aux["ready"]):
      return state
    key = jax.random.fold_in(jax.random.key(int(self.config.seed)), 10_000_019)
    return self.core.init_clusters(state, consts, key)

  def epoch_batches(self, epoch: int, rng: np.random.Generator) -> dict:
    b = super().epoch_batches(epoch, rng)
    if self.outer_batch == "same":
      outer = {k: b[k] for k in ("users", "pos", "neg", "mask")}
    elif self.outer_batch == "fresh":
      outer = epoch_triplets(self.dataset.train, self.sampler, rng, self.batch_size)
    elif self.outer_batch == "valid":
      outer = sample_pairs(self.meta, self.meta_sampler, rng, b["users"].shape)
    else:
      raise ConfigError(f"config.til.outer_batch: {self.outer_batch!r}; allowed: fresh, same, valid")
    outer = {k: v[: b["users"].shape[0]] for k, v in outer.items()}
    b.update({"o_" + k: v for k, v in outer.items()})
    return b

  def update(self, state: TrainState, batch, consts, phase: str):
    if phase == "pretrain":
      return self.bpr_update(state, batch, consts)
    return self.core.step(state, batch, consts)


def sample_pairs(pairs: CSR, sampler: UniformNegativeSampler, rng: np.random.Generator,
                 shape: tuple[int, int]) -> dict:
  """[steps, B] (user, item, negative) drawn uniformly with replacement from `pairs`."""
  users, items = pairs.to_pairs()
  idx = rng.integers(0, users.size, size=shape[0] * shape[1])
  u, i = users[idx], items[idx]
  j = sampler.sample(u, rng)
  return {"users": u.reshape(shape).astype(np.int32), "pos": i.reshape(shape).astype(np.int32),
          "neg": j.reshape(shape), "mask": np.ones(shape, bool)}


METHODS = {"bpr": BPR, "til_ui": TIL, "til_mi": TIL, "til_mik": TIL}


def register(name: str, cls) -> None:
  METHODS[name] = cls


def make_method(name: str, model, dataset, tx, config):
  if name not in METHODS:
    try:  # the baselines register themselves on import
      import til_jax.baselines  # noqa: F401
    except ImportError:
      pass
  if name not in METHODS:
    raise ConfigError(f"config.method: unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")
  cls = METHODS[name]
  m = cls(model, dataset, tx, config, name) if cls is TIL or issubclass(cls, TIL) else cls(
      model, dataset, tx, config)
  m.gen_tx = m.make_gen_tx()
  return m
