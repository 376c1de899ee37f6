"""Sparse operators shared by the graph backbones (LightGCN, MGCCF).

An operator A [n_out, n_in] is stored edge-wise (`sparse_operator`) in CSR order and in CSC order:

* `op_matmul(graph, name, x, n_out)` / `graph_matmul`: Y = A x over all rows. It walks the edges
  in chunks of `EDGE_CHUNK` and accumulates into the sorted output rows, so it never
  materialises an [nnz, d] array (about 3x faster on CPU than one gather + segment_sum). Its
  transpose (the backward pass) is the same walk over the CSC order, and the transpose of that
  is the CSR walk again (`jax.custom_derivatives.linear_call`), so every order of reverse-mode
  differentiation (TIL's hypergradient differentiates through a gradient) stays on this path.
* `op_rows(graph, name, x, rows, valid)` / `rows_matmul`: the rows of A x for a batch only, over
  their CSR slices, each distinct row once (`unique_ids`). The batch's neighbour count is data
  dependent, so the walk is a `while` loop over chunks with a dynamic trip count: exact for
  every batch, no static bound, cost proportional to the batch's edges. Transpose: a scatter-add
  over the same edges (again a `linear_call` pair).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import linear_call

from til_jax.data.dataset import CSR

EDGE_CHUNK = 8192  # edges per step of the propagation loops (8k-16k measured best on CPU)


# ----------------------------------------------------------------------------------------------
# Host-side graph construction
# ----------------------------------------------------------------------------------------------

def _pad(a: np.ndarray, size: int, value) -> np.ndarray:
  out = np.full(size, value, dtype=a.dtype)
  out[: a.size] = a
  return out


def sparse_operator(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n_rows: int, n_cols: int,
                    name: str, chunk: int = EDGE_CHUNK) -> dict:
  """Edge arrays of a sparse operator A [n_rows, n_cols] (A[rows_e, cols_e] = w_e, no duplicate
  (row, col) pairs), for `op_matmul` / `op_rows`, as numpy arrays keyed "<name>_...":

    indptr [n_rows+1] int32              CSR row pointers
    seg, nbr, w [E]                       row (sorted), column and weight of each edge, CSR order
    tseg, tnbr, tw [E]                    column (sorted), row and weight: CSC order, for A^T
  E = nnz padded up to a multiple of `chunk` with weight-0 edges (seg = last row, sorted).
  """
  rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
  w = np.asarray(w, np.float32)
  size = max(chunk, -(-rows.size // chunk) * chunk)
  indptr = np.zeros(n_rows + 1, np.int64)
  np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
  out = {"indptr": indptr.astype(np.int32)}
  for prefix, (key, other), n in (("", (rows, cols), n_rows), ("t", (cols, rows), n_cols)):
    order = np.argsort(key * max(n_rows, n_cols, 1) + other, kind="stable")
    out[prefix + "seg"] = _pad(key[order].astype(np.int32), size, max(n - 1, 0))
    out[prefix + "nbr"] = _pad(other[order].astype(np.int32), size, 0)
    out[prefix + "w"] = _pad(w[order], size, 0.0)
  return {f"{name}_{k}": v for k, v in out.items()}


def bipartite_operators(train: CSR, user_w: np.ndarray, item_w: np.ndarray) -> dict:
  """The two operators of the user-item graph: "ui" = A_U [n_users, n_items] (users <- items)
  with weights user_w, "iu" = A_I [n_items, n_users] (items <- users) with weights item_w; both
  weight arrays [nnz] in `train.to_pairs()` (user-major) order."""
  users, items = train.to_pairs()
  return {**sparse_operator(users, items, user_w, train.n_rows, train.n_cols, "ui"),
          **sparse_operator(items, users, item_w, train.n_cols, train.n_rows, "iu")}


# ----------------------------------------------------------------------------------------------
# Whole-graph product: Y = A X, edges walked in chunks, custom transpose
# ----------------------------------------------------------------------------------------------

def _varying_axes(*refs) -> set:
  """The shard_map mesh axes over which any of `refs` varies (empty outside shard_map)."""
  axes = set()
  for r in jax.tree.leaves(refs):
    axes |= set(getattr(getattr(jax.typeof(r), "manual_axis_type", None), "varying", ()) or ())
  return axes


def _vary_like(x, *refs):
  """x cast to vary over the mesh axes `refs` vary over (a no-op outside shard_map). Under
  shard_map(check_vma=True) a loop's initial carry must be typed like its body's output, and a
  replicated linear input mixed with a varying batch must be cast explicitly so that its
  cotangent is psum'ed back to replicated (the transpose of the cast)."""
  missing = _varying_axes(*refs) - _varying_axes(x)
  return jax.lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x


