"""The epoch loop: train, evaluate on valid, keep the best, stop early, resume after a kill.

`train_and_evaluate(config, workdir)` is the one library call behind `experiments.main`.
A whole epoch runs as one jit-compiled `lax.scan` over its steps (no host round-trip per step);
metrics come back to the host once per epoch. The host draws the epoch's triplets with a NumPy
generator seeded by (seed, epoch), and step keys are fold_in(key, step), so a resumed run
replays exactly what an uninterrupted one does.

Devices (`config.parallel`, `til_jax.parallel`): the epoch runs data-parallel over a 1-D mesh
(one device = a 1-device mesh, the same code); the state lives on the mesh (replicated, or its
embedding rows split with shard_embeddings), the host-side hooks, evaluation and exports read a
process-local view of it. Several processes: every process runs this loop in lockstep; process 0
alone writes the workdir's JSON files, Orbax coordinates the checkpoints.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import sys
import time

import jax
import numpy as np

from til_jax import optim, parallel
from til_jax.data.dataset import drop_cold_items, split_meta
from til_jax.data.noise import inject_noise
from til_jax.data.registry import load_dataset
from til_jax.errors import ConfigError, NonFiniteError
from til_jax.evaluation import Evaluator, auroc
from til_jax.models import make_model
from til_jax.registry import METHODS
from til_jax.state import TrainState, make_consts
from til_jax.train import config_check, tensorboard
from til_jax.train.checkpoint import Checkpointer
from til_jax.train.methods import triplet_weights

log = logging.getLogger("til_jax")


def model_scores(model, params, users):
  """Evaluator score function: params = (model_params, reprs)."""
  model_params, reprs = params
  return model.full_scores(model_params, reprs, users)


def build(config, dataset=None):
  """Everything a run needs, from a validated config: (dataset, model, method, consts).
  `dataset`: use this one instead of loading `config.data` (noise and splits still applied)."""
  if dataset is None:
    dataset = load_dataset(config.data)
  if config.eval.drop_cold_items:  # the old protocol, as an explicit option
    dataset, dropped = drop_cold_items(dataset)
    log.info("eval.drop_cold_items: dropped %d valid and %d test interactions whose item has no "
             "training interaction", dropped["valid"], dropped["test"])
  if config.data.noise != "none":
    dataset = inject_noise(dataset, config.data.noise, float(config.data.noise_rate),
                           int(config.data.noise_seed))
  method_cls = METHODS.get(config.method)
  dataset = method_cls.prepare_data(dataset, config)
  if config.train.meta_to_train:  # the control: meta interactions as training data
    if "meta" in dataset.extras:
      raise ConfigError("config.train.meta_to_train: the control of til.outer_batch=valid is BPR "
                        "on train + meta; it cannot be combined with outer_batch=valid")
    dataset = split_meta(dataset, float(config.til.meta_fraction), int(config.seed))
    # Arrays aligned with the old training pairs (ratings, clean flags) no longer line up.
    nnz = dataset.train.nnz
    extras = {k: v for k, v in dataset.extras.items()
              if not (isinstance(v, np.ndarray) and v.shape[:1] == (nnz,))}
    dataset = dataset.replace(train=dataset.train.union(dataset.extras["meta"]), extras=extras)
  config_check.check_against_data(config, dataset)
  model = make_model(config.model, dataset.n_users, dataset.n_items)
  tx = optim.model_optimizer(config.optim)
  method = method_cls(model, dataset, tx, config)
  consts = make_consts(*dataset.train.to_pairs(), model.prepare(dataset))
  return dataset, model, method, consts


def init_state(config, model, method) -> TrainState:
  """The run's initial state: the model from fold 0 of the seed's key, the method's own state
  (TIL's generator) from fold 1."""
  k_model, k_method = jax.random.split(jax.random.key(int(config.seed)))
  return method.init(k_method, {"model": model.init(k_model)})


def epoch_means(metrics: dict) -> dict:
  """Per-epoch means of the step metrics; a metric with no finite value this epoch (TIL's
  bilevel metrics during pre-training, NaN) is left out."""
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    finite = np.isfinite(v)
    if finite.all():
      out[k] = float(np.mean(v))
    elif finite.any():
      out[k] = float(np.mean(v[finite]))
  return out


def make_epoch_fn(method, dp: parallel.DataParallel | None = None):
  """run_epoch(state, batches [steps, B], consts, phase) -> (state, metrics [steps]): the scan
  of `method.epoch_update(phase)` over an epoch of `phase` (`method.phase(epoch)`, the phase
  `method.epoch_batches(epoch)` drew its batches for: TIL's pre-training epochs carry no outer
  batch), one compiled function per phase.

  With `dp`: `dp.epoch_fn(method)`, the data-parallel scan over dp's mesh (state from
  `dp.put_state`, consts from `dp.put_replicated`). Without: jit(scan(step)) on the default
  device. Either way the state is donated (updated in place)."""
  if dp is not None:
    return dp.epoch_fn(method)
  cache = {}

  def run_epoch(state, batches, consts, phase: str):
    if phase not in cache:
      step = method.epoch_update(phase)
      cache[phase] = jax.jit(lambda st, bs, cs: jax.lax.scan(lambda s, b: step(s, b, cs), st, bs),
                             donate_argnums=0)
    return cache[phase](state, batches, consts)
  return run_epoch


class _Signals:
  """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the epoch and exits."""

  def __init__(self):
    self.received = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.received is not None:  # second signal: give up at once
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    log.warning("%s received: finishing the epoch, saving a checkpoint, then exiting",
                self.received)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def prefetches(method) -> bool:
  """Whether the loop draws an epoch's batches ahead, beside the previous epoch (_Prefetcher)."""
  from til_jax.bpr import BPR
  reads = getattr(method, "samples_from_state", None)
  if reads is None:
    return type(method).on_epoch_start is BPR.on_epoch_start
  return not reads


class _Prefetcher:
  """Epoch e's batches, drawn on the host while the device runs epoch e - 1 (one worker thread).

  Only for methods whose sampling does not read the state: BPR, the TIL family (whose hook only
  writes the frozen weights) and any method that says so (`samples_from_state = False`); one
  that does not say is judged by whether it has an `on_epoch_start` hook. The others sample in
  the loop as before. Either way epoch e draws from default_rng([seed, e]), so the numbers are
  the same with or without prefetching."""

  def __init__(self, method, seed: int):
    self.method, self.seed = method, seed
    self.enabled = prefetches(method)
    self.pool, self.pending = None, None

  def __enter__(self):
    if self.enabled:
      import concurrent.futures
      self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="til-sampler")
    return self

  def __exit__(self, exc_type, *exc):
    if self.pool is not None:  # on an error or a signal, do not wait for a draw in flight
      self.pool.shutdown(wait=exc_type is None, cancel_futures=True)

  def _draw(self, epoch: int) -> dict:
    return self.method.epoch_batches(epoch, np.random.default_rng([self.seed, epoch]))

  def get(self, epoch: int, prefetch_next: bool) -> dict:
    if self.pending is not None and self.pending[0] == epoch:
      batches = self.pending[1].result()
    else:
      batches = self._draw(epoch)
    self.pending = None
    if self.pool is not None and prefetch_next:
      self.pending = (epoch + 1, self.pool.submit(self._draw, epoch + 1))
    return batches


