"""Backbones (MF, NeuMF, LightGCN, MGCCF) against small NumPy references (5 users, 7 items, dim 4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from til_jax.data.dataset import CSR, Dataset
from til_jax.models import MF, make_model
from til_jax.models.lightgcn import LightGCN
from til_jax.models.mgccf import MGCCF, cooccurrence_topk
from til_jax.models.neumf import NeuMF
from til_jax.models.sparse import rows_matmul, unique_ids

N_USERS, N_ITEMS, DIM = 5, 7, 4
USERS = np.array([0, 1, 1, 4, 3, 2, 0])
POS = np.array([0, 2, 2, 5, 1, 3, 4])
NEG = np.array([6, 3, 1, 0, 0, 6, 6])
ATOL = 2e-6


def tiny_dataset() -> Dataset:
  """5 x 7 interactions with a heavy user, a cold item (6) and unequal degrees."""
  r = np.array([[1, 1, 0, 1, 0, 1, 0],
                [1, 0, 1, 0, 0, 0, 0],
                [0, 1, 1, 1, 1, 0, 0],
                [0, 0, 0, 1, 0, 1, 0],
                [1, 1, 1, 0, 1, 1, 0]], bool)
  u, i = np.nonzero(r)
  train = CSR.from_pairs(u, i, N_USERS, N_ITEMS)
  return Dataset("tiny", N_USERS, N_ITEMS, train, train, train)


def dense_r(ds: Dataset) -> np.ndarray:
  r = np.zeros((ds.n_users, ds.n_items))
  r[ds.train.row_ids(), ds.train.indices] = 1.0
  return r


def build(model, seed=0):
  """(dataset, params, graph); params are random normal(0, 0.5) of init's shapes (eval_shape:
  no compilation; the scale exercises the nonlinearities more than Xavier's does)."""
  ds = tiny_dataset()
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(seed))
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.5, x.shape), x.dtype), shapes)
  return ds, params, model.prepare(ds)


def np_tree(params):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), params)


def bpr(model, params, graph):
  u, i, j = model.triplet_repr(params, graph, jnp.asarray(USERS), jnp.asarray(POS), jnp.asarray(NEG))
  x = model.pair_score(params, u, i) - model.pair_score(params, u, j)
  return -jnp.mean(jax.nn.log_sigmoid(x)) + 1e-2 * model.l2(params, graph, USERS, POS, NEG)


def model_outputs(model, params, graph):
  """Everything the checks compare, computed in one jit (one compilation per model)."""
  u_all, i_all = model.represent(params, graph)
  u, i, j = model.triplet_repr(params, graph, jnp.asarray(USERS), jnp.asarray(POS), jnp.asarray(NEG))
  full = model.full_scores(params, (u_all, i_all), jnp.arange(N_USERS))
  pairs = model.pair_score(params, jnp.repeat(u_all, N_ITEMS, 0), jnp.tile(i_all, (N_USERS, 1)))
  grads = jax.grad(bpr, argnums=1)(model, params, graph)
  return dict(u_all=u_all, i_all=i_all, u=u, i=i, j=j, pos_scores=model.pair_score(params, u, i),
              full=full, pairs=pairs.reshape(N_USERS, N_ITEMS), grads=grads)


def check_common(model, params, graph, ref_u, ref_i, ref_pair):
  """represent vs reference, triplet_repr == represent()[ids], pair_score and full_scores vs the
  reference score function, full_scores == pair_score on all pairs, finite gradients."""
  out = jax.jit(model_outputs, static_argnums=0)(model, params, graph)
  assert out["u_all"].shape == (N_USERS, model.repr_dim)
  assert out["i_all"].shape == (N_ITEMS, model.repr_dim)
  np.testing.assert_allclose(out["u_all"], ref_u, atol=ATOL)
  np.testing.assert_allclose(out["i_all"], ref_i, atol=ATOL)
  np.testing.assert_allclose(out["u"], out["u_all"][USERS], atol=ATOL)
  np.testing.assert_allclose(out["i"], out["i_all"][POS], atol=ATOL)
  np.testing.assert_allclose(out["j"], out["i_all"][NEG], atol=ATOL)
  ref_scores = np.array([[ref_pair(ref_u[a], ref_i[b]) for b in range(N_ITEMS)] for a in range(N_USERS)])
  np.testing.assert_allclose(out["pos_scores"], ref_scores[USERS, POS], atol=ATOL)
  np.testing.assert_allclose(out["full"], ref_scores, atol=ATOL)
  np.testing.assert_allclose(out["full"], out["pairs"], atol=ATOL)
  leaves = [np.asarray(g) for g in jax.tree.leaves(out["grads"])]
  assert all(np.isfinite(g).all() for g in leaves)
  assert any(np.abs(g).max() > 0 for g in leaves)


