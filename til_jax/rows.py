"""Row-sparse training: steps that read and write only the embedding rows a batch touches.

A backbone declares its row-indexed tables and the batch ids that index them
(`Backbone.row_tables`, e.g. MF: {"user": ("users",), "item": ("pos", "neg")}); one that does
not (None, the default: a user's own model, the graph backbones, whose batch reads neighbour
rows too) trains on the dense path unchanged.

Host (`add_row_index`, vectorised NumPy over a whole epoch): for every step and table T, the
distinct ids `rows_T` [steps, P_T] (padded to the static size P_T = min(ids per step, n_rows)
with the out-of-range id n_rows) and, for every batch key k indexing T, `inv_k` [steps, B]: the
position of batch[k] in rows_T. So the device step needs no `jnp.unique`.

Device (`row_view`): the tables are replaced by their gathered rows [P_T, d] and the batch ids by
the inverse indices, and the backbone's own triplet_repr / pair_score / l2 run on that view
unchanged: the same scores and losses as on the full tables, and autodiff of the gather gives
the gradient of each distinct row, summed over its repeats. `adam_rows` then moves Adam's moments
and the parameters of those rows only; padded slots (id n_rows) are dropped by the scatter.

Optimizers (`config.optim.name`): `adam` is the paper's dense Adam (every row's moments decay
at every step: the exact reference path); `sparse_adam` is Adam whose moments and parameters
change only on the touched rows, with the global step count in the bias correction (the
semantics of PyTorch's SparseAdam and TF's LazyAdam). `sgd_rows` is SGD on the rows, equal to
dense SGD (tested); the training loop's `sgd` takes the dense step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def table_rows(model) -> dict:
  """Rows of each row table of `model`: the Backbone convention's "user" / "item" tables hold
  n_users / n_items rows."""
  sizes = {"user": model.n_users, "item": model.n_items}
  return {t: sizes[t] for t in model.row_tables}


def add_row_index(batches: dict, row_tables: dict, n_rows: dict, with_outer: bool = False) -> dict:
  """Adds rows_<T> [steps, P_T] and inv_<k> [steps, B] (int32) to epoch arrays [steps, B].
  with_outer: the index also covers batches["outer"] (TIL's outer batch), whose inv_<k> go into
  that dict: one set of rows for the inner loss, the lookahead and the outer loss; and
  rows_<T>_inner is rows_<T> with the slots that only the outer batch reads set to the padding
  id: the rows the model's (inner) gradient touches, which lazy Adam moves."""
  out = dict(batches)
  parts = [batches] + ([batches["outer"]] if with_outer else [])
  if with_outer:
    out["outer"] = dict(batches["outer"])
  for table, keys in row_tables.items():
    ids = np.concatenate([np.asarray(p[k]) for p in parts for k in keys], axis=1)
    steps, width = ids.shape
    order = np.argsort(ids, axis=1, kind="stable")
    srt = np.take_along_axis(ids, order, axis=1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    rank = np.cumsum(first, axis=1) - 1                                       # slot of each id
    inv = np.empty_like(rank)
    np.put_along_axis(inv, order, rank, axis=1)
    size = min(width, int(n_rows[table]))
    rows = np.full((steps, size), int(n_rows[table]), np.int64)
    step_of = np.broadcast_to(np.arange(steps)[:, None], srt.shape)
    rows[step_of[first], rank[first]] = srt[first]
    out[f"rows_{table}"] = rows.astype(np.int32)
    b = np.asarray(batches[keys[0]]).shape[1]
    if with_outer:
      inner = np.zeros_like(rows, dtype=bool)
      inner[np.broadcast_to(np.arange(steps)[:, None], (steps, b * len(keys))),
            inv[:, :b * len(keys)]] = True   # the inner batch's ids come first in `ids`
      out[f"rows_{table}_inner"] = np.where(inner, rows, int(n_rows[table])).astype(np.int32)
    for n, (dest, k) in enumerate((d, k) for d in ([out] + ([out["outer"]] if with_outer else []))
                                  for k in keys):
      dest[f"inv_{k}"] = inv[:, n * b:(n + 1) * b].astype(np.int32)
  return out


def scatter_grads(grads_view: dict, params: dict, rows: dict) -> dict:
  """Gradients on gathered rows -> gradients like the full tables (zero on untouched rows), for
  a dense optimizer: the same gradient the dense step computes. `rows` mirrors `params`' dicts
  down to the row tables, as in `adam_rows`."""
  if isinstance(rows, dict):
    return {k: scatter_grads(grads_view[k], params[k], rows.get(k)) for k in params}
  if rows is None:
    return grads_view
  return jnp.zeros_like(params).at[rows].add(grads_view, mode="drop")


def row_view(model_params: dict, batch: dict, row_tables: dict) -> tuple[dict, dict]:
  """(params with each row table replaced by its gathered rows [P_T, d], the batch with its ids
  replaced by the inverse indices): what the backbone's functions read instead of the tables."""
  view = dict(model_params)
  for table in row_tables:
    view[table] = jnp.take(model_params[table], batch[f"rows_{table}"], axis=0, mode="fill",
                           fill_value=0)
  ids = {k: batch[f"inv_{k}"] for keys in row_tables.values() for k in keys}
  return view, {**batch, **ids}


def _scatter(table, rows, values):
  # the real ids are distinct; the padding (all id n_rows) is out of range and dropped
  return table.at[rows].set(values, mode="drop")


def adam_rows(grads, opt_state, params, rows, lr: float, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8):
  """Lazy Adam on optax.adam's state ((ScaleByAdamState, EmptyState)). `rows` mirrors the dicts
  of `params` down to the row tables: where it holds an id array r [P] for a table, grads there
  are [P, d], the gradients of rows r, and only those rows' mu, nu and parameters change; leaves
  without rows (dense grads) take a plain Adam step, and a key of params missing from grads is
  left as it is. The bias correction uses the global count,
  as PyTorch's SparseAdam. Returns (params, opt_state)."""
  adam, rest = opt_state[0], opt_state[1:]
  count = optax.safe_increment(adam.count)
  c1, c2 = 1.0 - b1 ** count, 1.0 - b2 ** count  # in the default float type, as optax.adam

  def moments(m, v, g):
    return b1 * m + (1.0 - b1) * g, b2 * v + (1.0 - b2) * g * g

  def param(p, m, v):
    return p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps)

  def update(p, m, v, g, r):
    if isinstance(r, dict):
      # a leaf without a gradient (TIL-MI's centres in a pre-training step) is not touched
      out = {k: update(p[k], m[k], v[k], g[k], r.get(k)) if k in g else (p[k], m[k], v[k])
             for k in p}
      return tuple({k: o[i] for k, o in out.items()} for i in range(3))
    if r is None:
      m2 = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, m, g)
      v2 = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, v, g)
      return jax.tree.map(param, p, m2, v2), m2, v2
    take = lambda x: jnp.take(x, r, axis=0, mode="fill", fill_value=0)
    m2, v2 = moments(take(m), take(v), g)
    return _scatter(p, r, param(take(p), m2, v2)), _scatter(m, r, m2), _scatter(v, r, v2)

  new_p, new_m, new_v = update(params, adam.mu, adam.nu, grads, rows)
  return new_p, (adam._replace(count=count, mu=new_m, nu=new_v), *rest)


def sgd_rows(grads, params, rows, lr: float):
  """Plain SGD on the rows of the row tables and on the dense leaves: equal to dense SGD."""
  if isinstance(rows, dict):
    return {k: sgd_rows(grads[k], params[k], rows.get(k), lr) for k in params}
  if rows is None:
    return jax.tree.map(lambda p, d: p - lr * d, params, grads)
  p = jnp.take(params, rows, axis=0, mode="fill", fill_value=0) - lr * grads
  return _scatter(params, rows, p)
