"""The paper's seven baselines (Table 1) as training methods, each a subclass of `BPR`.

  negative sampling:  wbpr (popularity), aobpr (adaptive oversampling), pris (cluster importance
                      sampling, L negatives per positive, self-normalised weights)
  re-weighting:       tce, rce (pointwise BCE with one sampled negative per positive),
                      tce_bpr, rce_bpr (the same two ideas on the BPR loss of a triplet)

Hyper-parameters come from `config.baselines` (their defaults are in configs/default.py). Every
method works with any backbone through the generic interface: scores from `triplet_repr` +
`pair_score`, L2 from `l2`, and the host-side samplers read the current `represent` output in
`on_epoch_start`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from til_jax import objectives
from til_jax.baselines import samplers
from til_jax.bpr import BPR, apply_grads
from til_jax.errors import ConfigError
from til_jax.models.base import triplet_scores
from til_jax.registry import METHODS
from til_jax.til import clustering

FIELDS = ("drop_rate", "num_gradual", "beta", "wbpr_exponent", "aobpr_lambda", "pris_clusters",
          "pris_negatives", "pris_warmup_epochs", "pris_kmeans_iters")


def settings(config) -> dict:
  """`config.baselines` as a dict; raises ConfigError on a missing field or a bad value."""
  given = dict(config.baselines)
  missing = [f for f in FIELDS if f not in given]
  if missing:
    raise ConfigError(f"config.baselines.{missing[0]}: missing (configs/default.py has every field)")
  s = {f: given[f] for f in FIELDS}
  if not 0.0 <= float(s["drop_rate"]) < 1.0:
    raise ConfigError(f"config.baselines.drop_rate: must be in [0, 1), got {s['drop_rate']!r}")
  for f in ("num_gradual", "pris_clusters", "pris_negatives", "pris_kmeans_iters"):
    if int(s[f]) != s[f] or int(s[f]) < 1:
      raise ConfigError(f"config.baselines.{f}: must be a positive integer, got {s[f]!r}")
  for f in ("beta", "wbpr_exponent", "pris_warmup_epochs"):
    if not float(s[f]) >= 0:
      raise ConfigError(f"config.baselines.{f}: must be >= 0, got {s[f]!r}")
  if not float(s["aobpr_lambda"]) > 0:
    raise ConfigError(f"config.baselines.aobpr_lambda: must be > 0, got {s['aobpr_lambda']!r}")
  return s


class _Baseline(BPR):
  """BPR with the baseline settings read, a jitted `represent` for the host-side samplers, and
  an update that minimises `batch_loss(pos_scores, neg_scores, batch, step) + l2`."""

  # Each baseline names the knobs it reads, so tuning one leaves the others' runs valid (a
  # subclass inherits its parent's: TCE-BPR T-CE's); one that names none is judged on the whole
  # section.
  config_sections = ("baselines",)

  def __init__(self, model, dataset, tx, config):
    super().__init__(model, dataset, tx, config)
    self.s = settings(config)
    self._represent = jax.jit(model.represent)

  def host_repr(self, state, consts) -> tuple[np.ndarray, np.ndarray]:
    """The current (user [n_users, r], item [n_items, r]) representations, on the host."""
    return jax.device_get(self._represent(state.params["model"], consts["graph"]))

  def batch_loss(self, pos_s, neg_s, batch, step):
    """(loss [], extra metrics dict of []) from scores [B], [B]."""
    return objectives.bpr_loss(pos_s, neg_s, batch["mask"]), {}

  def update(self, state, batch, consts):
    model, graph = self.model, consts["graph"]

    def objective(params):
      mp = params["model"]
      pos_s, neg_s = triplet_scores(model, mp, graph, batch["users"], batch["pos"], batch["neg"])
      loss, extra = self.batch_loss(pos_s, neg_s, batch, state.step)
      return loss + self.l2 * model.l2(mp, graph, batch["users"], batch["pos"], batch["neg"]), extra

    (loss, extra), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return apply_grads(state, self.tx, loss, grads, **extra)


@METHODS.register("wbpr")
class WBPR(_Baseline):
  """WBPR (Gantner et al. 2012): BPR with popularity-proportional negatives."""

  name = "wbpr"
  config_sections = ("baselines.wbpr_exponent",)

  def __init__(self, model, dataset, tx, config):
    super().__init__(model, dataset, tx, config)
    self.sampler = samplers.PopularityNegativeSampler(dataset.train, float(self.s["wbpr_exponent"]))


@METHODS.register("aobpr")
class AOBPR(_Baseline):
  """AOBPR (Rendle & Freudenthaler 2014): BPR with adaptive oversampling of negatives; the
  per-factor rankings are refreshed from the current representations at every epoch start."""

  name = "aobpr"
  config_sections = ("baselines.aobpr_lambda",)

  def __init__(self, model, dataset, tx, config):
    super().__init__(model, dataset, tx, config)
    self.sampler = samplers.AdaptiveOversampler(dataset.train, float(self.s["aobpr_lambda"]))

  def on_epoch_start(self, state, epoch: int, consts):
    self.sampler.refresh(*self.host_repr(state, consts))
    return state


@functools.partial(jax.jit, static_argnums=(2, 3))
def _kmeans(key, items, k: int, iters: int):
  centres = clustering.kmeans(key, items, k, iters)
  return centres, clustering.hard_membership(items, centres)


@METHODS.register("pris")
class PRIS(_Baseline):
  """PRIS (Lian et al. 2020): L negatives per positive from the cluster proposal Q(j | u),
  rebuilt every epoch (K-means on the current item representations), and the loss
  sum_l w_l BPR(u, i, j_l) with w = softmax_l(y_uj_l - log Q(j_l | u)) held constant."""

  name = "pris"
  config_sections = ("baselines.pris_clusters", "baselines.pris_negatives",
                     "baselines.pris_warmup_epochs", "baselines.pris_kmeans_iters")

  def __init__(self, model, dataset, tx, config):
    super().__init__(model, dataset, tx, config)
    self.n_clusters = min(int(self.s["pris_clusters"]), dataset.n_items)
    self.sampler = samplers.ClusterImportanceSampler(dataset.train, int(self.s["pris_negatives"]))

  def on_epoch_start(self, state, epoch: int, consts):
    if epoch < int(self.s["pris_warmup_epochs"]):
      self.sampler.cat = None  # uniform proposal (the official code's first epoch)
      return state
    users, items = self.host_repr(state, consts)
    key = jax.random.fold_in(jax.random.key(int(self.config.seed)), 20_000_003 + epoch)
    centres, membership = jax.device_get(_kmeans(key, jnp.asarray(items), self.n_clusters,
                                                 int(self.s["pris_kmeans_iters"])))
    self.sampler.refresh(users, centres, membership)
    return state

  def epoch_batches(self, epoch: int, rng: np.random.Generator) -> dict:
    users, items = self.dataset.train.to_pairs()
    neg, log_q = self.sampler.sample(users, rng)
    return shuffle_batches({"users": users, "pos": items, "neg": neg, "log_q": log_q}, rng,
                           self.batch_size)

  def update(self, state, batch, consts):
    model, graph = self.model, consts["graph"]
    b, n_neg = batch["neg"].shape
    users = jnp.repeat(batch["users"], n_neg)
    pos = jnp.repeat(batch["pos"], n_neg)
    neg = batch["neg"].reshape(-1)

    def objective(params):
      mp = params["model"]
      pos_s, neg_s = triplet_scores(model, mp, graph, users, pos, neg)
      pos_s, neg_s = pos_s.reshape(b, n_neg)[:, 0], neg_s.reshape(b, n_neg)
      loss = objectives.pris_loss(pos_s, neg_s, batch["log_q"], batch["mask"])
      w = objectives.pris_weights(neg_s, batch["log_q"])
      # L2: the mean over l of the L2 of the triplets (u, i, j_l), i.e. BPR's when L = 1
      return loss + self.l2 * model.l2(mp, graph, users, pos, neg), w

    (loss, w), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return apply_grads(state, self.tx, loss, grads,
                       w_max=objectives.masked_mean(jnp.max(w, axis=1), batch["mask"]))


def shuffle_batches(arrays: dict, rng: np.random.Generator, batch_size: int) -> dict:
  """Shuffles aligned arrays [n, ...] and cuts them into [steps, batch_size, ...]; the last batch
  is padded with random earlier rows and `mask` [steps, batch_size] marks the real rows (the
  scheme of `til_jax.data.sampling.epoch_triplets`). Ids become int32."""
  n = next(iter(arrays.values())).shape[0]
  perm = rng.permutation(n)
  steps = -(-n // batch_size)
  total = steps * batch_size
  idx = perm if total == n else np.concatenate([perm, perm[rng.integers(0, n, total - n)]])
  out = {}
  for k, v in arrays.items():
    v = v[idx]
    out[k] = v.reshape((steps, batch_size) + v.shape[1:])
    if out[k].dtype.kind in "iu":
      out[k] = out[k].astype(np.int32)
  mask = np.zeros(total, bool)
  mask[:n] = True
  out["mask"] = mask.reshape(steps, batch_size)
  return out


@METHODS.register("tce")
class TCE(_Baseline):
  """T-CE (Wang et al. 2021): pointwise BCE, positives label 1 and one sampled negative label 0;
  the largest-loss positives are dropped at rate eps(t) = eps_max * min(1, t / (num_gradual - 1))."""

  name = "tce"
  config_sections = ("baselines.drop_rate", "baselines.num_gradual")

  def rate(self, step):
    return objectives.drop_rate(step, float(self.s["drop_rate"]), int(self.s["num_gradual"]))

  def batch_loss(self, pos_s, neg_s, batch, step):
    rate = self.rate(step)
    return objectives.tce_loss(pos_s, neg_s, rate, batch["mask"]), {"drop_rate": rate}


@METHODS.register("rce")
class RCE(_Baseline):
  """R-CE (Wang et al. 2021): pointwise BCE weighted by sigmoid(y)^beta (positives) or
  (1 - sigmoid(y))^beta (negatives), weights held constant."""

  name = "rce"
  config_sections = ("baselines.beta",)

  def batch_loss(self, pos_s, neg_s, batch, step):
    beta = float(self.s["beta"])
    logits, labels, m = objectives.pointwise(pos_s, neg_s, batch["mask"])
    w = objectives.rce_weights(logits, labels, beta)
    return objectives.rce_loss(pos_s, neg_s, beta, batch["mask"]), _weight_stats(w, m)


@METHODS.register("tce_bpr")
class TCEBPR(TCE):
  """TCE-BPR: T-CE's truncation on the BPR loss of each triplet (every triplet at risk)."""

  name = "tce_bpr"

  def batch_loss(self, pos_s, neg_s, batch, step):
    rate = self.rate(step)
    return objectives.tce_bpr_loss(pos_s, neg_s, rate, batch["mask"]), {"drop_rate": rate}


@METHODS.register("rce_bpr")
class RCEBPR(_Baseline):
  """RCE-BPR: BPR of each triplet weighted by sigmoid(y_ui - y_uj)^beta, held constant."""

  name = "rce_bpr"
  config_sections = ("baselines.beta",)

  def batch_loss(self, pos_s, neg_s, batch, step):
    beta = float(self.s["beta"])
    w = objectives.rce_bpr_weights(pos_s, neg_s, beta)
    return objectives.rce_bpr_loss(pos_s, neg_s, beta, batch["mask"]), _weight_stats(w, batch["mask"])


def _weight_stats(w, mask) -> dict:
  mean = objectives.masked_mean(w, mask)
  return {"w_mean": mean, "w_std": jnp.sqrt(objectives.masked_mean((w - mean) ** 2, mask))}