# -- MF ----------------------------------------------------------------------------------------

def test_mf_forward_and_grad():
  model = MF(N_USERS, N_ITEMS, DIM)
  _, params, graph = build(model)
  real = model.init(jax.random.key(0))   # Xavier init: shapes and bounds
  bound = np.sqrt(6.0 / (N_USERS + DIM))
  assert real["user"].shape == (N_USERS, DIM) and float(jnp.abs(real["user"]).max()) <= bound
  p = np_tree(params)
  check_common(model, params, graph, p["user"], p["item"], lambda a, b: a @ b)


# -- NeuMF -------------------------------------------------------------------------------------

def neumf_reference(params, d):
  p = np_tree(params)

  def score(u, i):
    h = np.concatenate([u[d:], i[d:]])
    for layer in p["mlp"]:
      h = np.maximum(h @ layer["w"] + layer["b"], 0.0)
    return np.concatenate([u[:d] * i[:d], h]) @ p["out"]
  return p["user"], p["item"], score


def test_neumf_forward_and_grad():
  model = NeuMF(N_USERS, N_ITEMS, DIM, mlp_layers=[6, 3, 2])
  assert model.mlp_layers == (6, 3, 2) and model.repr_dim == 2 * DIM
  _, params, graph = build(model)
  # non-zero biases, so the split first layer's bias placement is tested too
  params["mlp"] = [{**lay, "b": lay["b"] + 0.1 * (k + 1)} for k, lay in enumerate(params["mlp"])]
  ref_u, ref_i, score = neumf_reference(params, DIM)
  check_common(model, params, graph, ref_u, ref_i, score)


def test_neumf_full_scores_tiles(monkeypatch):
  """A one-layer tower, and tiles that do not divide the item count (padding): same scores."""
  import til_jax.models.neumf as neumf
  model = NeuMF(N_USERS, N_ITEMS, DIM, mlp_layers=(6,))
  _, params, graph = build(model)
  ref_u, ref_i, score = neumf_reference(params, DIM)
  ref = np.array([[score(ref_u[a], ref_i[b]) for b in range(N_ITEMS)] for a in range(N_USERS)])
  monkeypatch.setattr(neumf, "PAIR_BUDGET", 2 * 6 * N_USERS)   # 2 items per tile, 4 tiles
  full = jax.jit(model.full_scores)(params, model.represent(params, graph), np.arange(N_USERS))
  np.testing.assert_allclose(full, ref, atol=ATOL)


# -- LightGCN ----------------------------------------------------------------------------------

def lightgcn_reference(ds, params, layers):
  """Dense D^-1/2 A D^-1/2 propagation, mean of layers 0..L."""
  r = dense_r(ds)
  n = N_USERS + N_ITEMS
  a = np.zeros((n, n))
  a[:N_USERS, N_USERS:] = r
  a[N_USERS:, :N_USERS] = r.T
  deg = a.sum(1)
  dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
  norm = dinv[:, None] * a * dinv[None, :]
  p = np_tree(params)
  e = np.concatenate([p["user"], p["item"]])
  out, cur = e.copy(), e
  for _ in range(layers):
    cur = norm @ cur
    out += cur
  out /= layers + 1
  return out[:N_USERS], out[N_USERS:]


@pytest.mark.parametrize("layers", [1, 2])
def test_lightgcn_forward_and_grad(layers):
  model = LightGCN(N_USERS, N_ITEMS, DIM, layers=layers)
  ds, params, graph = build(model)
  ref_u, ref_i = lightgcn_reference(ds, params, layers)
  check_common(model, params, graph, ref_u, ref_i, lambda a, b: a @ b)


def dense_lightgcn_triplets(ds, params, users, pos, neg):
  """The same L=1 model written with a dense JAX matrix: plain autodiff, for gradient checks."""
  r = jnp.asarray(dense_r(ds), jnp.float32)
  du, di = r.sum(1), r.sum(0)
  norm = r / jnp.sqrt(jnp.maximum(du[:, None] * di[None, :], 1e-12))
  u = 0.5 * (params["user"] + norm @ params["item"])
  i = 0.5 * (params["item"] + norm.T @ params["user"])
  return u[users], i[pos], i[neg]


