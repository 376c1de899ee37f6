"""`til.freeze_epoch`: the generator's weights frozen per training pair, then weighted BPR."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from til_jax.bpr import bpr_objective, bpr_step, plain_state
from til_jax.data.dataset import CSR
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.errors import ConfigError
from til_jax.models import MF


def _csr(n_users=6, n_items=9, seed=0):
  rng = np.random.default_rng(seed)
  rows = [np.sort(rng.choice(n_items, size=rng.integers(1, 4), replace=False))
          for _ in range(n_users)]
  users = np.concatenate([np.full(r.size, u) for u, r in enumerate(rows)])
  return CSR.from_pairs(users, np.concatenate(rows), n_users, n_items)


def test_epoch_triplets_pair_index_names_each_triplets_positive_and_changes_no_draw():
  train = _csr()
  sampler = UniformNegativeSampler(train)
  a = epoch_triplets(train, sampler, np.random.default_rng(3), batch_size=4)
  b = epoch_triplets(train, sampler, np.random.default_rng(3), batch_size=4, with_pair=True)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  users, items = train.to_pairs()
  np.testing.assert_array_equal(users[b["pair"]], b["users"])
  np.testing.assert_array_equal(items[b["pair"]], b["pos"])
  # every real row names a distinct pair, and every pair is used once
  real = b["pair"][b["mask"]]
  np.testing.assert_array_equal(np.sort(real), np.arange(train.nnz))


def test_weighted_bpr_objective_matches_numpy():
  rng = np.random.default_rng(1)
  model = MF(n_users=4, n_items=6, dim=3)
  U, I = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
  params = {"model": {"user": jnp.asarray(U), "item": jnp.asarray(I)}}
  users, pos, neg = np.array([0, 1, 3, 2]), np.array([2, 3, 5, 0]), np.array([4, 0, 1, 5])
  w, mask = np.array([0.5, 2.0, 1.3, 9.0]), np.array([1, 1, 1, 0], bool)
  batch = {"users": users, "pos": pos, "neg": neg, "mask": mask, "weight": w}
  got = float(bpr_objective(params, model, {}, batch, l2=0.0))
  x = np.einsum("bd,bd->b", U[users], I[pos] - I[neg])
  want = np.sum(w * np.log1p(np.exp(-x)) * mask) / mask.sum()
  np.testing.assert_allclose(got, want, rtol=1e-6)
  unweighted = float(bpr_objective(params, model, {}, {**batch, "weight": np.ones(4)}, l2=0.0))
  np.testing.assert_allclose(unweighted, np.sum(np.log1p(np.exp(-x)) * mask) / 3, rtol=1e-6)


def _tiny(tmp_path, method="til_ui", **kw):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  data = write_split(str(tmp_path / "data"))
  kw = {"til.freeze_epoch": 2, "til.freeze_temper": 0.5, "eval.every": 1, **kw}
  return tiny_config(data, method, epochs=4, **kw)


def test_frozen_step_is_plain_bpr_on_the_batch_its_integer_weights_expand_to(tmp_path):
  """Weights {0, 1, 2} (mean 1 over the batch): the frozen step equals plain BPR on the batch
  where each triplet appears `weight` times (same size; L2 off, whose batch mean would count
  rows) -- a pair index read wrongly (by position, say) gives another gradient."""
  from til_jax.train import loop
  cfg = _tiny(tmp_path, **{"optim.l2": 0.0})
  dataset, model, method, consts = loop.build(cfg)
  state = loop.init_state(cfg, model, method)
  nnz = dataset.train.nnz
  rng = np.random.default_rng(0)
  pair_w = rng.permutation(np.resize([0.0, 2.0, 1.0, 1.0], nnz)).astype(np.float32)
  state = method.core.freeze(state, pair_w)
  # a batch of 8 pairs (one of each weight pattern), in a scrambled order
  pairs = rng.permutation(nnz)[:8]
  while pair_w[pairs].sum() != 8:
    pairs = rng.permutation(nnz)[:8]
  users, items = dataset.train.to_pairs()
  neg = method.sampler.sample(users[pairs], rng)
  batch = {"users": users[pairs], "pos": items[pairs], "neg": neg, "mask": np.ones(8, bool),
           "pair": pairs.astype(np.int32)}
  got, m = jax.jit(lambda s, b: method.core.frozen_update(s, b, consts))(state, batch)
  rep = np.repeat(np.arange(8), pair_w[pairs].astype(int))
  expanded = {k: batch[k][rep] for k in ("users", "pos", "neg", "mask")}
  ref = plain_state(state.params, method.core.tx).replace(opt_state=state.opt_state)
  want, mr = bpr_step(ref, expanded, model, consts["graph"], method.core.tx, 0.0)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(m["loss"]), float(mr["loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(m["w_mean"]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(m["w_std"]), pair_w[pairs].std(), rtol=1e-5)
  assert np.isnan(float(m["hypergrad_norm"]))
  # the generator and eta are not touched
  for a, b in zip(jax.tree.leaves(got.gen_params), jax.tree.leaves(state.gen_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_freeze_weights_average_the_generator_over_negatives_then_temper_and_normalise(tmp_path):
  from til_jax.train import loop, methods
  cfg = _tiny(tmp_path, **{"til.freeze_negatives": 3})
  dataset, model, method, consts = loop.build(cfg)
  state = loop.init_state(cfg, model, method)
  # a generator whose weights spread: perturb its parameters
  leaves, tree = jax.tree.flatten(state.gen_params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  state = state.replace(gen_params=jax.tree.unflatten(
      tree, [x + jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
  w = method.freeze_weights(state, consts)
  users, pos = dataset.train.to_pairs()
  rng = np.random.default_rng([int(cfg.seed), methods.FREEZE_SEED_SALT])
  raw = np.mean([methods.triplet_weights(method, state, consts, users, pos,
                                         method.sampler.sample(users, rng), seed=k)
                 for k in range(3)], axis=0)
  want = raw ** 0.5 / np.mean(raw ** 0.5)
  np.testing.assert_allclose(w, want, rtol=1e-5)
  assert w.std() > 0.01 and abs(w.mean() - 1.0) < 1e-5


def test_schedule_phases_batches_and_refusals(tmp_path):
  from til_jax.train import loop
  cfg = _tiny(tmp_path)
  _, _, method, _ = loop.build(cfg)
  assert [method.phase(e) for e in range(4)] == ["main", "main", "frozen", "frozen"]
  b = method.epoch_batches(2, np.random.default_rng(0))
  assert "pair" in b and "outer" not in b                      # weighted BPR: no outer batch
  assert "pair" not in method.epoch_batches(1, np.random.default_rng(0))
  for kw, field in (({"til.freeze_temper": 0.0}, "config.til.freeze_temper"),
                    ({"til.freeze_epoch": -1}, "config.til.freeze_epoch"),
                    ({"til.freeze_negatives": 0}, "config.til.freeze_negatives")):
    with pytest.raises(ConfigError, match=field):
      loop.config_check.validate(_tiny(tmp_path, **kw))
  with pytest.raises(ConfigError, match="config.til.freeze_epoch"):   # inside pre-training
    loop.build(_tiny(tmp_path, "til_mi", **{"til.pretrain_epochs": 2}))
  with pytest.raises(ConfigError, match="config.til.freeze_epoch"):   # group weights
    loop.build(_tiny(tmp_path, **{"train.negatives": 2, "til.weight_norm": "group_softmax"}))
  # til.mode=paper is the paper's TIL: the method it builds never freezes
  assert loop.build(_tiny(tmp_path, **{"til.mode": "paper"}))[2].freeze_epoch == 0
  # the loop draws a TIL epoch's batches ahead (its hook only writes the frozen weights), not
  # those of a sampler that reads the model (AOBPR)
  assert loop.prefetches(method) and loop.prefetches(loop.build(_tiny(tmp_path, "bpr"))[2])
  assert not loop.prefetches(loop.build(_tiny(tmp_path, "aobpr"))[2])


def test_a_frozen_run_logs_its_weights_auroc_and_resumes_identically(tmp_path):
  """Through the loop on noisy data: the frozen epochs log the AUROC of the weights they train
  with (constant), and a run stopped at the freeze epoch or after it, then resumed, ends where
  the uninterrupted one does."""
  from til_jax.evaluation import auroc
  from til_jax.train import loop
  cfg = _tiny(tmp_path, **{"data.noise": "pos"})
  ref = loop.train_and_evaluate(cfg, str(tmp_path / "ref"))
  lines = [json.loads(x) for x in open(tmp_path / "ref" / "metrics.jsonl")]
  assert [x["phase"] for x in lines] == ["main", "main", "frozen", "frozen"]
  assert lines[2]["weight_auroc"] == lines[3]["weight_auroc"]
  assert lines[2]["w_std"] > 0
  dataset, _, method, state, _ = loop.restore(cfg, str(tmp_path / "ref"), "latest")
  w = np.asarray(state.aux["pair_weight"])
  assert abs(auroc(w, dataset.extras["clean"]) - lines[3]["weight_auroc"]) < 1e-9
  def record(workdir):   # every epoch's record, less its timings
    return [{k: v for k, v in json.loads(x).items() if "seconds" not in k}
            for x in open(f"{workdir}/metrics.jsonl")]
  for stop in (2, 3):   # stopped at the freeze (computed on resume) and after it (restored)
    work = str(tmp_path / f"stop{stop}")
    with cfg.unlocked():
      cfg.train.epochs = stop
    loop.train_and_evaluate(cfg, work)
    with cfg.unlocked():
      cfg.train.epochs = 4
    got = loop.train_and_evaluate(cfg, work)
    assert got["valid"] == ref["valid"] and got["test"] == ref["test"], stop
    assert record(work) == record(tmp_path / "ref"), stop
    resumed = loop.restore(cfg, work, "latest")[3]
    np.testing.assert_array_equal(np.asarray(resumed.aux["pair_weight"]), w)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(state.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_whose_best_is_before_the_freeze_says_it_reports_its_control(tmp_path, caplog):
  """A run that ends before `til.freeze_epoch` (or peaks before it) reports the unfrozen run:
  metrics.json's best_phase says "main" and the log says what that means."""
  import logging

  from til_jax.train import loop
  cfg = _tiny(tmp_path, **{"til.freeze_epoch": 3, "train.epochs": 2})
  with caplog.at_level(logging.WARNING, logger="til_jax"):
    got = loop.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert got["best_phase"] == "main" and got["epochs"] == 2
  assert "before til.freeze_epoch=3" in caplog.text and "control" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="til_jax"):   # no freeze: nothing to say
    loop.train_and_evaluate(_tiny(tmp_path, **{"til.freeze_epoch": 0, "train.epochs": 2}),
                            str(tmp_path / "plain"))
  assert "freeze_epoch" not in caplog.text


def test_frozen_epochs_run_with_row_sparse_adam(tmp_path):
  """optim.name=sparse_adam: the frozen epochs carry the row index and `pair`, and the lazy step
  moves only the rows a frozen batch reads."""
  from til_jax.train import loop
  cfg = _tiny(tmp_path, **{"optim.name": "sparse_adam", "train.epochs": 3})
  loop.train_and_evaluate(cfg, str(tmp_path / "w"))
  lines = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
  assert [x["phase"] for x in lines] == ["main", "main", "frozen"]
  assert np.isfinite(lines[-1]["loss"]) and lines[-1]["w_std"] > 0
  dataset, model, method, state, consts = loop.restore(cfg, str(tmp_path / "w"), "latest")
  b = jax.tree.map(lambda v: v[0], method.epoch_batches(3, np.random.default_rng(0)))
  assert "pair" in b and "rows_item" in b
  new, _ = jax.jit(lambda s, x: method.core.frozen_update(s, x, consts))(state, b)
  read = np.unique(np.concatenate([b["pos"], b["neg"]]))
  moved = np.flatnonzero(np.any(np.asarray(new.params["model"]["item"])
                                != np.asarray(state.params["model"]["item"]), axis=1))
  assert set(moved) <= set(read) and len(moved) > 0
