"""The seven baselines: sampler distributions, the T-CE/R-CE/PRIS objectives, end-to-end runs."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from til_jax import objectives
from til_jax.baselines import methods as bm
from til_jax.baselines import samplers
from til_jax.data.dataset import CSR
from til_jax.errors import ConfigError

N_DRAWS = 40_000
TV_BOUND = 0.02  # expected TV of N_DRAWS draws over <= 16 items is about 0.006


def tiny_train(seed=0, n_users=6, n_items=16):
  """Users with 1..8 positives, item popularity skewed towards low ids."""
  rng = np.random.default_rng(seed)
  pop = 1.0 / np.arange(1, n_items + 1)
  rows, cols = [], []
  for u in range(n_users):
    n = 1 + u + (u % 3)
    rows += [u] * n
    cols += rng.choice(n_items, n, replace=False, p=pop / pop.sum()).tolist()
  return CSR.from_pairs(np.array(rows), np.array(cols), n_users, n_items)


def tv(a, b):
  return 0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum()


def empirical(users, draws, n_users, n_items):
  """[n_users, n_items] empirical distribution of draws per user."""
  counts = np.zeros((n_users, n_items))
  np.add.at(counts, (np.broadcast_to(users[:, None], draws.shape).ravel(), draws.ravel()), 1)
  return counts / counts.sum(axis=1, keepdims=True)


def restrict(p, train, u):
  p = np.array(p, np.float64)
  p[train.row(u)] = 0.0
  return p / p.sum()


def users_repeated(train, n=N_DRAWS):
  return np.repeat(np.arange(train.n_rows), n)


# ------------------------------------------------------------------------------------ samplers

def test_row_categorical_matches_and_skips_zero_mass():
  probs = np.array([[0.0, 0.2, 0.0, 0.8, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5], [0, 0, 1.0, 0, 0]])
  cat = samplers.RowCategorical(probs)
  rows = np.repeat(np.arange(3), N_DRAWS)
  draws = cat.sample(rows, np.random.default_rng(0))
  emp = empirical(rows, draws[:, None], 3, 5)
  for r in range(3):
    assert tv(emp[r], probs[r]) < TV_BOUND
  assert (probs[rows, draws] > 0).all()


def test_wbpr_popularity_distribution_and_no_positive():
  train = tiny_train()
  s = samplers.PopularityNegativeSampler(train)
  users = users_repeated(train)
  neg = s.sample(users, np.random.default_rng(1))
  assert neg.dtype == np.int32 and not train.contains(users, neg).any()
  pop = np.bincount(train.indices, minlength=train.n_cols).astype(float)
  emp = empirical(users, neg[:, None], train.n_rows, train.n_cols)
  for u in range(train.n_rows):
    target = restrict(pop, train, u)
    assert tv(emp[u], target) < TV_BOUND, u
    # the test can fail: the target is far from uniform over the non-positives
    assert tv(target, restrict(np.ones(train.n_cols), train, u)) > 0.1
  np.testing.assert_array_equal(neg, s.sample(users, np.random.default_rng(1)))  # per seed


def aobpr_target(u_repr, v_repr, lam, train, u):
  """p(j|u) = sum_f p(f|u) p(rank of j in f's ranking, read from the top if p_uf > 0),
  p(f|u) ~ |p_uf| sd_f, p(r) ~ exp(-r / lam), restricted to u's non-positives (brute force)."""
  n, d = v_repr.shape
  pf = np.abs(u_repr[u]) * v_repr.std(axis=0)
  pf /= pf.sum()
  pr = np.exp(-np.arange(n) / lam)
  pr /= pr.sum()
  p = np.zeros(n)
  for f in range(d):
    for j in range(n):
      higher = np.sum(v_repr[:, f] > v_repr[j, f]) if u_repr[u, f] > 0 else \
          np.sum(v_repr[:, f] < v_repr[j, f])
      p[j] += pf[f] * pr[higher]
  return restrict(p, train, u)


def test_aobpr_adaptive_distribution_and_no_positive():
  train = tiny_train(1)
  rng = np.random.default_rng(2)
  u_repr = rng.normal(size=(train.n_rows, 3))
  v_repr = rng.normal(size=(train.n_cols, 3)) * np.array([1.0, 0.3, 2.0])
  s = samplers.AdaptiveOversampler(train, lambda_fraction=0.2)
  s.refresh(u_repr, v_repr)
  users = users_repeated(train)
  neg = s.sample(users, np.random.default_rng(3))
  assert not train.contains(users, neg).any()
  emp = empirical(users, neg[:, None], train.n_rows, train.n_cols)
  for u in range(train.n_rows):
    target = aobpr_target(u_repr, v_repr, s.lam, train, u)
    np.testing.assert_allclose(s.target(u), target, atol=1e-12)
    assert tv(emp[u], target) < TV_BOUND, u
    assert tv(target, restrict(np.ones(train.n_cols), train, u)) > 0.1
  # a refresh with other factors changes the distribution
  s.refresh(u_repr, -v_repr)
  assert tv(s.target(0), aobpr_target(u_repr, v_repr, s.lam, train, 0)) > 0.1
  np.testing.assert_allclose(s.target(0), aobpr_target(u_repr, -v_repr, s.lam, train, 0), atol=1e-12)


def test_truncated_geometric_is_exact():
  r = samplers.truncated_geometric(10, 3.0, 200_000, np.random.default_rng(0))
  p = np.exp(-np.arange(10) / 3.0)
  assert r.min() >= 0 and r.max() <= 9
  assert tv(np.bincount(r, minlength=10) / r.size, p / p.sum()) < 0.005


def pris_target(u_repr, centres, membership, train, u):
  """Q(j|u) = P(c_j|u) / (n_c - n_cu), P(c|u) ~ exp(p_u . mu_c) (n_c - n_cu)."""
  k = centres.shape[0]
  n_c = np.bincount(membership, minlength=k)
  n_cu = np.bincount(membership[train.row(u)], minlength=k)
  pc = np.exp(centres @ u_repr[u]) * (n_c - n_cu)
  pc /= pc.sum()
  q = np.zeros(train.n_cols)
  for j in range(train.n_cols):
    c = membership[j]
    q[j] = pc[c] / (n_c[c] - n_cu[c]) if n_c[c] > n_cu[c] else 0.0
  q[train.row(u)] = 0.0
  return q


def test_pris_cluster_distribution_log_q_and_no_positive():
  train = tiny_train(2)
  rng = np.random.default_rng(4)
  u_repr = rng.normal(size=(train.n_rows, 4))
  centres = rng.normal(size=(5, 4))  # cluster 4 is empty
  membership = np.arange(train.n_cols) % 4
  s = samplers.ClusterImportanceSampler(train, n_negatives=4)
  s.refresh(u_repr, centres, membership)
  users = np.repeat(np.arange(train.n_rows), N_DRAWS // 4)
  neg, log_q = s.sample(users, np.random.default_rng(5))
  assert neg.shape == (users.size, 4) and log_q.shape == neg.shape and log_q.dtype == np.float32
  assert not train.contains(np.repeat(users, 4), neg.ravel()).any()
  emp = empirical(users, neg, train.n_rows, train.n_cols)
  for u in range(train.n_rows):
    target = pris_target(u_repr, centres, membership, train, u)
    np.testing.assert_allclose(target.sum(), 1.0, rtol=1e-12)
    assert tv(emp[u], target) < TV_BOUND, u
    assert tv(target, restrict(np.ones(train.n_cols), train, u)) > 0.05
    rows = users == u
    np.testing.assert_allclose(log_q[rows], np.log(target[neg[rows]]), rtol=1e-5)
  # before the first refresh: uniform over the non-positives, log Q = -log(n_items - |I_u|)
  s2 = samplers.ClusterImportanceSampler(train, n_negatives=2)
  neg2, log_q2 = s2.sample(users, np.random.default_rng(6))
  assert not train.contains(np.repeat(users, 2), neg2.ravel()).any()
  np.testing.assert_allclose(log_q2, -np.log(train.n_cols - train.lengths[users])[:, None]
                             * np.ones((1, 2)), rtol=1e-6)
  emp2 = empirical(users, neg2, train.n_rows, train.n_cols)
  assert max(tv(emp2[u], restrict(np.ones(train.n_cols), train, u)) for u in range(6)) < TV_BOUND


def test_shuffle_batches_covers_every_row_once():
  arrays = {"users": np.arange(23), "neg": np.arange(46).reshape(23, 2)}
  b = bm.shuffle_batches(arrays, np.random.default_rng(0), 5)
  assert b["users"].shape == (5, 5) and b["neg"].shape == (5, 5, 2) and b["mask"].sum() == 23
  real = b["users"][b["mask"]]
  np.testing.assert_array_equal(np.sort(real), np.arange(23))
  np.testing.assert_array_equal(b["neg"][b["mask"]], np.stack([2 * real, 2 * real + 1], 1))


# ---------------------------------------------------------------------------------- objectives

def test_drop_rate_schedule_is_the_original_linspace():
  ref = np.linspace(0, 0.2, 30000)
  for t in (0, 1, 777, 15000, 29999):
    np.testing.assert_allclose(float(objectives.drop_rate(t, 0.2, 30000)), ref[t], rtol=1e-6)
  assert float(objectives.drop_rate(10**6, 0.2, 30000)) == pytest.approx(0.2)


@pytest.mark.parametrize("step", [0, 3750, 7500, 30000])
def test_tce_drops_the_scheduled_largest_loss_positives(step):
  rng = np.random.default_rng(7)
  b = 25
  pos, neg = rng.normal(size=b).astype(np.float32), rng.normal(size=b).astype(np.float32)
  rate = objectives.drop_rate(step, 0.2, 30001)  # float32: 0, 0.025, 0.05, 0.2
  rate64 = 0.2 * min(1.0, step / 30000)  # the official schedule and count, in float64
  n_drop = 2 * b - int((1 - rate64) * 2 * b)
  assert n_drop == {0: 0, 3750: 2, 7500: 3, 30000: 10}[step]
  bce_pos = np.log1p(np.exp(-pos.astype(np.float64)))
  bce_neg = np.log1p(np.exp(neg.astype(np.float64)))
  dropped = np.argsort(-bce_pos)[:n_drop]  # the positives with the largest loss
  keep_pos = np.ones(b, bool)
  keep_pos[dropped] = False
  expected = (bce_pos[keep_pos].sum() + bce_neg.sum()) / (keep_pos.sum() + b)
  got = jax.jit(objectives.tce_loss)(jnp.asarray(pos), jnp.asarray(neg), rate, jnp.ones(b))
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  keep = jax.jit(objectives.truncated_mask)(
      jnp.concatenate([jnp.asarray(bce_pos), jnp.asarray(bce_neg)]), rate, None, jnp.arange(2 * b) < b)
  np.testing.assert_array_equal(np.asarray(keep), np.concatenate([keep_pos, np.ones(b, bool)]))


def test_truncation_ignores_padding_and_tce_bpr_drops_largest_bpr():
  losses = jnp.array([5.0, 1.0, 9.0, 3.0, 100.0, 7.0])
  mask = jnp.array([1, 1, 1, 1, 0, 1])
  keep = jax.jit(objectives.truncated_mask)(losses, 0.4, mask)  # 5 real rows: drop 2 (9 and 7)
  np.testing.assert_array_equal(np.asarray(keep), [True, True, False, True, False, False])
  pos = jnp.array([0.0, 2.0, -1.0, 1.0])
  neg = jnp.zeros(4)
  bpr = -np.log(1 / (1 + np.exp(-np.asarray(pos))))
  got = jax.jit(objectives.tce_bpr_loss)(pos, neg, 0.25)  # drops the triplet with pos = -1
  np.testing.assert_allclose(float(got), np.mean(bpr[[0, 1, 3]]), rtol=1e-6)


def test_rce_weights_formula_and_no_gradient():
  pos = jnp.array([2.0, -1.0, 0.3])
  neg = jnp.array([-0.5, 1.5, 0.0])
  beta = 0.25
  logits, labels, _ = objectives.pointwise(pos, neg)
  w = objectives.rce_weights(logits, labels, beta)
  sig = 1 / (1 + np.exp(-np.asarray(logits)))
  np.testing.assert_allclose(np.asarray(w), np.where(np.asarray(labels) > 0, sig, 1 - sig) ** beta,
                             rtol=1e-6)
  # d loss / d logit = w * d BCE / d logit = w * (sigmoid - label) / n: w carries no gradient
  g = jax.jit(jax.grad(lambda x: objectives.rce_loss(x[:3], x[3:], beta)))(logits)
  np.testing.assert_allclose(np.asarray(g), np.asarray(w) * (sig - np.asarray(labels)) / 6, rtol=1e-5)


def test_rce_bpr_weights_formula_and_no_gradient():
  pos, neg, beta = jnp.array([2.0, -1.0, 0.3]), jnp.array([-0.5, 1.5, 0.0]), 0.2
  d = np.asarray(pos - neg)
  sig = 1 / (1 + np.exp(-d))
  w = objectives.rce_bpr_weights(pos, neg, beta)
  np.testing.assert_allclose(np.asarray(w), sig ** beta, rtol=1e-6)
  g = jax.jit(jax.grad(lambda p: objectives.rce_bpr_loss(p, neg, beta)))(pos)
  np.testing.assert_allclose(np.asarray(g), sig ** beta * -(1 - sig) / 3, rtol=1e-5)


def test_pris_weights_closed_form_and_no_gradient():
  neg = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
  log_q = jnp.log(jnp.array([[0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]))
  pos = jnp.array([1.0, -0.5])
  w = objectives.pris_weights(neg, log_q)
  # w_l = (exp(y_l) / Q_l) / sum_l' (exp(y_l') / Q_l')
  ratio = np.exp(np.asarray(neg)) / np.exp(np.asarray(log_q))
  np.testing.assert_allclose(np.asarray(w), ratio / ratio.sum(1, keepdims=True), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(w[1]), [0.2, 0.4, 0.4], rtol=1e-6)
  # gradient w.r.t. the negative scores: w_l * sigmoid(y_uj_l - y_ui) / B, nothing through w
  g = jax.jit(jax.grad(lambda n: objectives.pris_loss(pos, n, log_q)))(neg)
  sig = 1 / (1 + np.exp(-(np.asarray(neg) - np.asarray(pos)[:, None])))
  np.testing.assert_allclose(np.asarray(g), np.asarray(w) * sig / 2, rtol=1e-5)


def test_settings_defaults_and_errors():
  from ml_collections import ConfigDict

  from configs import default
  c = default.get_config()
  assert bm.settings(c)["num_gradual"] == 30000   # the one default, in configs/default.py
  c.baselines.beta = 0.5
  s = bm.settings(c)
  assert s["beta"] == 0.5 and s["drop_rate"] == 0.2
  with pytest.raises(ConfigError, match="config.baselines.drop_rate: missing"):
    bm.settings(ConfigDict({"baselines": {"beta": 1}}))
  c.baselines.drop_rate = 1.5
  with pytest.raises(ConfigError, match="drop_rate"):
    bm.settings(c)


# ---------------------------------------------------------------------------------- end to end

def tiny_config(method, backbone="mf"):
  from configs.synthetic_mf import get_config
  c = get_config()
  c.method = method
  c.model.name = backbone
  c.data.synthetic = {"n_users": 60, "n_items": 40, "n_clusters": 4, "min_items": 8,
                      "max_items": 14}
  c.train.batch_size = 128
  c.train.epochs = 3
  c.eval.every = 3
  c.optim.lr = 1e-2
  c.baselines.pris_clusters, c.baselines.pris_negatives, c.baselines.num_gradual = 4, 3, 4
  return c


@pytest.mark.parametrize("method", ["aobpr", "wbpr", "pris", "tce", "rce", "tce_bpr", "rce_bpr"])
def test_each_baseline_trains_end_to_end(method, tmp_path):
  from til_jax.train.loop import train_and_evaluate
  res = train_and_evaluate(tiny_config(method), str(tmp_path))
  assert res["method"] == method and res["epochs"] == 3
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 3
  import json
  recs = [json.loads(x) for x in lines]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in recs)
  assert recs[-1]["loss"] < recs[0]["loss"]  # it learns
  assert 0.0 <= res["test"]["recall@20"] <= 1.0
  if method in ("tce", "tce_bpr"):
    assert recs[-1]["drop_rate"] == pytest.approx(0.2)  # num_gradual 4 steps: reached


@pytest.mark.skipif(importlib.util.find_spec("til_jax.models.lightgcn") is None,
                    reason="no LightGCN backbone")
@pytest.mark.parametrize("method", ["pris"])
def test_baselines_train_with_lightgcn(method, tmp_path):
  from til_jax.train.loop import train_and_evaluate
  res = train_and_evaluate(tiny_config(method, "lightgcn"), str(tmp_path))
  assert res["backbone"] == "lightgcn" and np.isfinite(res["test"]["recall@20"])
