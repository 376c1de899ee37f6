"""The row-sparse engine (til_jax.rows): host row index, lazy Adam against NumPy, SGD equal to
dense, and the sparse BPR step against the dense one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from til_jax import rows
from til_jax.bpr import bpr_objective, sparse_bpr_step
from til_jax.models import MF
from til_jax.state import TrainState

N_USERS, N_ITEMS, DIM, B = 6, 9, 3, 5


def batches(seed=0, steps=4):
  rng = np.random.default_rng(seed)
  b = {"users": rng.integers(0, N_USERS, (steps, B)), "pos": rng.integers(0, N_ITEMS, (steps, B)),
       "neg": rng.integers(0, N_ITEMS, (steps, B)), "mask": np.ones((steps, B), bool)}
  b["users"][:, 1] = b["users"][:, 0]            # repeated ids in every step
  b["neg"][:, 2] = b["pos"][:, 2]                # the same item as a positive and a negative
  b["mask"][-1, -1] = False
  return rows.add_row_index(b, MF.row_tables, {"user": N_USERS, "item": N_ITEMS})


def epoch_with_rows(ds, sampler, epoch: int, outer: str, batch_size: int = 32):
  """One epoch of TIL batches (with a fresh outer batch when `outer` is "fresh") and the same
  batches with the host row index of inner + outer batch."""
  from til_jax.data.sampling import epoch_triplets
  rng = np.random.default_rng(epoch)
  b = epoch_triplets(ds.train, sampler, rng, batch_size)
  if outer == "fresh":
    b["outer"] = epoch_triplets(ds.train, sampler, rng, batch_size)
  return b, rows.add_row_index(b, MF.row_tables, {"user": ds.n_users, "item": ds.n_items},
                               with_outer=outer == "fresh")


def test_row_index_is_the_distinct_ids_and_their_inverse():
  b = batches()
  for s in range(b["users"].shape[0]):
    for table, keys, n in (("user", ("users",), N_USERS), ("item", ("pos", "neg"), N_ITEMS)):
      ids = np.concatenate([b[k][s] for k in keys])
      r = b[f"rows_{table}"][s]
      uniq = np.unique(ids)
      assert r.shape == (min(len(ids), n),)
      np.testing.assert_array_equal(r[: uniq.size], uniq)
      assert (r[uniq.size:] == n).all()           # padding: the out-of-range id, dropped later
      for k in keys:
        np.testing.assert_array_equal(r[b[f"inv_{k}"][s]], b[k][s])


def numpy_lazy_adam(p, m, v, t, idx, g, lr, b1=0.9, b2=0.999, eps=1e-8):
  """Reference: rows idx (distinct) with gradients g; every other row untouched."""
  p, m, v = p.copy(), m.copy(), v.copy()
  m[idx] = b1 * m[idx] + (1 - b1) * g
  v[idx] = b2 * v[idx] + (1 - b2) * g * g
  p[idx] -= lr * (m[idx] / (1 - b1 ** t)) / (np.sqrt(v[idx] / (1 - b2 ** t)) + eps)
  return p, m, v


def test_sparse_adam_matches_numpy_over_steps_with_repeated_ids():
  """Several sparse BPR steps = the NumPy lazy Adam fed with the dense gradient's nonzero rows
  (a repeated id's gradients summed); untouched rows keep parameters and moments."""
  model = MF(N_USERS, N_ITEMS, DIM)
  b = batches(1, steps=5)
  params = {"model": model.init(jax.random.key(0))}
  tx = optax.adam(1e-2)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {}, {}, {})
  ref = {k: (np.asarray(params["model"][k], np.float64), np.zeros((n, DIM)), np.zeros((n, DIM)))
         for k, n in (("user", N_USERS), ("item", N_ITEMS))}
  step = jax.jit(lambda st, bt: sparse_bpr_step(st, bt, model, {}, 0.1, 1e-2, 1e-8))
  for s in range(5):
    bt = {k: jnp.asarray(v[s]) for k, v in b.items()}
    dense = {k: jnp.asarray(v[s]) for k, v in b.items() if k in ("users", "pos", "neg", "mask")}
    cur = {"model": {k: jnp.asarray(ref[k][0], jnp.float32) for k in ref}}
    g = jax.grad(bpr_objective)(cur, model, {}, dense, 0.1)["model"]
    prev = state
    state, _ = step(state, bt)
    for k, keys in MF.row_tables.items():
      touched = np.unique(np.concatenate([b[x][s] for x in keys]))
      ref[k] = numpy_lazy_adam(*ref[k], s + 1, touched, np.asarray(g[k], np.float64)[touched], 1e-2)
      untouched = np.setdiff1d(np.arange(ref[k][0].shape[0]), touched)
      before = state.params["model"][k]
      np.testing.assert_allclose(np.asarray(before), ref[k][0], rtol=2e-5, atol=2e-6, err_msg=k)
      np.testing.assert_allclose(np.asarray(state.opt_state[0].mu["model"][k]), ref[k][1],
                                 rtol=1e-4, atol=1e-8)
      for a, c in ((state.opt_state[0].nu, prev.opt_state[0].nu), (state.params, prev.params)):
        # a row this step did not touch: parameters and moments exactly held, not decayed
        np.testing.assert_array_equal(np.asarray(a["model"][k])[untouched],
                                      np.asarray(c["model"][k])[untouched])
  assert int(state.opt_state[0].count) == 5


