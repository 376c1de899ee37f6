"""Plain BPR as a training method, and the interface every training method implements.

A method (registered by name in `til_jax.registry.METHODS`, chosen by `config.method`) owns:

  prepare_data(dataset, config) -> dataset a classmethod: the data as the method trains on it
  init(key, params) -> TrainState          its state around the model's params {"model": ...}
  epoch_batches(epoch, rng) -> dict        host arrays [steps, B] (its sampler), seeded by the loop
  update(state, batch, consts) -> (state, metrics)
                                           one pure step, scanned over an epoch inside jit
  on_epoch_start(state, epoch, consts)     host-side hook before an epoch (samplers that read the
                                           current representations); returns the state
  phase(epoch) -> str                      the epoch's phase label (its log record's "phase")
  epoch_update(phase) -> step              the step an epoch of that phase scans: `update`, unless
                                           the phases take different steps (TIL: pre-training is
                                           plain BPR); the loop compiles one scan per label, so
                                           keep the labels few

`consts` holds the static arrays of a run: {"graph": model.prepare(dataset), "train_users",
"train_items"} (the training pairs sorted by user).

Data parallelism (`til_jax.parallel`): `with_axis_name(name)` returns a copy whose `update`
computes global-batch losses and gradients with collectives over the named mesh axis (the batch
split along B). A method says so with `supports_axis_name`; one that does not runs under plain
jit with sharded arrays.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax

from til_jax import objectives, rows
from til_jax.data.dataset import Dataset
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.errors import ConfigError
from til_jax.models.base import triplet_scores
from til_jax.parallel import pmean
from til_jax.registry import METHODS
from til_jax.state import TrainState


def bpr_objective(params, model, graph, batch, l2: float, axis_name: str | None = None,
                  scale: float = 1.0, hardest_of: int = 0):
  """scale * mean BPR (Eq. 1) + l2 * mean_batch ||ego rows||^2 / 2; over the global batch with
  `axis_name` (psum'ed BPR sums and counts, pmean'ed L2 batch mean). `scale` (train.loss_scale)
  is the control for TIL's mean weight: the BPR term times a constant, the L2 term not.
  With N negatives per positive (groups of N consecutive triplets, `epoch_triplets`) the mean is
  over every triplet, i.e. the uniform mean over N; `hardest_of=N` instead takes the BPR term of
  each group's highest-scored negative only (dynamic negative sampling; the choice is not
  differentiated), while the L2 term still covers every sampled row.
  A batch with "weight" [B] (TIL's frozen per-pair weights) gives the weighted mean instead,
  mean_b w_b * L_BPR (Eq. 2)."""
  mp = params["model"]
  pos_s, neg_s = triplet_scores(model, mp, graph, batch["users"], batch["pos"], batch["neg"])
  reg = model.l2(mp, graph, batch["users"], batch["pos"], batch["neg"])
  mask = batch["mask"]
  if hardest_of > 1:
    neg_g = neg_s.reshape(-1, hardest_of)
    pick = jnp.argmax(jax.lax.stop_gradient(neg_g), axis=1)
    neg_s = jnp.take_along_axis(neg_g, pick[:, None], axis=1)[:, 0]
    pos_s, mask = pos_s[::hardest_of], mask[::hardest_of]
  if "weight" in batch:
    if hardest_of > 1:
      raise ValueError("per-triplet weights and hardest_of are not combined")
    bpr = objectives.weighted_bpr_loss(pos_s, neg_s, batch["weight"], mask, axis_name=axis_name)
  else:
    bpr = objectives.bpr_loss(pos_s, neg_s, mask, axis_name)
  return (bpr if scale == 1.0 else scale * bpr) + l2 * pmean(reg, axis_name)


def apply_grads(state: TrainState, tx, loss, grads, **extra_metrics):
  """One OPT_Theta step on `grads`: (state, metrics {"loss", "grad_norm", **extra})."""
  upd, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, upd)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **extra_metrics}
  return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def bpr_step(state: TrainState, batch, model, graph, tx, l2: float, axis_name: str | None = None,
             scale: float = 1.0, hardest_of: int = 0):
  """One plain BPR step (also TIL's pre-training step)."""
  loss, grads = jax.value_and_grad(bpr_objective)(state.params, model, graph, batch, l2, axis_name,
                                                  scale, hardest_of)
  return apply_grads(state, tx, loss, pmean(grads, axis_name))


def sparse_bpr_step(state: TrainState, batch, model, graph, l2: float, lr: float, eps: float,
                    scale: float = 1.0, hardest_of: int = 0):
  """One BPR step on the rows the batch touches (`til_jax.rows`): the same loss as `bpr_step`,
  Adam's moments and parameters moved on those rows only (sparse_adam at `lr`, `eps`)."""
  mp = state.params["model"]
  view, b = rows.row_view(mp, batch, model.row_tables)
  loss, g = jax.value_and_grad(
      lambda v: bpr_objective({"model": v}, model, graph, b, l2, scale=scale,
                              hardest_of=hardest_of))(view)
  index = {"model": {t: batch[f"rows_{t}"] for t in model.row_tables}}
  params, opt_state = rows.adam_rows({"model": g}, state.opt_state, state.params, index, lr,
                                     eps=eps)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(g)}
  return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def plain_state(params, tx) -> TrainState:
  """A TrainState for a method without a weight generator or other state."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    gen_params={}, gen_opt_state={}, aux={})


NEGATIVE_PICKS = ("all", "hardest")


@METHODS.register("bpr")
class BPR:
  """Plain BPR: fresh uniform negatives each epoch, one per positive (`train.negatives` N: the
  mean over N, or the hardest of N with `train.negative_pick=hardest`)."""

  name = "bpr"
  # The method-owned config sections (config_check.METHOD_SECTIONS), or single fields of them
  # ("baselines.beta"), this method reads: the others' fields do not change what it computes,
  # so a finished or resumed run of it stays valid when they change (config_check.
  # same_identity). None: every field counts, which a subclass defined outside til_jax gets
  # unless it names its own (__init_subclass__).
  config_sections: tuple[str, ...] | None = ()
  config_ignores: tuple[str, ...] = ()  # fields of those sections it does not read after all
  axis_name: str | None = None  # set by with_axis_name for the data-parallel step
  multi_negative = False        # a subclass that samples train.negatives > 1 itself says so
  # Whether epoch_batches reads what on_epoch_start leaves in the state (then the loop draws no
  # batches ahead of the epoch); None: judged by whether the method overrides on_epoch_start.
  samples_from_state: bool | None = None

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if not cls.__module__.startswith("til_jax."):  # a user's method may read any field
      if "config_sections" not in cls.__dict__:
        cls.config_sections = None  # judge every field
      if "config_ignores" not in cls.__dict__:
        cls.config_ignores = ()     # (not what the built-in it extends ignores)

  def __init__(self, model, dataset: Dataset, tx, config):
    self.model, self.dataset, self.tx, self.config = model, dataset, tx, config
    self.l2 = float(config.optim.l2)
    self.batch_size = int(config.train.batch_size)
    self.sampler = UniformNegativeSampler(dataset.train)
    # sparse_adam: the row-sparse step, for a method that has one on a backbone that declares
    # its row tables; any other pairing is refused (it would silently be dense Adam).
    self.row_sparse = config.optim.name == "sparse_adam"
    if self.row_sparse and not self.has_row_step(model):
      raise ConfigError(
          f"config.optim.name: sparse_adam needs a method with a row-sparse step (bpr, til_ui, "
          f"til_mik) on a backbone with row tables (mf, neumf); {self.name} on "
          f"{getattr(model, 'name', type(model).__name__)} has none: use optim.name=adam")
    self.lr, self.eps = float(config.optim.lr), float(config.optim.eps)
    self.negatives = int(config.train.get("negatives", 1))
    own = type(self).update is BPR.update and type(self).epoch_batches is BPR.epoch_batches
    if self.negatives > 1 and not (own or type(self).multi_negative):
      raise ConfigError(f"config.train.negatives: {self.negatives} negatives per positive are "
                        f"sampled by bpr and the TIL methods; {self.name} samples its own")
    pick = config.train.get("negative_pick", "all")
    if pick not in NEGATIVE_PICKS:
      raise ConfigError(f"config.train.negative_pick: {pick!r}; allowed: {', '.join(NEGATIVE_PICKS)}")
    if pick == "hardest" and (not own or self.negatives < 2):
      raise ConfigError("config.train.negative_pick: 'hardest' (dynamic negative sampling) is "
                        "plain bpr's, with train.negatives >= 2")
    self.hardest_of = self.negatives if pick == "hardest" else 0
    self.loss_scale = float(config.train.get("loss_scale", 1.0))
    if self.loss_scale != 1.0 and type(self).update is not BPR.update:
      raise ConfigError(f"config.train.loss_scale: {self.loss_scale} scales plain BPR's loss (a "
                        f"control for TIL's mean weight); {self.name} has its own loss")

  def has_row_step(self, model) -> bool:
    """Whether this method's update has a row-sparse (sparse_adam) step on `model`: BPR's own
    update on a backbone with row tables; a subclass with its own update says so itself."""
    return type(self).update is BPR.update and model.row_tables is not None

  @classmethod
  def prepare_data(cls, dataset: Dataset, config) -> Dataset:
    """The dataset as this method trains on it (before the evaluators are built)."""
    return dataset

  def init(self, key, params) -> TrainState:
    return plain_state(params, self.tx)

  @property
  def supports_axis_name(self) -> bool:
    """Whether `update` reduces over `axis_name`: true for BPR's own update; a subclass that
    overrides update says so itself."""
    return type(self).update is BPR.update and not self.row_sparse

  def with_axis_name(self, axis_name: str | None):
    """A shallow copy whose update reduces over the mesh axis `axis_name`."""
    m = copy.copy(self)
    m.axis_name = axis_name
    return m

  def phase(self, epoch: int) -> str:
    return "main"

  def epoch_update(self, phase: str):
    """The step (state, batch, consts) -> (state, metrics) that an epoch of `phase`
    (`self.phase(epoch)`) scans: `update`, unless the method's phases take different steps."""
    return self.update

  def on_epoch_start(self, state, epoch: int, consts):
    return state

  def epoch_batches(self, epoch: int, rng: np.random.Generator) -> dict:
    b = epoch_triplets(self.dataset.train, self.sampler, rng, self.batch_size,
                       negatives=self.negatives)
    if self.row_sparse:
      b = rows.add_row_index(b, self.model.row_tables, rows.table_rows(self.model))
    return b

  def update(self, state, batch, consts):
    if self.row_sparse:
      return sparse_bpr_step(state, batch, self.model, consts["graph"], self.l2, self.lr, self.eps,
                             self.loss_scale, self.hardest_of)
    return bpr_step(state, batch, self.model, consts["graph"], self.tx, self.l2, self.axis_name,
                    self.loss_scale, self.hardest_of)