def test_lightgcn_second_order_matches_dense():
  """A TIL-style hypergradient (grad through a gradient step) through the batch-local and the
  whole-graph custom-transpose operators equals plain autodiff through dense matrices."""
  ds = tiny_dataset()
  weights = np.linspace(0.5, 1.5, USERS.size, dtype=np.float32)

  def hyper(repr_fn, params):
    def inner(p, w):
      u, i, j = repr_fn(p, USERS, POS, NEG)
      return jnp.sum(w * -jax.nn.log_sigmoid(jnp.sum(u * (i - j), -1)))

    def outer(w):
      g = jax.grad(inner)(params, w)
      look = jax.tree.map(lambda a, b: a - 0.5 * b, params, g)
      u, i, j = repr_fn(look, NEG % N_USERS, NEG, POS)
      return jnp.sum(u * (i - j))
    return jax.grad(outer)(weights)

  model = LightGCN(N_USERS, N_ITEMS, DIM)
  _, params, graph = build(model, seed=1)
  params = jax.tree.map(lambda x: 0.2 * x, params)

  @jax.jit
  def run(p):
    local = hyper(lambda q, a, b, c: model.triplet_repr(q, graph, a, b, c), p)      # rows_matmul
    whole = hyper(lambda q, a, b, c: _whole(model, q, graph, a, b, c), p)          # graph_matmul
    dense = hyper(lambda q, a, b, c: dense_lightgcn_triplets(ds, q, a, b, c), p)   # plain autodiff
    return local, whole, dense
  local, whole, dense = run(params)
  assert np.isfinite(np.asarray(local)).all() and np.abs(np.asarray(local)).max() > 0
  np.testing.assert_allclose(local, dense, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(whole, dense, rtol=1e-4, atol=1e-6)


def _whole(model, params, graph, users, pos, neg):
  u_all, i_all = model.represent(params, graph)
  return u_all[users], i_all[pos], i_all[neg]


def test_lightgcn_under_shard_map():
  """The custom-transpose loops type-check under shard_map(check_vma=True) (til_jax.parallel):
  a batch-sharded gradient equals the plain one."""
  from jax.sharding import Mesh, PartitionSpec
  model = LightGCN(N_USERS, N_ITEMS, DIM)
  _, params, graph = build(model, seed=3)
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))

  def make(axis):
    def loss(p, u, i, j):
      a, b, c = model.triplet_repr(p, graph, u, i, j)
      value = -jnp.mean(jax.nn.log_sigmoid(jnp.sum(a * (b - c), -1)))
      return jax.lax.pmean(value, axis) if axis else value

    return jax.grad(loss)

  rep, batch = PartitionSpec(), PartitionSpec("data")
  sharded = jax.shard_map(make("data"), mesh=mesh, in_specs=(rep, batch, batch, batch), out_specs=rep)
  got, ref = jax.jit(lambda p: (sharded(p, USERS, POS, NEG), make(None)(p, USERS, POS, NEG)))(params)
  for name in ("user", "item"):
    np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-7)
  assert np.abs(np.asarray(ref["item"])).max() > 0


def test_rows_matmul_chunking_and_unique():
  """Chunk sizes smaller than a row, padding rows of unique_ids, and the transpose (grad)."""
  model = LightGCN(N_USERS, N_ITEMS, DIM)
  ds, params, graph = build(model, seed=2)
  ids = np.array([3, 1, 3, 3, 0, 1])
  uniq, inv, valid = jax.jit(unique_ids)(ids)
  np.testing.assert_array_equal(np.asarray(uniq)[np.asarray(inv)], ids)
  assert int(valid.sum()) == 3
  x = params["item"]
  ref_op = np.zeros((N_USERS, N_ITEMS))
  g = {k: np.asarray(v) for k, v in graph.items()}
  nnz = ds.train.nnz
  ref_op[g["ui_seg"][:nnz], g["ui_nbr"][:nnz]] = g["ui_w"][:nnz]
  cot = np.arange(6 * DIM, dtype=np.float32).reshape(6, DIM)

  @jax.jit
  def run(t):
    outs = []
    for chunk in (1, 3, 64):
      f = lambda z, c=chunk: rows_matmul(z, graph["ui_indptr"], graph["ui_nbr"], graph["ui_w"], uniq, valid,
                                         c)
      outs.append((f(t)[inv], jax.grad(lambda z, f=f: jnp.sum(f(z)[inv] * cot))(t)))
    return outs
  for out, grad in run(x):
    np.testing.assert_allclose(out, (ref_op @ np.asarray(x))[ids], atol=ATOL)
    np.testing.assert_allclose(grad, ref_op[ids].T @ cot, atol=1e-4)


# -- MGCCF -------------------------------------------------------------------------------------

def topk_reference(r: np.ndarray, k: int, measure: str):
  """Brute force: co-occurrence counts from r r^T, float32 scores as in the implementation,
  ranked by (-score, id), self excluded."""
  co = (r @ r.T).astype(np.int64)
  deg = r.sum(1)
  inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0).astype(np.float32)
  nbr = np.zeros((r.shape[0], k), np.int32)
  w = np.zeros((r.shape[0], k), np.float32)
  for a in range(r.shape[0]):
    cand = [b for b in range(r.shape[0]) if b != a and co[a, b] > 0]
    sc = {b: (np.float32(co[a, b]) * inv_sqrt[b] if measure == "cosine" else np.float32(co[a, b]))
          for b in cand}
    best = sorted(cand, key=lambda b: (-sc[b], b))[:k]
    nbr[a, :len(best)] = best
    w[a, :len(best)] = 1.0
  return nbr, w


