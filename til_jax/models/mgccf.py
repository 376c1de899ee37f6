"""Multi-GCCF / MGCCF (Sun et al. 2019, "Multi-Graph Convolution Collaborative Filtering").

No official code is public; this follows the paper's three components, combined by
information fusion, with one graph-convolution layer as in the TIL paper (5.4):

  Bipar-GCN (bipartite user-item graph, separate user and item weights; MGCCF Eq. 1-3):
    h_N(u) = tanh(mean_{i in N(u)} h_i Q_u)        h_u = tanh([h_u ; h_N(u)] W_u)
    h_N(i) = tanh(mean_{u in N(i)} h_u Q_i)        h_i = tanh([h_i ; h_N(i)] W_i)
    with h^(0) = the ego embeddings e; `layers` such layers (own Q, W per layer).
  Multi-graph encoding (user-user and item-item graphs; MGCCF Eq. 4-5):
    z_u = tanh(sum_{u' in S(u)} e_u' M_u)         z_i = tanh(sum_{i' in S(i)} e_i' M_i)
  Skip connection with the ego embedding (MGCCF "skip-connection"):
    s_u = tanh(e_u S_u)                            s_i = tanh(e_i S_i)
  Information fusion:  e*_u = h_u + z_u + s_u  (fusion="sum", default; repr_dim = dim)
                       e*_u = [h_u ; z_u ; s_u] (fusion="concat"; repr_dim = 3 dim)
  Score: y_ui = e*_u . e*_i, trained with BPR + L2 on the batch's ego rows.

Choices (details the paper leaves open or that we had to fix; for BUILD_NOTES.md):
- Neighbour sampling: the paper samples a fixed number of neighbours per node and layer in
  Bipar-GCN; we aggregate over all training neighbours (exact mean), so the model is
  deterministic and `triplet_repr` equals `represent()[ids]`.
- Activation: tanh everywhere sigma appears (aggregator, layer update, MGE, skip); no biases.
  Mean aggregation is applied before Q (mean(h Q) = mean(h) Q, Q is linear), which is exact.
- User-user / item-item graphs: built once on the host from the training interactions only.
  Two users are linked through shared items, two items through shared users; each node keeps
  its `n_neighbors` (default 10) most similar nodes by cosine similarity of the binary
  interaction vectors, count(a, b) / sqrt(|N(a)| |N(b)|) (cooc="cosine", the paper's measure),
  or by the raw co-occurrence count (cooc="count"). The paper thresholds similarities globally
  ("average degree 10"); we take a per-node top-k instead (every node with co-occurring nodes
  gets up to k neighbours, static [n, k] arrays). Ties: lower id first. Self pairs excluded.
  The graph is directed (a's list need not contain b's) and unweighted: MGE sums the k
  neighbours' ego embeddings with weight 1 (paper Eq. 5: a sum); nodes with fewer co-occurring
  nodes sum fewer, isolated nodes get z = tanh(0) = 0.
- Exact top-k, no sampling: pairs are enumerated by blocks of rows (a -> its columns -> their
  rows), counted by sorting int32 keys, cut per row with a 256-level histogram threshold and
  ranked exactly on the few survivors. Gowalla (29,858 users, 40,981 items, 822k pairs, 63M +
  70M co-occurrence pairs): about 4 CPU-seconds per graph, once per run (`prepare`).
- Fusion: element-wise sum by default (keeps repr_dim = dim, like MF and LightGCN); the paper
  compares sum, concatenation and attention; `fusion="concat"` is available, attention is not.
- MGE and skip use the ego embeddings e (one hop), Bipar-GCN propagates h; with layers > 1 the
  final h is the last layer's (no layer averaging).
- The paper's optional extra regularisers are not used; L2 covers the ego embeddings of the
  batch rows only (as for every backbone here), not the weight matrices.
- Initialisation: Xavier uniform for embeddings and all weight matrices.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from til_jax.data.dataset import CSR
from til_jax.models.base import Backbone, xavier
from til_jax.models.sparse import bipartite_operators, op_matmul, op_rows, sparse_operator, unique_ids
from til_jax.registry import BACKBONES

COOC_BLOCK_PAIRS = 4_000_000  # co-occurrence pairs enumerated per block (memory bound, ~50 MB)


# ----------------------------------------------------------------------------------------------
# Host-side co-occurrence graphs
# ----------------------------------------------------------------------------------------------

def transpose_csr(m: CSR) -> CSR:
  """The transpose of a CSR matrix (columns become rows; indices sorted within rows)."""
  rows = m.row_ids()
  order = np.argsort(m.indices, kind="stable")
  indptr = np.zeros(m.n_cols + 1, np.int64)
  np.cumsum(np.bincount(m.indices, minlength=m.n_cols), out=indptr[1:])
  return CSR(indptr, rows[order].astype(np.int32), m.n_cols, m.n_rows)


def cooccurrence_topk(m: CSR, k: int, measure: str = "cosine",
                      block_pairs: int = COOC_BLOCK_PAIRS) -> tuple[np.ndarray, np.ndarray]:
  """Each row's k most similar other rows of a 0/1 matrix m [n, c] by shared columns.

  measure "count": co(a, b) = |N(a) & N(b)|; "cosine": co(a, b) / sqrt(|N(a)| |N(b)|) (ranked
  within a row, so only the 1 / sqrt(|N(b)|) factor matters). Exact; ties -> lower id first.
  Returns (nbr [n, k] int32, w [n, k] float32): neighbour ids (0 where absent) and 1/0 weights.
  """
  n = m.n_rows
  t = transpose_csr(m)
  deg, tdeg = m.lengths, t.lengths
  inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0).astype(np.float32)
  nbr = np.zeros((n, k), np.int32)
  wgt = np.zeros((n, k), np.float32)
  # pairs enumerated for row a: sum over its columns c of |rows of c|; cut rows into blocks.
  per_row = np.bincount(m.row_ids(), weights=tdeg[m.indices], minlength=n)
  cum = np.cumsum(per_row)
  cuts = np.searchsorted(cum, np.arange(block_pairs, cum[-1] if n else 0, block_pairs), side="right")
  bounds = np.unique(np.concatenate([[0], np.minimum(cuts, n), [n]])).astype(np.int64)
  for a0, a1 in zip(bounds[:-1], bounds[1:]):
    cols = m.indices[m.indptr[a0]:m.indptr[a1]]
    lens = tdeg[cols]
    total = int(lens.sum())
    if total == 0:
      continue
    # (a, b) for every b sharing a column with a, as one integer key (a - a0) * n + b.
    dt = np.int32 if (a1 - a0) * n < 2**31 else np.int64
    pos = np.repeat(t.indptr[cols] - (np.cumsum(lens) - lens), lens) + np.arange(total)
    key = np.repeat(np.repeat(np.arange(a1 - a0, dtype=dt) * dt(n), deg[a0:a1]), lens)
    key += t.indices[pos].astype(dt)
    key.sort()
    first = np.empty(key.size, bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    count = np.diff(starts, append=key.size).astype(np.float32)
    ra, rb = np.divmod(key[starts], dt(n))
    score = count * inv_sqrt[rb] if measure == "cosine" else count
    score[ra + a0 == rb] = -1.0                                   # never oneself
    # Cheap exact pre-selection: per row, a 256-level histogram of score / row max; keep the
    # levels that hold the row's top k (level is monotone in score), then rank the survivors.
    gs = np.flatnonzero(np.r_[True, ra[1:] != ra[:-1]])
    grp = np.repeat(np.arange(gs.size), np.diff(gs, append=ra.size))
    rmax = np.maximum(np.maximum.reduceat(score, gs), 1e-30)
    level = np.clip(score / rmax[grp] * 255.0, 0, 255).astype(np.int32)
    hist = np.bincount(grp * 256 + level, minlength=gs.size * 256).reshape(gs.size, 256)
    above = np.cumsum(hist[:, ::-1], axis=1)                      # [g, j]: count(level >= 255-j)
    thr = np.where(above[:, -1] < k, 0, 255 - np.argmax(above >= k, axis=1))
    keep = (level >= thr[grp]) & (score > 0)
    ra, rb, score = ra[keep], rb[keep], score[keep]
    order = np.lexsort((rb, -score, ra))
    ra, rb = ra[order].astype(np.int64), rb[order]
    rank = np.arange(ra.size) - np.searchsorted(ra, ra)
    sel = rank < k
    nbr[ra[sel] + a0, rank[sel]] = rb[sel]
    wgt[ra[sel] + a0, rank[sel]] = 1.0
  return nbr, wgt


# ----------------------------------------------------------------------------------------------
# The backbone
# ----------------------------------------------------------------------------------------------

@BACKBONES.register("mgccf")
@dataclasses.dataclass(frozen=True)
class MGCCF(Backbone):
  """Multi-GCCF (see the module docstring for the equations and every choice made).

  Params: {"user", "item"}: ego embeddings [n, dim]; "bipar": per layer {"q_u", "q_i" [dim, dim],
  "w_u", "w_i" [2 dim, dim]}; "mge": {"m_u", "m_i" [dim, dim]}; "skip": {"s_u", "s_i" [dim, dim]}.
  Graph (`prepare`): the operators (`sparse_operator`) "ui" (users <- items, mean: 1 / |N(u)|),
  "iu" (items <- users, 1 / |N(i)|), "uu" and "ii" (the top-k co-occurrence graphs, weight 1).
  """

  layers: int = 1
  n_neighbors: int = 10
  cooc: str = "cosine"
  fusion: str = "sum"

  name = "mgccf"

  def __post_init__(self):
    from til_jax.errors import ConfigError
    if self.layers < 1:
      raise ConfigError(f"config.model.layers: must be >= 1 for mgccf, got {self.layers}")
    if self.n_neighbors < 1:
      raise ConfigError(f"config.model.n_neighbors: must be >= 1, got {self.n_neighbors}")
    if self.cooc not in ("cosine", "count"):
      raise ConfigError(f"config.model.cooc: {self.cooc!r}; allowed: cosine, count")
    if self.fusion not in ("sum", "concat"):
      raise ConfigError(f"config.model.fusion: {self.fusion!r}; allowed: sum, concat")

  def init(self, key):
    d = self.dim
    ks = iter(jax.random.split(key, 6 + 4 * self.layers))
    sq = lambda: xavier(next(ks), (d, d))
    params = {"user": xavier(next(ks), (self.n_users, d)), "item": xavier(next(ks), (self.n_items, d))}
    params["bipar"] = [{"q_u": sq(), "q_i": sq(), "w_u": xavier(next(ks), (2 * d, d)),
                        "w_i": xavier(next(ks), (2 * d, d))} for _ in range(self.layers)]
    params["mge"] = {"m_u": sq(), "m_i": sq()}
    params["skip"] = {"s_u": sq(), "s_i": sq()}
    return params

  def prepare(self, dataset) -> dict:
    train = dataset.train
    users, items = train.to_pairs()
    du = np.bincount(users, minlength=self.n_users).astype(np.float64)
    di = np.bincount(items, minlength=self.n_items).astype(np.float64)
    graph = bipartite_operators(train, 1.0 / du[users], 1.0 / di[items])
    for name, m, n in (("uu", train, self.n_users), ("ii", transpose_csr(train), self.n_items)):
      nbr, w = cooccurrence_topk(m, self.n_neighbors, self.cooc)
      rows, slot = np.nonzero(w)
      graph.update(sparse_operator(rows, nbr[rows, slot], w[rows, slot], n, n, name))
    return {k: jnp.asarray(v) for k, v in graph.items()}

  # -- pieces ------------------------------------------------------------------------------------

  @staticmethod
  def _bipar_update(h_self, h_nbr_mean, q, w):
    """tanh([h ; tanh(mean(h_N) Q)] W): [R, d], [R, d] -> [R, d]   (MGCCF Eq. 1-3)."""
    return jnp.tanh(jnp.concatenate([h_self, jnp.tanh(h_nbr_mean @ q)], -1) @ w)

  def _fuse(self, h, ego, nbr_sum, m, s):
    """Fusion of Bipar-GCN h, MGE z = tanh(sum_S e M) and skip tanh(e S): -> [R, repr_dim]."""
    z = jnp.tanh(nbr_sum @ m)
    sk = jnp.tanh(ego @ s)
    return h + z + sk if self.fusion == "sum" else jnp.concatenate([h, z, sk], -1)

  # -- interface ---------------------------------------------------------------------------------

  def represent(self, params, graph):
    """(e*_U [n_users, r], e*_I [n_items, r]) over the whole graph."""
    eu, ei = params["user"], params["item"]
    hu, hi = eu, ei
    for lp in params["bipar"]:
      mu, mi = op_matmul(graph, "ui", hi, self.n_users), op_matmul(graph, "iu", hu, self.n_items)
      hu, hi = (self._bipar_update(hu, mu, lp["q_u"], lp["w_u"]),
                self._bipar_update(hi, mi, lp["q_i"], lp["w_i"]))
    u = self._fuse(hu, eu, op_matmul(graph, "uu", eu, self.n_users), params["mge"]["m_u"],
                   params["skip"]["s_u"])
    i = self._fuse(hi, ei, op_matmul(graph, "ii", ei, self.n_items), params["mge"]["m_i"],
                   params["skip"]["s_i"])
    return u, i

  def triplet_repr(self, params, graph, users, pos, neg):
    """(e*_u, e*_i, e*_j) [B, r]. With one layer only the batch's distinct rows are computed,
    from their own neighbour lists (exact: equals represent()[ids])."""
    if self.layers > 1:
      return super().triplet_repr(params, graph, users, pos, neg)
    eu, ei = params["user"], params["item"]
    lp, mge, skip = params["bipar"][0], params["mge"], params["skip"]
    ru, inv_u, valid_u = unique_ids(users)
    ego_u = eu[ru]
    h_u = self._bipar_update(ego_u, op_rows(graph, "ui", ei, ru, valid_u), lp["q_u"], lp["w_u"])
    u = self._fuse(h_u, ego_u, op_rows(graph, "uu", eu, ru, valid_u), mge["m_u"], skip["s_u"])
    items = jnp.concatenate([pos, neg])
    ri, inv_i, valid_i = unique_ids(items)
    ego_i = ei[ri]
    h_i = self._bipar_update(ego_i, op_rows(graph, "iu", eu, ri, valid_i), lp["q_i"], lp["w_i"])
    it = self._fuse(h_i, ego_i, op_rows(graph, "ii", ei, ri, valid_i), mge["m_i"], skip["s_i"])
    b = users.shape[0]
    it = it[inv_i]
    return u[inv_u], it[:b], it[b:]

  @property
  def repr_dim(self) -> int:
    return self.dim if self.fusion == "sum" else 3 * self.dim