def _zeros_varying_like(shape, dtype, *refs):
  return _vary_like(jnp.zeros(shape, dtype), *refs)


def _seg_walk(n_out: int, chunk: int, edges, x):
  """Y [n_out, d] with Y[seg_e] += w_e * x[nbr_e] for every edge; edges = (seg sorted, nbr, w),
  each [E] with E a multiple of `chunk`."""
  seg, nbr, w = edges

  def body(k, acc):
    s = jax.lax.dynamic_slice_in_dim(seg, k * chunk, chunk)
    n = jax.lax.dynamic_slice_in_dim(nbr, k * chunk, chunk)
    ww = jax.lax.dynamic_slice_in_dim(w, k * chunk, chunk).astype(x.dtype)
    return acc.at[s].add(x[n] * ww[:, None], indices_are_sorted=True, mode="promise_in_bounds")

  acc = _zeros_varying_like((n_out, x.shape[1]), x.dtype, x, edges)
  return jax.lax.fori_loop(0, seg.shape[0] // chunk, body, acc)


def _graph_apply(n_out: int, which: int, chunk: int, res, x):
  return _seg_walk(n_out, chunk, res[which], x)


def graph_matmul(x: jax.Array, fwd, bwd, n_out: int, chunk: int = EDGE_CHUNK) -> jax.Array:
  """Y = A x for a sparse operator A [n_out, n_in]: x [n_in, d] -> [n_out, d].

  fwd = (seg, nbr, w): A's edges sorted by output row (Y[seg] += w * x[nbr]); bwd: the same
  edges sorted by input row, as (input row, output row, w), which is how A^T walks them.
  """
  if fwd[0].shape[0] % chunk or bwd[0].shape[0] % chunk:
    raise ValueError(f"graph_matmul: edge arrays ({fwd[0].shape[0]}) must be padded to a multiple of "
                     f"chunk={chunk} (sparse_operator does this)")
  n_in = x.shape[0]
  x = _vary_like(x, fwd, bwd)
  return linear_call(functools.partial(_graph_apply, n_out, 0, chunk),
                     functools.partial(_graph_apply, n_in, 1, chunk), (fwd, bwd), x)


def op_matmul(graph: dict, name: str, x: jax.Array, n_out: int) -> jax.Array:
  """A x for the operator `name` of `graph` (from `sparse_operator`): x [n_cols, d] -> [n_out, d]."""
  g = lambda k: graph[f"{name}_{k}"]
  return graph_matmul(x, (g("seg"), g("nbr"), g("w")), (g("tseg"), g("tnbr"), g("tw")), n_out)


# ----------------------------------------------------------------------------------------------
# Batch-local product: the rows of A x for a few output rows, from their CSR slices
# ----------------------------------------------------------------------------------------------

def unique_ids(ids: jax.Array):
  """Static-size dedup of ids [n]: (uniq [n], inverse [n], valid [n]) with uniq[inverse] == ids;
  uniq[:n_unique] are the distinct ids (ascending), valid marks them, the rest are 0."""
  ids = jnp.asarray(ids)
  n = ids.shape[0]
  order = jnp.argsort(ids)
  s = ids[order]
  first = jnp.concatenate([jnp.ones(1, bool), s[1:] != s[:-1]])
  grp = (jnp.cumsum(first) - 1).astype(jnp.int32)
  uniq = jnp.zeros(n, ids.dtype).at[grp].set(s)
  inverse = jnp.zeros(n, jnp.int32).at[order].set(grp)
  return uniq, inverse, jnp.arange(n) <= grp[-1]


def _slots(starts, lens, cum, chunk, k):
  """Edge ids of slots [k*chunk, (k+1)*chunk) of the concatenated row slices: (row [c], edge [c],
  live [c])."""
  t = k * chunk + jnp.arange(chunk, dtype=cum.dtype)
  r = jnp.minimum(jnp.searchsorted(cum, t, side="right"), cum.shape[0] - 1)
  live = t < cum[-1]
  e = jnp.where(live, starts[r] + t - (cum[r] - lens[r]), 0)
  return r, e, live


def _row_slices(res):
  indptr, _, _, rows, valid = res
  starts = indptr[rows]
  lens = jnp.where(valid, indptr[rows + 1] - starts, 0)
  return starts, lens, jnp.cumsum(lens)


def _rows_fwd(chunk: int, res, x):
  _, nbr, w, rows, _ = res
  starts, lens, cum = _row_slices(res)

  def body(k, acc):
    r, e, live = _slots(starts, lens, cum, chunk, k)
    ww = jnp.where(live, w[e], 0).astype(x.dtype)
    return acc.at[r].add(x[nbr[e]] * ww[:, None], indices_are_sorted=True, mode="promise_in_bounds")

  n_chunks = (cum[-1] + chunk - 1) // chunk
  acc = _zeros_varying_like((rows.shape[0], x.shape[1]), x.dtype, x, res)
  return jax.lax.fori_loop(0, n_chunks, body, acc)


def _rows_bwd(n_tab: int, chunk: int, res, y):
  _, nbr, w, _, _ = res
  starts, lens, cum = _row_slices(res)

  def body(k, acc):
    r, e, live = _slots(starts, lens, cum, chunk, k)
    ww = jnp.where(live, w[e], 0).astype(y.dtype)
    return acc.at[nbr[e]].add(y[r] * ww[:, None], mode="promise_in_bounds")

  n_chunks = (cum[-1] + chunk - 1) // chunk
  acc = _zeros_varying_like((n_tab, y.shape[1]), y.dtype, y, res)
  return jax.lax.fori_loop(0, n_chunks, body, acc)


def rows_matmul(x: jax.Array, indptr, nbr, w, rows, valid, chunk: int = EDGE_CHUNK) -> jax.Array:
  """(A x)[rows] for a CSR operator A: x [n_in, d] -> [R, d] (0 where not `valid`).

  indptr [n_out+1], nbr [>= nnz] (column of each edge), w [>= nnz] (weight of each edge) in CSR
  order; rows [R] output rows (distinct where valid, e.g. from `unique_ids`). Cost: the rows'
  edges only. Exact: the same sums as `graph_matmul`, summed in the same (edge) order.
  """
  x = _vary_like(x, indptr, nbr, w, rows, valid)
  return linear_call(functools.partial(_rows_fwd, chunk),
                     functools.partial(_rows_bwd, x.shape[0], chunk),
                     (indptr, nbr, w, rows, valid), x)


def op_rows(graph: dict, name: str, x: jax.Array, rows: jax.Array, valid: jax.Array) -> jax.Array:
  """(A x)[rows] for the operator `name` of `graph`: rows [R] distinct where `valid` (from
  `unique_ids`), x [n_cols, d] -> [R, d]."""
  return rows_matmul(x, graph[f"{name}_indptr"], graph[f"{name}_nbr"], graph[f"{name}_w"], rows, valid)


# ----------------------------------------------------------------------------------------------
# The backbone
# ----------------------------------------------------------------------------------------------