def test_sparse_and_dense_adam_agree_on_the_first_step_and_differ_after():
  model = MF(N_USERS, N_ITEMS, DIM)
  b = batches(2, steps=2)
  params = {"model": model.init(jax.random.key(1))}
  tx = optax.adam(1e-2)
  sp = dn = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {}, {}, {})
  from til_jax.bpr import bpr_step
  for s in range(2):
    bt = {k: jnp.asarray(v[s]) for k, v in b.items()}
    sp, m_sp = sparse_bpr_step(sp, bt, model, {}, 1e-4, 1e-2, 1e-8)
    dn, m_dn = bpr_step(dn, bt, model, {}, tx, 1e-4)
    np.testing.assert_allclose(float(m_sp["loss"]), float(m_dn["loss"]), rtol=1e-6)
    if s == 0:  # zero moments: dense Adam leaves untouched rows where they are too
      for a, c in zip(jax.tree.leaves(sp.params), jax.tree.leaves(dn.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-7)
  # step 2: a user row touched at step 1 only keeps moving under dense Adam (its moment decays
  # but is not zero), and stays put under sparse Adam
  only_first = np.setdiff1d(b["users"][0], b["users"][1])
  assert only_first.size
  moved = np.asarray(dn.params["model"]["user"])[only_first]
  held = np.asarray(sp.params["model"]["user"])[only_first]
  assert np.abs(moved - held).max() > 1e-6


def test_sparse_sgd_equals_dense_sgd():
  model = MF(N_USERS, N_ITEMS, DIM)
  b = batches(3, steps=1)
  params = {"model": model.init(jax.random.key(2))}
  bt = {k: jnp.asarray(v[0]) for k, v in b.items()}
  view, vb = rows.row_view(params["model"], bt, MF.row_tables)
  g_rows = jax.grad(lambda v: bpr_objective({"model": v}, model, {}, vb, 0.1))(view)
  sparse = rows.sgd_rows({"model": g_rows}, params, {"model": {t: bt[f"rows_{t}"] for t in
                                                               MF.row_tables}}, 0.5)
  g = jax.grad(bpr_objective)(params, model, {}, bt, 0.1)
  dense = jax.tree.map(lambda p, d: p - 0.5 * d, params, g)
  for a, c in zip(jax.tree.leaves(sparse), jax.tree.leaves(dense)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["bpr", "til_mi"])   # til_mi: pre-training, the KL on rows
def test_sparse_adam_trains_through_the_loop(tmp_path, method):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.train import loop
  c = tiny_config(write_split(str(tmp_path / "d")), method=method, epochs=4,
                  **{"optim.name": "sparse_adam", "optim.lr": 1e-2, "til.warmup_epochs": 1,
                     "til.kl_items": "batch"})   # til_mi: the KL on the batch's rows
  _, _, m, _ = loop.build(c)
  assert m.row_sparse
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert res["valid"]["recall@10"] > 0


@pytest.mark.parametrize("method,backbone,field", [
    ("til_mi", "mf", "config.optim.name: sparse_adam"),    # kl_items=all reads every item
    ("pris", "mf", "config.optim.name: sparse_adam"),      # no row-sparse step
    ("bpr", "lightgcn", "config.optim.name: sparse_adam")])  # the batch reads neighbour rows
def test_sparse_adam_is_refused_where_it_would_be_dense(tmp_path, method, backbone, field):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.errors import ConfigError
  from til_jax.train import loop
  c = tiny_config(write_split(str(tmp_path / "d")), method=method, epochs=1,
                  **{"optim.name": "sparse_adam", "model.name": backbone})
  with pytest.raises(ConfigError, match=field):
    loop.build(c)


@pytest.mark.parametrize("norm,outer", [("none", "fresh"), ("mean", "same")])
def test_til_sparse_adam_equals_lazy_adam_on_the_dense_gradients(norm, outer):
  """TIL-UI with optim.name=sparse_adam, pre-training steps and bilevel steps: Lambda follows the
  dense bilevel step, and Theta a NumPy lazy Adam fed with the dense gradient's rows at the ids
  of the inner batch only (an id only the outer batch reads is not moved); float64."""
  from configs import default
  from til_jax.data.sampling import UniformNegativeSampler
  from til_jax.data.synthetic import make_synthetic
  from til_jax.state import make_consts
  from til_jax.til import bilevel
  from til_jax.til.api import TIL
  ds = make_synthetic(n_users=30, n_items=25, seed=3)
  c = default.get_config()
  c.method, c.til.weight_norm, c.til.outer_batch = "til_ui", norm, outer
  c.til.warmup_epochs, c.til.eta_every, c.til.lr_look = 1, 1, 0.5
  c.optim.name, c.optim.lr, c.til.gen_lr = "sparse_adam", 1e-2, 1e-2
  model = MF(ds.n_users, ds.n_items, 4)
  n = bilevel.steps_per_epoch(ds.train.nnz, 32)
  with jax.enable_x64(True):
    til = TIL.from_config(c, model, n)
    assert til.lazy_adam == (1e-2, 1e-8) and til.on_rows
    state = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
                         til.init(jax.random.key(0)))
    ref = {k: (np.asarray(state.params["model"][k]), np.zeros_like(state.params["model"][k]),
               np.zeros_like(state.params["model"][k])) for k in MF.row_tables}
    gen_params, gen_opt = state.gen_params, state.gen_opt_state
    consts = make_consts(*ds.train.to_pairs())
    sampler = UniformNegativeSampler(ds.train)
    step, t = jax.jit(til.update), 0
    outer_ids_only = 0
    for e in range(2):
      b, br = epoch_with_rows(ds, sampler, e, outer)
      for s in range(n):
        bt = jax.tree.map(lambda v, s=s: jnp.asarray(v[s]), b)
        cur = {"model": {k: jnp.asarray(ref[k][0]) for k in ref}}
        if t < til.settings.pretrain_steps:
          g = jax.grad(bpr_objective)(cur, model, {}, bt, til.settings.l2)
        else:
          eta = til.eta(state.replace(params=cur), consts)
          out = bt.get("outer", {k: bt[k] for k in ("users", "pos", "neg", "mask")})
          gen_params, gen_opt, g, _ = bilevel.bilevel_grads(
              cur, gen_params, gen_opt, model, {"graph": {}, "eta": eta}, bt, out, til.gen_tx,
              til.settings)
        t += 1
        state, _ = step(state, jax.tree.map(lambda v, s=s: v[s], br), consts)
        for k, keys in MF.row_tables.items():
          touched = np.unique(np.concatenate([b[x][s] for x in keys]))
          if outer == "fresh":
            outer_ids_only += np.setdiff1d(np.concatenate([b["outer"][x][s] for x in keys]),
                                           touched).size
          ref[k] = numpy_lazy_adam(*ref[k], t, touched,
                                   np.asarray(g["model"][k])[touched], 1e-2)
    assert t > til.settings.pretrain_steps > 0
    assert outer_ids_only > 0 or outer == "same"
    for k in ref:
      np.testing.assert_allclose(np.asarray(state.params["model"][k]), ref[k][0], rtol=1e-9,
                                 atol=1e-12, err_msg=k)
      np.testing.assert_allclose(np.asarray(state.opt_state[0].nu["model"][k]), ref[k][2],
                                 rtol=1e-9, atol=1e-15, err_msg=k)
    for a, z in zip(jax.tree.leaves(state.gen_params), jax.tree.leaves(gen_params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(z), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("interest,norm,outer", [("til_ui", "none", "fresh"), ("til_ui", "softmax", "same"),
                                                 ("til_mik", "none", "fresh"),
                                                 ("til_mi", "mean", "fresh")])
def test_row_lookahead_step_equals_the_dense_step(interest, norm, outer):
  """til.row_lookahead: the bilevel step on the gathered rows of inner + outer batch gives the
  dense step's Lambda, Theta and optimizer states (float64, several steps, repeated ids, the
  once-per-epoch eta and the membership refreshes on)."""
  from configs import default
  from til_jax.data.sampling import UniformNegativeSampler
  from til_jax.data.synthetic import make_synthetic
  from til_jax.state import make_consts
  from til_jax.til.api import TIL
  from til_jax.til.bilevel import steps_per_epoch
  ds = make_synthetic(n_users=30, n_items=25, seed=3)
  c = default.get_config()
  c.method, c.til.weight_norm, c.til.outer_batch = interest, norm, outer
  c.til.pretrain_epochs, c.til.n_clusters, c.til.refresh_every, c.til.lr_look = 0, 4, 2, 0.5
  c.optim.lr, c.til.gen_lr = 1e-2, 1e-2
  c.til.kl_items, c.til.gamma = "batch", 0.5   # til_mi: the KL over the inner batch's items
  model = MF(ds.n_users, ds.n_items, 4)
  n = steps_per_epoch(ds.train.nnz, 32)
  with jax.enable_x64(True):
    dense = TIL.from_config(c, model, n)
    c.til.row_lookahead = True
    sparse = TIL.from_config(c, model, n)
    init = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
                        dense.init(jax.random.key(0)))
    states = [init, init]
    consts = make_consts(*ds.train.to_pairs())
    sampler = UniformNegativeSampler(ds.train)
    steps = [jax.jit(t.update) for t in (dense, sparse)]
    for e in range(2):
      b, br = epoch_with_rows(ds, sampler, e, outer)
      for s in range(n):
        states[0], m0 = steps[0](states[0], jax.tree.map(lambda v, s=s: v[s], b), consts)
        states[1], m1 = steps[1](states[1], jax.tree.map(lambda v, s=s: v[s], br), consts)
    np.testing.assert_allclose(float(m0["outer_loss"]), float(m1["outer_loss"]), rtol=1e-9)
    for a, z in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(z, np.float64), rtol=1e-8,
                                 atol=1e-10)
    assert float(jnp.abs(states[0].params["model"]["user"] - init.params["model"]["user"]).max()) > 0


def test_row_lookahead_is_refused_where_it_cannot_be_exact():
  from configs import default
  from til_jax.errors import ConfigError
  from til_jax.models import LightGCN
  from til_jax.til.api import TIL
  c = default.get_config()
  c.method, c.til.row_lookahead = "til_mi", True
  with pytest.raises(ConfigError, match="config.til.row_lookahead"):
    TIL.from_config(c, MF(5, 7, 4), 1)            # the KL term (kl_items=all) reads every item
  c.til.kl_items = "batch"
  assert TIL.from_config(c, MF(5, 7, 4), 1).on_rows
  c.method = "til_ui"
  with pytest.raises(ConfigError, match="config.til.row_lookahead"):
    TIL.from_config(c, LightGCN(5, 7, 4), 1)      # the batch reads neighbour rows
