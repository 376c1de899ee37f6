"""Tests for til_jax.evaluation: a hand-computed table, a NumPy brute-force reference on random
data (through the block path of block_top_k, with and without exact ties) and a popularity
baseline sanity check. Every test compiles small shapes only: the file runs in ~10-15 s."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from til_jax.data.dataset import CSR, Dataset
from til_jax.evaluation import Evaluator, block_top_k, dot_score_fn, popularity_scores


def _csr(rows: list[list[int]], n_items: int) -> CSR:
  r = np.repeat(np.arange(len(rows)), [len(x) for x in rows])
  c = np.array([i for x in rows for i in x], dtype=np.int64)
  return CSR.from_pairs(r, c, len(rows), n_items)


def _dataset(train, valid, test, n_items) -> Dataset:
  return Dataset("toy", len(train), n_items, _csr(train, n_items), _csr(valid, n_items),
                 _csr(test, n_items))


def _table_scores(params, users):
  """Score function reading a fixed table: params = table [n_users, n_items] -> [c, n_items]."""
  return params[users]


# 3 users, 8 items. Scores by item id:
TABLE = np.array([
    # u0: train {0}; valid {1, 5}; test {3}
    [9.0, 8.0, 7.0, 7.0, 6.0, 5.0, 1.0, 0.0],
    # u1: train {2, 3}; valid {}; test {0, 4, 5, 6}
    [1.0, 3.0, 9.0, 9.0, 3.0, 3.0, 0.0, 2.0],
    # u2: train {}; valid {4, 7}; test {7}
    [0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0],
], np.float32)
TRAIN = [[0], [2, 3], []]
VALID = [[1, 5], [], [4, 7]]
TEST = [[3], [0, 4, 5, 6], [7]]
L2 = np.log2


def test_hand_computed_valid():
  ds = _dataset(TRAIN, VALID, TEST, 8)
  ev = Evaluator(ds, "valid", ks=(2, 3))
  # u1 has no valid targets: averaged over u0 and u2 only.
  assert ev.n_users == 2
  m = ev.per_user(_table_scores, jnp.asarray(TABLE))
  # u0 ranking (item 0 masked): 1 (8), 2 (7), 3 (7, tie: lower id first), 4, 5 ...
  #   top-2 = [1, 2]: hits [1, 0]; top-3 = [1, 2, 3]: hits [1, 0, 0]; |T| = 2.
  # u2 ranking: 4 (5), 7 (5), 0, 1, ... (ties by id): top-2 = [4, 7]: hits [1, 1].
  np.testing.assert_allclose(m["recall@2"], [1 / 2, 1.0], atol=1e-6)
  np.testing.assert_allclose(m["recall@3"], [1 / 2, 1.0], atol=1e-6)
  np.testing.assert_allclose(m["precision@2"], [1 / 2, 1.0], atol=1e-6)
  np.testing.assert_allclose(m["precision@3"], [1 / 3, 2 / 3], atol=1e-6)
  np.testing.assert_allclose(m["hitrate@2"], [1.0, 1.0], atol=1e-6)
  idcg2 = 1 + 1 / L2(3)
  np.testing.assert_allclose(m["ndcg@2"], [1 / idcg2, 1.0], atol=1e-6)
  np.testing.assert_allclose(m["ndcg@3"], [1 / idcg2, 1.0], atol=1e-6)
  means = ev(_table_scores, jnp.asarray(TABLE))
  assert means["recall@2"] == pytest.approx(0.75, abs=1e-6)
  assert means["ndcg@2"] == pytest.approx((1 / idcg2 + 1) / 2, abs=1e-6)
  assert means["precision@3"] == pytest.approx(0.5, abs=1e-6)


def test_hand_computed_test():
  ds = _dataset(TRAIN, VALID, TEST, 8)
  ev = Evaluator(ds, "test", ks=(2, 3))
  assert ev.n_users == 3
  m = ev.per_user(_table_scores, jnp.asarray(TABLE))
  # u0: train {0} and valid {1, 5} masked: ranking 2 (7), 3 (7), 4 (6), 6, 7:
  #   top-2 = [2, 3]: hits [0, 1]; top-3 = [2, 3, 4]; |T| = 1.
  # u1: train {2, 3} masked: ranking 1 (3), 4 (3), 5 (3), 7 (2), 0 (1), 6 (0):
  #   top-2 = [1, 4]: hits [0, 1]; top-3 = [1, 4, 5]: hits [0, 1, 1]; |T| = 4 > k.
  # u2: valid {4, 7} masked, so the only target (7) ranks below every 0-score item: no hit.
  np.testing.assert_allclose(m["recall@2"], [1.0, 1 / 4, 0.0], atol=1e-6)
  np.testing.assert_allclose(m["recall@3"], [1.0, 2 / 4, 0.0], atol=1e-6)
  np.testing.assert_allclose(m["precision@2"], [1 / 2, 1 / 2, 0.0], atol=1e-6)
  np.testing.assert_allclose(m["precision@3"], [1 / 3, 2 / 3, 0.0], atol=1e-6)
  np.testing.assert_allclose(m["hitrate@3"], [1.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(m["ndcg@2"], [1 / L2(3), (1 / L2(3)) / (1 + 1 / L2(3)), 0.0],
                             atol=1e-6)
  idcg3 = 1 + 1 / L2(3) + 1 / L2(4)
  np.testing.assert_allclose(m["ndcg@3"], [1 / L2(3), (1 / L2(3) + 1 / L2(4)) / idcg3, 0.0],
                             atol=1e-6)
  # Evaluating only some users: u2 is kept, u1 is dropped.
  sub = Evaluator(ds, "test", ks=(2,), users=np.array([2, 0]))
  np.testing.assert_allclose(sub.per_user(_table_scores, jnp.asarray(TABLE))["recall@2"], [0.0, 1.0])


def _reference(scores, exclude: CSR, targets: CSR, ks):
  """NumPy brute force: stable sort of the masked scores (ties to the lower id)."""
  out = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "precision", "hitrate")}
  for u in range(scores.shape[0]):
    t = targets.row(u)
    if t.size == 0:
      continue
    s = scores[u].astype(np.float64).copy()
    s[exclude.row(u)] = -np.inf
    order = np.argsort(-s, kind="stable")
    for k in ks:
      hit = np.isin(order[:k], t).astype(np.float64)
      disc = 1 / np.log2(np.arange(2, k + 2))
      out[f"recall@{k}"].append(hit.sum() / t.size)
      out[f"ndcg@{k}"].append((hit * disc).sum() / disc[:min(t.size, k)].sum())
      out[f"precision@{k}"].append(hit.sum() / k)
      out[f"hitrate@{k}"].append(float(hit.any()))
  return {k: np.array(v) for k, v in out.items()}


def _random_dataset(rng, n_users, n_items, density=0.02):
  """Random disjoint train / valid / test; ~10% of the users have no valid and no test items."""
  part = rng.choice(4, size=(n_users, n_items), p=[1 - density, density / 2, density / 4, density / 4])
  no_targets = rng.random(n_users) < 0.1
  part[no_targets] = np.where(part[no_targets] == 1, 1, 0)
  mk = lambda v: CSR.from_pairs(*np.nonzero(part == v), n_users, n_items)
  return Dataset("rand", n_users, n_items, mk(1), mk(2), mk(3))


@pytest.mark.parametrize("split,ties", [("valid", False), ("test", True), ("test", "negative")])
def test_matches_bruteforce(split, ties):
  """Random CSR splits and scores vs the NumPy brute force, per user. The scores are a float32
  table (so both sides rank the very same values): real-valued, small integers with many
  exact ties (ties must go to the lower item id, also across the blocks of block_top_k), or all
  negative (an excluded item masked with 0 instead of -inf would then enter every top-k)."""
  rng = np.random.default_rng(0)
  n_users, n_items = 300, 3001              # 3001 = 93 * 32 + 25: a short last block
  ds = _random_dataset(rng, n_users, n_items)
  if ties == "negative":
    table = -1.0 - np.abs(rng.standard_normal((n_users, n_items))).astype(np.float32)
  elif ties:
    table = rng.integers(0, 30, size=(n_users, n_items)).astype(np.float32)
  else:
    table = rng.standard_normal((n_users, 8)).astype(np.float32) @ \
        rng.standard_normal((n_items, 8)).astype(np.float32).T
  ks = (1, 5, 20)
  ev = Evaluator(ds, split, ks=ks, chunk=64)
  assert n_items > 2 * max(ks) * ev.block    # block_top_k takes its block path
  assert 0 < ev.n_users < n_users            # some users have no targets
  got = ev.per_user(_table_scores, jnp.asarray(table))
  exclude = ds.train if split == "valid" else ds.train.union(ds.valid)
  want = _reference(table, exclude, getattr(ds, split), ks)
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
  means = ev(_table_scores, jnp.asarray(table))
  for name in want:
    assert means[name] == pytest.approx(want[name].mean(), abs=1e-6)


def test_dot_score_fn():
  rng = np.random.default_rng(3)
  u, i = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((7, 4)).astype(np.float32)
  got = dot_score_fn((jnp.asarray(u), jnp.asarray(i)), jnp.array([4, 0]))
  np.testing.assert_allclose(np.asarray(got), u[[4, 0]] @ i.T, rtol=1e-5, atol=1e-5)


def test_block_top_k():
  """block_top_k == a stable descending argsort: heavy ties, light ties, no ties, -inf runs, the
  best items in the short last block (1999 = 62 * 32 + 15) and rows with fewer than k finite."""
  rng = np.random.default_rng(2)
  rows = [rng.integers(0, 5, (8, 1999)), rng.integers(0, 1000, (8, 1999)),
          rng.standard_normal((8, 1999))]
  s = np.concatenate(rows).astype(np.float32)
  s[:, :7] = -np.inf
  s[3, -5:] = 1e4                     # top items past the last full block
  s[4, -1] = 1e4
  s[5, :] = -np.inf                   # nothing finite: lowest ids first
  s[6, :] = -np.inf                   # fewer finite items than k
  s[6, [100, 500, 1990]] = 1.0
  want = np.argsort(-s, axis=1, kind="stable")[:, :12]
  got = np.asarray(jax.jit(block_top_k, static_argnums=(1, 2))(jnp.asarray(s), 12, 32))
  np.testing.assert_array_equal(got, want)


def test_popularity_baseline():
  # Item popularity in train: item 3 (3 users), item 1 (2), item 0 (1), others 0.
  train = [[3, 1], [3, 1], [3, 0], []]
  valid = [[0], [2], [1], [3]]
  ds = _dataset(train, valid, [[], [], [], []], 5)
  user_repr, item_repr = popularity_scores(ds)
  assert user_repr.shape == (4, 1) and item_repr.shape == (5, 1)
  np.testing.assert_array_equal(item_repr[:, 0], [1, 2, 0, 3, 0])
  m = Evaluator(ds, "valid", ks=(1, 2)).per_user(dot_score_fn, (user_repr, item_repr))
  # u0: ranking 0, 2, 4 -> hit at 1. u1: 0, 2, 4 -> hit at 2. u2: 1, 2, 4 -> hit at 1.
  # u3 (no train): 3, 1, 0 -> hit at 1.
  np.testing.assert_allclose(m["hitrate@1"], [1, 0, 1, 1])
  np.testing.assert_allclose(m["recall@2"], [1, 1, 1, 1])
  np.testing.assert_allclose(m["ndcg@2"], [1, 1 / np.log2(3), 1, 1], atol=1e-6)


def test_auroc_is_the_pairwise_probability_with_ties_half():
  from til_jax.evaluation import auroc
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, 60).astype(float)        # many ties
  pos = rng.random(60) < 0.4
  p, n = scores[pos], scores[~pos]
  brute = ((p[:, None] > n[None]).sum() + 0.5 * (p[:, None] == n[None]).sum()) / (p.size * n.size)
  assert abs(auroc(scores, pos) - brute) < 1e-12
  assert auroc([3.0, 2.0, 1.0], [True, False, False]) == 1.0
  assert auroc([1.0, 2.0], [True, False]) == 0.0
  assert np.isnan(auroc([1.0, 2.0], [True, True]))