def _check_workdir(config, workdir: str, primary: bool = True) -> None:
  """Refuses to mix runs: an existing workdir must hold the same config (less checkpoint and
  logging fields), unless config.checkpoint.overwrite is set. Only the primary process writes."""
  path = os.path.join(workdir, "config.json")
  new = config_check.identity(config)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    same = config_check.same_identity(old.get("identity", {}), new)
    if not same and not config.checkpoint.overwrite:
      diff = config_check.identity_diff(old.get("identity", {}), new)
      raise ConfigError(f"{workdir}: holds a run with a different config (fields: "
                        f"{', '.join(diff[:5])}); use another --workdir or "
                        "--config.checkpoint.overwrite=True")
    if not same and config.checkpoint.overwrite and primary:
      import shutil
      for sub in ("checkpoints", "best", "metrics.jsonl", "metrics.json", "tensorboard"):
        p = os.path.join(workdir, sub)
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (
            os.path.exists(p) and os.remove(p))
  if primary:
    _atomic_json(path, {"identity": new, "config": json.loads(config.to_json_best_effort())})


def _atomic_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _progress(total: int, initial: int):
  if sys.stderr.isatty():
    try:
      from tqdm import tqdm
      return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)
    except ImportError:
      pass
  return None


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config.method` on `config.data` with `config.model`, early-stopped on valid
  Recall@20, and evaluates the best-valid parameters on test. Resumes from `workdir`.

  Returns the final metrics dict (also written to workdir/metrics.json)."""
  config_check.validate(config)
  parallel.initialize_distributed(config.get("parallel", None))  # before JAX starts a backend
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  _check_workdir(config, workdir, primary)
  t_setup = time.time()
  dataset, model, method, consts = build(config)
  if primary:
    save_ids(dataset, workdir)
  log.info("%s | backbone %s | method %s | budget %s | devices %d x %s", dataset.summary(),
           model.name, method.name, config.budget, jax.device_count(), jax.devices()[0].platform)
  dp = parallel.DataParallel.from_config(config, rows=(model.n_users, model.n_items))
  if getattr(method, "row_sparse", False) and (dp.size > 1 or jax.process_count() > 1):
    raise ConfigError("config.optim.name: sparse_adam's row-sparse step runs on one device for "
                      "now; use optim.name=adam or parallel.num_devices=1")
  if dp.size > 1 or jax.process_count() > 1:
    log.info("data parallel: %d devices in %d process(es), %s, batch %d per device",
             dp.size, jax.process_count(), dp.mode(method), int(config.train.batch_size) // dp.size)
  ks = tuple(config.eval.ks)
  metric = config.eval.metric
  valid_ev = Evaluator(dataset, "valid", ks=ks, chunk=int(config.eval.chunk))
  test_ds = dataset.replace(valid=dataset.extras["valid_full"]) if "valid_full" in dataset.extras \
      else dataset
  test_ev = Evaluator(test_ds, "test", ks=ks, chunk=int(config.eval.chunk))
  score_fn = functools.partial(model_scores, model)
  represent = jax.jit(model.represent)

  def evaluate(state, ev):
    mp = parallel.local(state.params["model"])
    return ev(score_fn, (mp, represent(mp, consts["graph"])))

  clean = noise_flags(config, dataset, method)
  state = init_state(config, model, method)
  ckpt = Checkpointer(workdir, keep=int(config.checkpoint.keep))
  abstract = dp.abstract(state)
  restored, meta = ckpt.restore_latest(abstract)
  if restored is not None:
    state = restored
    log.info("resumed from %s at epoch %d", os.path.join(workdir, "checkpoints"), meta["epoch"])
  else:
    state = dp.put_state(state)
    meta = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad_epochs": 0, "train_seconds": 0.0}
  run_epoch = make_epoch_fn(method, dp)
  mesh_consts = dp.put_replicated(consts)
  base_seed = int(config.seed)
  every, patience = int(config.eval.every), int(config.train.patience)
  max_epochs = int(config.train.epochs)
  jsonl = os.path.join(workdir, "metrics.jsonl")
  if restored is None and os.path.exists(jsonl) and primary:
    os.remove(jsonl)
  first_epoch = meta["epoch"]
  board = tensorboard.Writer(workdir, bool(config.log.tensorboard) and primary, first_epoch + 1)
  bar = _progress(max_epochs, meta["epoch"]) if primary else None
  log.info("setup %.1fs", time.time() - t_setup)
  # "patience" (stopped early: the run converged by the protocol) or "max_epochs"
  stop_reason = "patience" if meta["bad_epochs"] >= patience else "max_epochs"
  sampler = _Prefetcher(method, base_seed)
  with _Signals() as sigs, sampler:
    while meta["epoch"] < max_epochs and stop_reason != "patience":
      epoch = meta["epoch"]
      t0 = time.time()
      # host-side hooks see the state as is in one process (jax ops follow its shardings; no
      # gather of sharded tables), a process-local copy with several; a changed state goes
      # back onto the mesh
      view = state if jax.process_count() == 1 else parallel.local(state)
      hooked = method.on_epoch_start(view, epoch, consts)
      if hooked is not view:
        state = dp.put_state(hooked)
      del view, hooked
      batches = sampler.get(epoch, prefetch_next=epoch + 1 < max_epochs)
      step0 = int(parallel.local(state.step))
      state, metrics = run_epoch(state, batches, mesh_consts, method.phase(epoch))
      metrics = jax.device_get(metrics)
      losses = np.asarray(metrics["loss"])
      bad = ~np.isfinite(losses)
      if "grad_norm" in metrics:
        bad |= ~np.isfinite(np.asarray(metrics["grad_norm"]))
      if bad.any():
        first = int(np.argmax(bad))
        good = losses[:first][np.isfinite(losses[:first])]
        ckpt.close()
        board.close()
        raise NonFiniteError(
            f"non-finite loss or gradient at epoch {epoch + 1}, step "
            f"{step0 + first + 1} (loss {losses[first]}); last finite loss "
            f"{good[-1] if good.size else 'none this epoch'}; the last good checkpoint in "
            f"{os.path.join(workdir, 'checkpoints')} is kept")
      seconds = time.time() - t0
      meta["train_seconds"] += seconds
      meta["epoch"] = epoch + 1
      record = {"epoch": epoch + 1, "seconds": round(seconds, 3), "phase": method.phase(epoch),
                **epoch_means(metrics)}
      is_best = False
      if (epoch + 1) % every == 0 or epoch + 1 == max_epochs:
        te = time.time()
        valid = evaluate(state, valid_ev)
        record["valid"] = valid
        if clean is not None and method.phase(epoch) != "pretrain":  # (an untrained generator)
          local = parallel.local(state)
          w = (np.asarray(jax.device_get(local.aux["pair_weight"]))  # the weights it trains with
               if method.phase(epoch) == "frozen"
               else all_triplet_weights(method, local, dataset, consts)[3])
          record["weight_auroc"] = auroc(w, clean)
        record["eval_seconds"] = round(time.time() - te, 3)
        if valid[metric] > meta["best"]:
          meta.update(best=valid[metric], best_epoch=epoch + 1, bad_epochs=0)
          is_best = True
        else:
          meta["bad_epochs"] += every
      if primary:
        with open(jsonl, "a") as f:
          f.write(json.dumps(record) + "\n")
        board.epoch(record)
      line = (f"epoch {epoch + 1:4d} loss {record['loss']:.4f} {seconds:.2f}s"
              + (f" | valid {metric} {record['valid'][metric]:.4f}" if "valid" in record else "")
              + (f" w {record['w_mean']:.3f}+-{record['w_std']:.3f}" if "w_mean" in record else "")
              + (f" auroc {record['weight_auroc']:.3f}" if "weight_auroc" in record else ""))
      if bar is not None:
        bar.update(1)
        bar.set_postfix_str(line.split(" ", 2)[2])
      else:
        log.info(line)
      done = meta["bad_epochs"] >= patience
      if is_best or done or sigs.received or (epoch + 1) % int(config.checkpoint.every) == 0 \
          or epoch + 1 == max_epochs:
        ckpt.save(epoch + 1, state, meta, best=is_best)
      if done:
        stop_reason = "patience"
        log.info("early stop at epoch %d: no better valid %s for %d epochs (best %.4f at %d)",
                 epoch + 1, metric, patience, meta["best"], meta["best_epoch"])
        break
      if sigs.received:
        ckpt.close()
        board.close()
        if bar is not None:
          bar.close()
        log.warning("stopped by %s after epoch %d; run the same command to resume",
                    sigs.received, epoch + 1)
        raise SystemExit(128 + getattr(signal, sigs.received))
  if bar is not None:
    bar.close()
  best_state, _ = ckpt.restore_best(abstract)
  if best_state is None:
    best_state = state
  ckpt.close()
  final = {
      "dataset": dataset.name, "data_source": dataset.source, "backbone": model.name,
      "method": method.name,
      "seed": int(config.seed), "best_epoch": int(meta["best_epoch"]), "epochs": int(meta["epoch"]),
      "train_seconds": round(meta["train_seconds"], 2), "stop": stop_reason,
      "valid": evaluate(best_state, valid_ev), "test": evaluate(best_state, test_ev),
      "budget": config.get("budget", ""),
      # the phase that trained the reported checkpoint ("pretrain": a TIL-MI run still plain BPR
      # at its best); a run that no evaluation improved reports its last state, so its last epoch's
      "best_phase": method.phase((int(meta["best_epoch"]) or max(int(meta["epoch"]), 1)) - 1),
  }
  if final["best_phase"] == "pretrain":
    log.warning("the best checkpoint (epoch %d) is from pre-training, which is plain BPR: the "
                "reported metrics are not %s's (a shorter til.pretrain_epochs lets its own phase "
                "run)", final["best_epoch"], method.name)
  freeze_epoch = getattr(method, "freeze_epoch", 0)
  if freeze_epoch and final["best_phase"] != "frozen":
    log.warning("the best checkpoint (epoch %d of %d trained) is from before til.freeze_epoch=%d: "
                "the reported metrics are the unfrozen run's, i.e. its control's",
                final["best_epoch"], final["epochs"], freeze_epoch)
  if meta["epoch"] > first_epoch:  # a finished workdir read again adds no second test point
    board.final(final, int(meta["epoch"]))
  board.close()
  if primary:
    _atomic_json(os.path.join(workdir, "metrics.json"), final)
  if config.export_embeddings and primary:
    export_embeddings(model, parallel.local(best_state), consts, workdir)
  return final


def save_ids(dataset, workdir: str) -> None:
  """workdir/ids.npz: the original id of every internal user and item (the data layer's maps;
  identity when the files' ids were used as they are), for recommendations in the user's ids."""
  tmp = os.path.join(workdir, ".ids.tmp.npz")
  user_ids, item_ids = dataset.original_ids()
  np.savez(tmp, user_ids=user_ids, item_ids=item_ids)
  os.replace(tmp, os.path.join(workdir, "ids.npz"))


def export_embeddings(model, state, consts, workdir: str) -> None:
  """embeddings/user.npy and item.npy (float32) with scores = user @ item.T (dot backbones)."""
  u, i = jax.device_get(jax.jit(model.represent)(state.params["model"], consts["graph"]))
  out = os.path.join(workdir, "embeddings")
  os.makedirs(out, exist_ok=True)
  for name, arr in (("user", u), ("item", i)):
    tmp = os.path.join(out, f".{name}.tmp.npy")
    np.save(tmp, np.asarray(arr, np.float32))
    os.replace(tmp, os.path.join(out, f"{name}.npy"))


def restore(config, workdir: str, which: str = "best"):
  """The trained run in `workdir` for analysis: (dataset, model, method, state, consts).

  which: "best" (the best-valid checkpoint) or "latest"."""
  config_check.validate(config)
  dataset, model, method, consts = build(config)
  state = init_state(config, model, method)
  ckpt = Checkpointer(workdir)
  fn = ckpt.restore_best if which == "best" else ckpt.restore_latest
  # A target with a sharding: Orbax refuses one without when the run saved on other devices.
  restored, _ = fn(parallel.DataParallel(parallel.make_mesh(1)).abstract(state))
  ckpt.close()
  if restored is None:
    raise ConfigError(f"{workdir}: no {which} checkpoint to restore")
  return dataset, model, method, restored, consts


def noise_flags(config, dataset, method) -> np.ndarray | None:
  """extras["clean"] (aligned with train.to_pairs()) when the weight AUROC is to be logged: a
  method with a weight generator (the TIL family), `eval.weight_auroc`, and both clean and
  injected training pairs; else None."""
  clean = dataset.extras.get("clean")
  if (not config.eval.get("weight_auroc", True) or not hasattr(method, "core") or clean is None
      or np.all(clean) or not np.any(clean)
      or config.til.weight_norm == "group_softmax"):   # weights of single triplets: undefined
    return None
  return np.asarray(clean, bool)


def all_triplet_weights(method, state, dataset, consts, seed: int = 0, batch_size: int = 4096):
  """Weights the trained generator gives every training positive with one uniform negative:
  (users, pos, neg, weights) as NumPy arrays [nnz], in `dataset.train.to_pairs()` order."""
  users, pos = dataset.train.to_pairs()
  neg = method.sampler.sample(users, np.random.default_rng(seed))
  return users, pos, neg, triplet_weights(method, state, consts, users, pos, neg, seed, batch_size)
