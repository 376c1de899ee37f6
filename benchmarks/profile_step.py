"""Where a training step's time goes: its parts timed one by one, and the kernels XLA runs.

  python -m benchmarks.profile_step --out=benchmarks/results/profile-<date>.json   # Gowalla
  python -m benchmarks.profile_step --data=synthetic                                # a smoke run

For BPR-MF and TIL-UI-MF, on the dense path (whole tables, optax.adam) and on the row path
(`optim.name=sparse_adam`: the batch's rows, lazy Adam), each part of one step is jitted alone
and timed (median of `--steps` calls on the same batch, after a warm-up):

  BPR:    grad   value_and_grad of the BPR objective
          update the optimizer step on that gradient
  TIL-UI: state  s_t and the weights (Eq. 5, 3)
          hyper  the hypergradient through the lookahead (Eq. 14-15) and OPT_Lambda
          grad   the weighted inner gradient with the new weights
          update the model's optimizer step
  and the whole step (`step`), as training runs it (at a step where eta is not due: once per
  epoch, as in training; the state is not donated, so each call also allocates its outputs).
  The parts can add up to more than the step when XLA fuses across them. `kernels` counts the
  instructions of the compiled step's entry computation that run as separate kernels on the CPU
  (fusions, gathers, scatters, dots, custom calls, loops): XLA:CPU pays a fixed cost per kernel,
  which is why the count matters at Gowalla's size. Run it on a quiet machine: the numbers are times.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import run as bench
from til_jax import rows
from til_jax.bpr import bpr_objective
from til_jax.til import bilevel

KERNEL_OPS = ("fusion", "gather", "scatter", "dot", "custom-call", "while", "sort", "reduce",
              "dynamic-slice", "dynamic-update-slice", "conditional", "copy", "convolution")


def kernels(fn, *args) -> int:
  """Instructions of the compiled entry computation that are kernels (KERNEL_OPS)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  entry = text[text.index("ENTRY"):]
  entry = entry[:entry.index("\n}")]
  ops = re.findall(r"=\s*[\w\[\]{},:. ]*?\s(\w[\w-]*)\(", entry)
  return sum(op in KERNEL_OPS for op in ops)


def timed(fn, *args, n: int) -> float:
  f = jax.jit(fn)
  for _ in range(3):
    jax.block_until_ready(f(*args))
  out = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    out.append(time.perf_counter() - t0)
  return float(np.median(out) * 1e3)


def setup(ds, method: str, optim: str, dim: int, batch_size: int):
  c = bench.make_config("quick" if ds.name == "synthetic" else "full", method, "mf")
  c.optim.name, c.model.dim, c.train.batch_size = optim, dim, batch_size
  model, m, consts = bench.build_for(c, ds)
  state = bench.loop.init_state(c, model, m)
  state = m.on_epoch_start(state, 0, consts)
  b = jax.tree.map(lambda v: jnp.asarray(v[0]), m.epoch_batches(0, np.random.default_rng(0)))
  return c, model, m, consts, state, b


def profile_bpr(ds, optim, dim, bs, n) -> dict:
  c, model, m, consts, st, b = setup(ds, "bpr", optim, dim, bs)
  l2, g = float(c.optim.l2), consts["graph"]
  out = {"step": timed(m.update, st, b, consts, n=n), "kernels": kernels(m.update, st, b, consts)}
  if optim == "sparse_adam":
    def grad(p, b):
      view, vb = rows.row_view(p["model"], b, model.row_tables)
      return jax.grad(lambda v: bpr_objective({"model": v}, model, g, vb, l2))(view)
    gv = grad(st.params, b)
    idx = {"model": {t: b[f"rows_{t}"] for t in model.row_tables}}
    upd = lambda s, gv: rows.adam_rows({"model": gv}, s.opt_state, s.params, idx, m.lr, eps=m.eps)
  else:
    grad = lambda p, b: jax.grad(bpr_objective)(p, model, g, b, l2)
    gv = grad(st.params, b)
    upd = lambda s, gv: m.tx.update(gv, s.opt_state, s.params)
  out["grad"] = timed(grad, st.params, b, n=n)
  out["update"] = timed(upd, st, gv, n=n)
  return out


def profile_til(ds, optim, dim, bs, n) -> dict:
  c, model, m, consts, st, b = setup(ds, "til_ui", optim, dim, bs)
  core, s = m.core, m.core.settings
  # a step at which eta is not due (it is once per epoch): the state is not advanced between calls
  st = st.replace(step=st.step + 1)
  out = {"step": timed(m.update, st, b, consts, n=n), "kernels": kernels(m.update, st, b, consts)}
  ctx = {"graph": consts["graph"], **st.aux}
  params, batch, outer = st.params, b, b["outer"]
  if core.on_rows:
    tables = model.row_tables
    view, batch = rows.row_view(st.params["model"], b, tables)
    outer = {**b["outer"], **{k: b["outer"][f"inv_{k}"] for ks in tables.values() for k in ks}}
    ctx["eta"] = jnp.take(ctx["eta"], b["rows_user"], axis=0, mode="fill", fill_value=0)
    params = {**st.params, "model": view}
  state_fn = lambda p, gp, ctx, bt: bilevel.triplet_weights(
      model, gp, bilevel.triplet_state(model, p, ctx, bt, s), bt["mask"], s)

  def hyper(p, gp, go, ctx, bt, ob):
    sv = bilevel.triplet_state(model, p, ctx, bt, s)
    _, g = bilevel.hypergradient(gp, p, sv, model, ctx, bt, ob, s)
    upd, go = m.core.gen_tx.update(g, go, gp)
    return optax.apply_updates(gp, upd), go

  w = state_fn(params, st.gen_params, ctx, batch)
  inner = lambda p, w, ctx, bt: jax.grad(bilevel.inner_loss)(p, w, model, ctx, bt, s, False)
  gv = inner(params, w, ctx, batch)
  if core.on_rows:
    moved = {"model": {t: b.get(f"rows_{t}_inner", b[f"rows_{t}"]) for t in model.row_tables}}
    upd = lambda st, gv: rows.adam_rows(gv, st.opt_state, st.params, moved, m.lr, eps=m.eps)
  else:
    upd = lambda st, gv: m.tx.update(gv, st.opt_state, st.params)
  out["state"] = timed(state_fn, params, st.gen_params, ctx, batch, n=n)
  out["hyper"] = timed(hyper, params, st.gen_params, st.gen_opt_state, ctx, batch, outer, n=n)
  out["grad"] = timed(inner, params, w, ctx, batch, n=n)
  out["update"] = timed(upd, st, gv, n=n)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="gowalla", help="gowalla (the suite's data) | synthetic")
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--optims", default="adam,sparse_adam")
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  suite = "quick" if a.data == "synthetic" else "full"
  ds = bench.load(suite)
  dim, bs = (16, 256) if suite == "quick" else (64, 5000)
  res = {"dataset": ds.summary(), "dim": dim, "batch_size": bs, "machine": bench.machine(),
         "load_average_start": list(bench.os.getloadavg())}
  for optim in a.optims.split(","):
    res[f"bpr_{optim}"] = profile_bpr(ds, optim, dim, bs, a.steps)
    res[f"til_ui_{optim}"] = profile_til(ds, optim, dim, bs, a.steps)
    print(json.dumps({optim: {k: res[f"{k}_{optim}"] for k in ("bpr", "til_ui")}}), flush=True)
  res["load_average_end"] = list(bench.os.getloadavg())
  if a.out:
    with open(a.out, "w") as f:
      json.dump(res, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
