"""Training methods by name (`config.method`): the registry, and TIL's adapter from config.

Every method implements the interface documented in `til_jax.bpr` (init, epoch_batches, update,
on_epoch_start, phase, epoch_update) and is registered in `til_jax.registry.METHODS`: BPR in `til_jax.bpr`,
the baselines in `til_jax.baselines`, the TIL family here. `register(name, cls)` adds a user's
own method; `make_method` builds the one `config.method` names.

The TIL methods are thin: `til_jax.til.api.TIL` owns the state and every schedule; this adapter
builds it from the config and samples the outer batches on the host. One schedule is the
adapter's, since it reads every training pair on the host: `til.freeze_epoch` = E > 0 freezes
the importance after E epochs. Before epoch E + 1 the generator weighs every training pair
(averaged over `til.freeze_negatives` uniform negatives), the weights are raised to
`til.freeze_temper` and normalised to mean 1 (`api.TIL.freeze`), and from then on each epoch is
plain BPR weighted by its positive's frozen weight (`api.TIL.frozen_update`, phase "frozen"):
no bilevel step, BPR's cost. (Not the paper's: an option of the importance study, issue #18.)
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from til_jax import baselines, rows  # noqa: F401  (importing baselines registers them)
from til_jax.bpr import BPR
from til_jax.data.dataset import CSR, split_meta
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.errors import ConfigError, NonFiniteError
from til_jax.registry import METHODS
from til_jax.state import TrainState
from til_jax.til import api, bilevel, modes, states

register = METHODS.register

# Salt of the K-means++ key of TIL-MI/MIK (fold_in of the run's seed key).
CLUSTER_KEY_SALT = 10_000_019
# Salt of the negatives that `til.freeze_epoch` weighs every training pair with.
FREEZE_SEED_SALT = 20_000_003


class TIL(BPR):
  """Triplet Importance Learning: til_ui (Eq. 5), til_mi (Eq. 6 + end-to-end clustering) and
  til_mik (Eq. 6 with K-means centres recomputed at every refresh; paper Fig. 7)."""

  config_sections = ("til",)
  # train.negatives = N: groups of N triplets, weighted by til.weight_norm=group_softmax
  multi_negative = True
  # on_epoch_start only writes the frozen weights; the batches depend on the epoch alone, so the
  # loop draws them ahead
  samples_from_state = False

  def __init__(self, model, dataset, tx, config):
    super().__init__(model, dataset, tx, config)
    core = api.TIL.from_config(config, model, bilevel.steps_per_epoch(dataset.train.nnz,
                                                                      self.batch_size), self.interest)
    # OPT_Theta from the resolved config (a til.mode may set optim fields, e.g. authors_code's
    # weight decay), the same transformation as `tx` otherwise
    self.core, self.tx = core, core.tx
    if states.uses_clusters(core.settings.interest) and core.settings.n_clusters > dataset.n_items:
      raise ConfigError(f"config.til.n_clusters: {core.settings.n_clusters} is larger than the "
                        f"number of items ({dataset.n_items})")
    self.pretrain_epochs, rest = divmod(core.settings.pretrain_steps, core.settings.steps_per_epoch)
    if rest:  # the loop picks each epoch's branch by its phase: pre-training is whole epochs
      raise ValueError(f"pre-training of {core.settings.pretrain_steps} steps is not whole epochs "
                       f"of {core.settings.steps_per_epoch}")
    resolved = modes.resolve(config).til   # (til.mode=paper pins freeze_epoch to 0)
    self.freeze_epoch = int(resolved.get("freeze_epoch", 0))
    self.freeze_temper = float(resolved.get("freeze_temper", 1.0))
    self.freeze_negatives = int(resolved.get("freeze_negatives", 4))
    if self.freeze_epoch and self.freeze_epoch <= self.pretrain_epochs:
      raise ConfigError(f"config.til.freeze_epoch: {self.freeze_epoch} must be after the "
                        f"{self.pretrain_epochs} epochs of pre-training (the generator is "
                        "untrained until then)")
    if self.freeze_epoch and self._own_update:
      raise ConfigError(f"config.til.freeze_epoch: {type(self).__name__} overrides update, which "
                        "then runs in every epoch; the frozen phase needs TIL's own")
    if self.freeze_epoch and self.negatives > 1:
      raise ConfigError("config.til.freeze_epoch: freezes the weight of single triplets; with "
                        f"train.negatives={self.negatives} (group weights) it is undefined")
    self.outer_batch = core.settings.outer_batch
    if self.outer_batch == "valid":
      self.meta = dataset.extras.get("meta")
      if self.meta is None:
        raise ConfigError("config.til.outer_batch=valid needs a meta split of valid "
                          "(set config.til.meta_fraction > 0)")
      self.meta_sampler = UniformNegativeSampler(dataset.train.union(self.meta))

  @classmethod
  def prepare_data(cls, dataset, config):
    """outer_batch=valid: valid split into a meta part (the outer loss) and a selection part."""
    if modes.resolve(config).til.outer_batch != "valid":
      return dataset
    return split_meta(dataset, float(config.til.meta_fraction), int(config.seed))

  @property
  def _own_update(self) -> bool:
    """Whether a subclass overrides `update` (it then runs in every epoch, on whole batches)."""
    return type(self).update is not TIL.update

  @property
  def supports_axis_name(self) -> bool:
    return not self._own_update

  def with_axis_name(self, axis_name: str | None):
    m = super().with_axis_name(axis_name)
    m.core = self.core.with_axis_name(axis_name)
    return m

  def init(self, key, params) -> TrainState:
    cluster_key = jax.random.fold_in(jax.random.key(int(self.config.seed)), CLUSTER_KEY_SALT)
    state = self.core.init(key, params, cluster_key=cluster_key)
    if self.freeze_epoch:  # held from the start, so every checkpoint has one structure
      state = self.core.freeze(state, np.ones(self.dataset.train.nnz, np.float32))
    return state

  def phase(self, epoch: int) -> str:
    if epoch < self.pretrain_epochs:
      return "pretrain"
    return "frozen" if self.freeze_epoch and epoch >= self.freeze_epoch else "main"

  def on_epoch_start(self, state, epoch: int, consts):
    """At epoch `til.freeze_epoch` (0-based: after that many epochs), the frozen weights of
    every training pair; a run resumed later finds them in its checkpoint."""
    if not (self.freeze_epoch and epoch == self.freeze_epoch):
      return state
    return self.core.freeze(state, self.freeze_weights(state, consts))

  def freeze_weights(self, state, consts) -> np.ndarray:
    """[nnz] in `train.to_pairs()` order: the generator's weight of each training pair, the
    mean over `til.freeze_negatives` uniform negatives, ** `til.freeze_temper`, normalised to
    mean 1. Deterministic in (state, seed)."""
    users, pos = self.dataset.train.to_pairs()
    rng = np.random.default_rng([int(self.config.seed), FREEZE_SEED_SALT])
    w = np.zeros(users.size, np.float64)
    for k in range(self.freeze_negatives):
      w += triplet_weights(self, state, consts, users, pos, self.sampler.sample(users, rng), seed=k)
    w = np.maximum(w / self.freeze_negatives, 0.0) ** self.freeze_temper
    mean = w.mean()
    if not np.isfinite(mean) or mean <= 0:
      raise NonFiniteError(f"til.freeze_epoch: the generator's weights of the training pairs "
                           f"have mean {mean}; nothing to freeze")
    return (w / mean).astype(np.float32)

  def epoch_update(self, phase: str):
    # pre-training is whole epochs, so each phase's epoch scans its own branch of core.update
    # (the same numbers, without the lax.cond that chooses between them at every step); a
    # subclass with its own update gets it, and whole batches (_lean_epoch)
    if self._own_update:
      return self.update
    return {"pretrain": self.core.pretrain_update,
            "frozen": self.core.frozen_update}.get(phase, self.core.bilevel_update)

  def _lean_epoch(self, epoch: int) -> bool:
    """Whether the epoch's step is plain (weighted) BPR, pre-training or frozen, which reads no
    outer batch and, on the dense path, no row index (an overriding `update` reads whatever
    core.update reads)."""
    return self.phase(epoch) in ("pretrain", "frozen") and not self._own_update

  def has_row_step(self, model) -> bool:
    # the row-sparse bilevel step (api.TIL refuses TIL-MI's clustering loss with its own error)
    return model.row_tables is not None

  def epoch_batches(self, epoch: int, rng: np.random.Generator) -> dict:
    b = epoch_triplets(self.dataset.train, self.sampler, rng, self.batch_size,
                       negatives=self.negatives, with_pair=self.phase(epoch) == "frozen")
    # a pre-training epoch (plain BPR) reads no outer batch; each epoch has its own rng and the
    # inner batch is drawn first, so leaving it out there changes no other draw
    main = not self._lean_epoch(epoch)
    if main and self.outer_batch == "fresh":
      b["outer"] = epoch_triplets(self.dataset.train, self.sampler, rng, self.batch_size,
                                  negatives=self.negatives)
    elif main and self.outer_batch == "valid":
      b["outer"] = sample_pairs(self.meta, self.meta_sampler, rng, b["users"].shape)
    if self.core.on_rows and (main or self.core.lazy_adam is not None):  # (dense pre-training
      b = rows.add_row_index(b, self.model.row_tables, rows.table_rows(self.model),
                             with_outer="outer" in b)             #  reads no row index)
    return b

  def update(self, state: TrainState, batch, consts):
    return self.core.update(state, batch, consts)


# The fields of the Multi-Interest clustering (Eq. 6-11, the pre-training before it, K-means):
# Uni-Interest never reads them (bilevel.TILSettings.from_config gives it no pre-training), so a
# finished TIL-UI cell stays valid when they change.
CLUSTER_FIELDS = ("til.alpha", "til.gamma", "til.tau", "til.n_clusters", "til.pretrain_epochs",
                  "til.refresh_every", "til.kmeans_iters", "til.kl_reduction", "til.kl_items")


# A TIL method names its state (til_jax.til.states.STATES); a new state variant is its function
# there plus one such registration.

@register("til_ui")
class TILUI(TIL):
  name, interest = "til_ui", "uni"
  config_ignores = CLUSTER_FIELDS


@register("til_mi")
class TILMI(TIL):
  name, interest = "til_mi", "multi"
  config_ignores = ("til.kmeans_iters",)  # TIL-MIK's Lloyd iterations


@register("til_mik")
class TILMIK(TIL):
  name, interest = "til_mik", "multi_kmeans"


def sample_pairs(pairs: CSR, sampler: UniformNegativeSampler, rng: np.random.Generator,
                 shape: tuple[int, int]) -> dict:
  """[steps, B] (user, item, negative) drawn uniformly with replacement from `pairs`."""
  users, items = pairs.to_pairs()
  idx = rng.integers(0, users.size, size=shape[0] * shape[1])
  u, i = users[idx], items[idx]
  j = sampler.sample(u, rng)
  return {"users": u.reshape(shape).astype(np.int32), "pos": i.reshape(shape).astype(np.int32),
          "neg": j.reshape(shape), "mask": np.ones(shape, bool)}


def _weight_fns(method):
  """(jit(refreshed), jit(weights without refresh)) of a TIL method, built once per method (so
  every evaluation's weight AUROC reuses the compiled functions)."""
  fns = getattr(method, "_weight_fns", None)
  if fns is None:
    fns = method._weight_fns = (jax.jit(method.core.refreshed),
                                jax.jit(functools.partial(method.core.weights, refresh=False)))
  return fns


def triplet_weights(method, state, consts, users, pos, neg, seed: int = 0,
                    batch_size: int = 4096) -> np.ndarray:
  """The weights the trained generator gives the triplets (users, pos, neg) [n], in their order.

  They are scored in batches of a random order, so batch-wise post-processing (mean-one,
  softmax) rescales every batch by about the same constant and weights stay comparable across
  the whole set (in user-sorted batches each batch would carry its own few users' scale)."""
  if method.core.settings.weight_norm == "group_softmax":
    raise ConfigError("config.til.weight_norm: group_softmax weights a positive's N negatives "
                      "together; the weight of a single triplet is undefined")
  order = np.random.default_rng(seed).permutation(users.size)
  refreshed, fn = _weight_fns(method)
  state = refreshed(state, consts)  # eta and memberships once, not per batch
  out = []
  for s in range(0, users.size, batch_size):
    idx = order[s: s + batch_size]
    pad = batch_size - idx.size
    b = {k: np.concatenate([v[idx], np.zeros(pad, v.dtype)]).astype(np.int32) for k, v in
         (("users", users), ("pos", pos), ("neg", neg))}
    b["mask"] = np.arange(batch_size) < idx.size
    out.append(np.asarray(fn(state, b, consts))[:idx.size])
  w = np.empty(users.size, np.float32)
  w[order] = np.concatenate(out)
  return w


def make_method(name: str, model, dataset, tx, config):
  """The method `config.method` names, built on (model, dataset, OPT_Theta, config)."""
  return METHODS.get(name)(model, dataset, tx, config)
