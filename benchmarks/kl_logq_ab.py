"""A/B in one process: value_and_grad of TIL-MI's clustering loss (Eq. 9) over every item, in the
forms it has had, and (`--epoch`) a Gowalla TIL-MI bilevel epoch with the last two.

Gowalla's shape (40,981 items, K 60, d 64):
  log_q_of_softmax  log(softmax + 1e-30), autodiff (before 2026-12-02)
  log_softmax       log Q as a log-softmax, autodiff (2026-12-02 to 12-03)
  written_out       the same log Q with its gradient written out (a custom VJP, `written_out_kl`
                    here: a candidate, not adopted; BUILD_NOTES 2026-12-03, session 14)
log_softmax is clustering.cluster_kl. The loss values agree to float32 rounding. `--epoch` scans
one bilevel epoch of Gowalla x MF's `:cpu` config with TIL-MI (same batches and starting state)
with clustering.cluster_kl as it is, then with the written-out form, and reports the parameters'
largest difference. Run on a quiet machine (TIL_DATA_DIR set for `--epoch`):

  python -m benchmarks.kl_logq_ab [--epoch] [--out=benchmarks/results/kl-grad-ab-DATE.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from til_jax.til import clustering


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def written_out_rows(target, x, centres, tau):
  """clustering._kl_rows(target, log_soft_assignment(x, centres, tau)) with its VJP by hand."""
  return clustering._kl_rows(target, clustering.log_soft_assignment(x, centres, tau))


def _fwd(target, x, centres, tau):
  d = clustering.sq_distances(x, centres)
  log_q = jax.nn.log_softmax(-(tau + 1.0) / 2.0 * jnp.log1p(d / tau), axis=1)
  return clustering._kl_rows(target, log_q), (target, x, centres, log_q, d)


def _bwd(tau, res, g):
  # dKL_i/dl_ik = Q_ik sum_k' T_ik' - T_ik; dl/dd = -(tau+1)/2 / (tau + d); dd/dx = 2 (x - c)
  target, x, centres, log_q, d = res
  g_l = g[:, None] * (jnp.exp(log_q) * jnp.sum(target, axis=1, keepdims=True) - target)
  g_d = jnp.where(d > 0, g_l * (-(tau + 1.0) / 2.0) / (tau + d), 0.0)
  g_x = 2.0 * (jnp.sum(g_d, axis=1, keepdims=True) * x - g_d @ centres)
  g_c = 2.0 * (jnp.sum(g_d, axis=0)[:, None] * centres - g_d.T @ x)
  return jnp.zeros_like(target), g_x, g_c


written_out_rows.defvjp(_fwd, _bwd)


def written_out_kl(target, x, centres, tau=1.0, reduction="sum", valid=None, n_items=None):
  """clustering.cluster_kl with written_out_rows."""
  return clustering._reduce(written_out_rows(target, x, centres, float(tau)), reduction, valid,
                            n_items)


def loss_only(n: int = 40981, k: int = 60, d: int = 64, repeats: int = 20) -> dict:
  k1, k2 = jax.random.split(jax.random.key(0))
  x = jax.random.normal(k1, (n, d)) * 0.1
  c = jax.random.normal(k2, (k, d)) * 0.1
  t = clustering.target_distribution(clustering.soft_assignment(x, c))
  forms = {"log_q_of_softmax": lambda x, c: clustering.kl_loss(t, clustering.soft_assignment(x, c)),
           "log_softmax": lambda x, c: clustering.cluster_kl(t, x, c),
           "written_out": lambda x, c: written_out_kl(t, x, c)}
  out = {}
  for name in (*forms, *forms):  # each twice, interleaved: the second pass is the one kept
    g = jax.jit(jax.value_and_grad(forms[name], argnums=(0, 1)))
    jax.block_until_ready(g(x, c))
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(g(x, c))
      times.append(time.perf_counter() - t0)
    out[name] = {"median_ms": round(1e3 * float(np.median(times)), 1), "loss": float(g(x, c)[0])}
  out["ratio_written_out_vs_log_softmax"] = round(
      out["written_out"]["median_ms"] / out["log_softmax"]["median_ms"], 3)
  return out


def epoch(repeats: int = 2) -> dict:
  from benchmarks.phase_step_ab import _scan, _time
  from configs import gowalla_mf
  from til_jax.train import loop
  cfg = gowalla_mf.get_config("cpu")
  cfg.method, cfg.til.pretrain_epochs = "til_mi", 0
  _, model, method, consts = loop.build(cfg)
  state = method.on_epoch_start(loop.init_state(cfg, model, method), 0, consts)
  batches = method.epoch_batches(0, np.random.default_rng([int(cfg.seed), 0]))
  library = clustering.cluster_kl
  out, states = {}, {}
  for name in ("log_softmax", "written_out", "log_softmax", "written_out"):
    clustering.cluster_kl = written_out_kl if name == "written_out" else library
    try:  # a new jit: traced with this form
      out[name], states[name] = _time(_scan(method.core.bilevel_update, consts), state, batches,
                                      repeats)
    finally:
      clustering.cluster_kl = library
  out = {k: [round(x, 2) for x in v] for k, v in out.items()}
  out["ratio"] = round(float(np.median(out["written_out"]) / np.median(out["log_softmax"])), 3)
  out["max_abs_param_diff"] = max(
      float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
      for a, b in zip(jax.tree.leaves(states["log_softmax"].params),
                      jax.tree.leaves(states["written_out"].params)))
  return out


def main(with_epoch: bool = False, out_path: str = "") -> dict:
  out = {"loss_value_and_grad": loss_only()}
  if with_epoch:
    out["til_mi_bilevel_epoch_s"] = epoch()
  print(json.dumps(out))
  if out_path:
    with open(out_path, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epoch", action="store_true", help="also time a Gowalla TIL-MI bilevel epoch")
  p.add_argument("--out", default="", help="also write the figures to this JSON file")
  a = p.parse_args()
  main(a.epoch, a.out)