@pytest.mark.parametrize("measure", ["cosine", "count"])
def test_cooccurrence_topk_exact(measure):
  rng = np.random.default_rng(3)
  r = rng.random((60, 40)) < rng.random((60, 1)) * 0.3    # unequal degrees, many ties
  r[5] = False                                             # an isolated row
  u, i = np.nonzero(r)
  m = CSR.from_pairs(u, i, 60, 40)
  ref = topk_reference(r.astype(np.float64), 4, measure)
  for block in (1, 97, 10_000):                            # many blocks / a few / one
    nbr, w = cooccurrence_topk(m, 4, measure, block_pairs=block)
    np.testing.assert_array_equal(w, ref[1])
    np.testing.assert_array_equal(nbr, ref[0])


def mgccf_reference(ds, params, k, fusion):
  r = dense_r(ds)
  p = np_tree(params)
  eu, ei = p["user"], p["item"]
  du, di = r.sum(1), r.sum(0)
  mean_u = (r / np.maximum(du, 1)[:, None]) @ ei
  mean_i = (r.T / np.maximum(di, 1)[:, None]) @ eu
  lp = p["bipar"][0]
  hu = np.tanh(np.concatenate([eu, np.tanh(mean_u @ lp["q_u"])], 1) @ lp["w_u"])
  hi = np.tanh(np.concatenate([ei, np.tanh(mean_i @ lp["q_i"])], 1) @ lp["w_i"])
  out = []
  for h, e, adj, m, s in ((hu, eu, r, p["mge"]["m_u"], p["skip"]["s_u"]),
                          (hi, ei, r.T, p["mge"]["m_i"], p["skip"]["s_i"])):
    nbr, w = topk_reference(adj, k, "cosine")
    z = np.tanh(np.einsum("rk,rkd->rd", w, e[nbr]) @ m)
    sk = np.tanh(e @ s)
    out.append(h + z + sk if fusion == "sum" else np.concatenate([h, z, sk], 1))
  return out


def test_mgccf_forward_and_grad():
  """Sum fusion: everything vs the reference; concat fusion: represent vs the reference; two
  layers (whole-graph path): triplet_repr == represent()[ids]. One set of params serves all
  (fusion does not change them). Second order: the same operators as LightGCN's test."""
  model = MGCCF(N_USERS, N_ITEMS, DIM, n_neighbors=2)
  assert model.repr_dim == DIM
  ds, params, graph = build(model)
  ref_u, ref_i = mgccf_reference(ds, params, 2, "sum")
  check_common(model, params, graph, ref_u, ref_i, lambda a, b: a @ b)

  concat = MGCCF(N_USERS, N_ITEMS, DIM, n_neighbors=2, fusion="concat")
  assert concat.repr_dim == 3 * DIM
  ref_u, ref_i = mgccf_reference(ds, params, 2, "concat")
  two = MGCCF(N_USERS, N_ITEMS, DIM, layers=2, n_neighbors=2)
  p2 = {**params, "bipar": params["bipar"] * 2}

  @jax.jit
  def run(p, p2, g):
    u2, i2 = two.represent(p2, g)
    return concat.represent(p, g), (u2, i2, two.triplet_repr(p2, g, USERS, POS, NEG)[1])
  (u_all, i_all), (u2, i2, pos2) = run(params, p2, graph)
  np.testing.assert_allclose(u_all, ref_u, atol=ATOL)
  np.testing.assert_allclose(i_all, ref_i, atol=ATOL)
  assert u2.shape == (N_USERS, DIM) and np.isfinite(np.asarray(i2)).all()
  np.testing.assert_allclose(pos2, i2[POS], atol=ATOL)


def test_make_model_fields():
  from ml_collections import ConfigDict
  m = make_model(ConfigDict({"name": "neumf", "dim": 8, "mlp_layers": [8, 4]}), 3, 4)
  assert isinstance(m, NeuMF) and m.mlp_layers == (8, 4) and hash(m)
  m = make_model(ConfigDict({"name": "lightgcn", "layers": 1}), 3, 4)
  assert isinstance(m, LightGCN) and m.dim == 64
  m = make_model(ConfigDict({"name": "mgccf", "layers": 1, "n_neighbors": 5}), 3, 4)
  assert isinstance(m, MGCCF) and m.repr_dim == 64
  from til_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="fusion"):
    MGCCF(3, 4, fusion="attention")
  with pytest.raises(ConfigError, match="mlp_layers"):
    NeuMF(3, 4, mlp_layers=())
