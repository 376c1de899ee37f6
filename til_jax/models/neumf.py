"""NeuMF (He et al. 2017, "Neural Collaborative Filtering", Sec. 3.4), trained with BPR here.

  GMF:   phi_g = p^G_u * q^G_i                                   [d]       (NCF Eq. 9)
  MLP:   phi_m = a_L(W_L^T ... a_1(W_1^T [p^M_u ; q^M_i] + b_1) ... + b_L)   (NCF Eq. 10)
  score: y_ui = h^T [phi_g ; phi_m]                                          (NCF Eq. 11)

with ReLU activations a_l and separate GMF / MLP embeddings of size `dim` each. The NCF paper
puts a sigmoid on y_ui for its pointwise log loss; BPR only needs the score, and the output bias
cancels in y_ui - y_uj, so neither is used. NCF initialises NeuMF from pre-trained GMF and MLP
models; here it is trained from scratch (Xavier), like every backbone. The default tower
(64, 32, 16) follows NCF's halving rule for 64-d MLP embeddings (input 128).

Parameters: {"user": [n_users, 2 dim], "item": [n_items, 2 dim]} hold [GMF || MLP] embeddings
(each half Xavier-initialised separately), so the representation the TIL state reads, the
batch rows the L2 term regularises (embeddings only, as for MF) and the rows a lookahead
touches are the same rows as for MF; {"mlp": [{"w", "b"}, ...], "out": h} hold the network.
repr_dim = 2 dim.

Full ranking (`full_scores`) splits the first MLP layer: W_1 = [W_u ; W_i], so
W_1^T [p ; q] + b_1 = (W_u^T p) + (W_i^T q + b_1): the user part is computed per user, the item
part once per call for all items, and only the add + ReLU and the deeper (narrower) layers run
per (user, item) pair, in a `scan` over item tiles of `PAIR_BUDGET` floats ([users, items, h_1];
memory O(PAIR_BUDGET), independent of the chunk). 2 MiB tiles are the measured optimum on a
2-core CPU: big enough for XLA to split each tile's matmul over both cores (with 256 KiB tiles
one core did all the work), small enough to stay in cache (8 MiB tiles were slower). The GMF
part is one matmul.

Cost: with the default tower (64, 32, 16) a pair still costs 64*32 + 32*16 = 2560 multiply-adds
after the split (naive: 128*64 more), i.e. about 6.3 TFLOP for Gowalla's 29,858 x 40,981 pairs.
Measured on the shared 2-core CPU (eval chunk 256): 15x faster than running the network on all
pairs, and about 7x an MF evaluation; a smaller tower such as (32, 16, 8) halves it again.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from til_jax.models.base import Backbone, rows_sq, xavier
from til_jax.registry import BACKBONES

PAIR_BUDGET = 1 << 19  # floats of one [users, items, hidden] tile in full_scores (2 MiB)


@BACKBONES.register("neumf")
@dataclasses.dataclass(frozen=True)
class NeuMF(Backbone):
  """NeuMF with GMF and MLP embeddings of size `dim` and MLP hidden sizes `mlp_layers`."""

  mlp_layers: tuple = (64, 32, 16)

  name = "neumf"
  row_tables = {"user": ("users",), "item": ("pos", "neg")}

  def __post_init__(self):
    layers = tuple(int(h) for h in self.mlp_layers)
    if not layers or min(layers) <= 0:
      from til_jax.errors import ConfigError
      raise ConfigError(f"config.model.mlp_layers: need one or more positive sizes, got {self.mlp_layers!r}")
    object.__setattr__(self, "mlp_layers", layers)  # lists from configs -> hashable tuple

  def init(self, key):
    d = self.dim
    keys = jax.random.split(key, 5 + len(self.mlp_layers))
    user = jnp.concatenate([xavier(keys[0], (self.n_users, d)), xavier(keys[1], (self.n_users, d))], 1)
    item = jnp.concatenate([xavier(keys[2], (self.n_items, d)), xavier(keys[3], (self.n_items, d))], 1)
    mlp, fan_in = [], 2 * d
    for k, h in zip(keys[5:], self.mlp_layers):
      mlp.append({"w": xavier(k, (fan_in, h)), "b": jnp.zeros((h,), jnp.float32)})
      fan_in = h
    out = xavier(keys[4], (d + fan_in, 1))[:, 0]
    return {"user": user, "item": item, "mlp": mlp, "out": out}

  def represent(self, params, graph):
    return params["user"], params["item"]

  def triplet_repr(self, params, graph, users, pos, neg):
    """([B, 2 dim] x 3): the [GMF || MLP] embedding rows."""
    return params["user"][users], params["item"][pos], params["item"][neg]

  def _tower(self, mlp, h):
    """Layers 2..L on first-layer pre-activations h [..., h_1] -> phi_m [..., h_L]."""
    h = jax.nn.relu(h)
    for layer in mlp[1:]:
      h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h

  def pair_score(self, params, u, i):
    """y_ui [...] from representations u, i [..., 2 dim] (NCF Eq. 11)."""
    d = self.dim
    mlp = params["mlp"]
    phi_g = u[..., :d] * i[..., :d]
    phi_m = self._tower(mlp, jnp.concatenate([u[..., d:], i[..., d:]], -1) @ mlp[0]["w"] + mlp[0]["b"])
    return phi_g @ params["out"][:d] + phi_m @ params["out"][d:]

  def full_scores(self, params, reprs, users):
    """y [c, n_items] for users [c], without running the first layer per pair (module doc)."""
    d = self.dim
    mlp, out = params["mlp"], params["out"]
    u_all, i_all = reprs
    u = u_all[users]
    c, n = u.shape[0], i_all.shape[0]
    w1 = mlp[0]["w"]
    gmf = (u[:, :d] * out[:d]) @ i_all[:, :d].T                           # [c, n]
    u_part = u[:, d:] @ w1[:d]                                             # [c, h1]
    i_part = i_all[:, d:] @ w1[d:] + mlp[0]["b"]                           # [n, h1]
    h1 = w1.shape[1]
    tile = int(max(1, min(n, PAIR_BUDGET // max(1, c * h1))))
    n_tiles = -(-n // tile)
    i_part = jnp.pad(i_part, ((0, n_tiles * tile - n), (0, 0))).reshape(n_tiles, tile, h1)

    def one_tile(_, ip):
      phi_m = self._tower(mlp, u_part[:, None, :] + ip[None, :, :])         # [c, tile, h_L]
      return None, phi_m @ out[d:]                                         # [c, tile]

    _, mlp_scores = jax.lax.scan(one_tile, None, i_part)                   # [n_tiles, c, tile]
    mlp_scores = jnp.moveaxis(mlp_scores, 0, 1).reshape(c, n_tiles * tile)[:, :n]
    return gmf + mlp_scores

  def l2(self, params, graph, users, pos, neg):
    return rows_sq(params["user"][users], params["item"][pos], params["item"][neg])

  @property
  def repr_dim(self) -> int:
    return 2 * self.dim
