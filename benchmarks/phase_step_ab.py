"""A/B in one process: a TIL-MI epoch on Gowalla x MF scanned with `TIL.update` (which chooses
pre-training or the bilevel step by a lax.cond on the step counter) against the phase's own
branch, `pretrain_update` / `bilevel_update`, which the training loop scans since 2026-12-03
(`method.epoch_update(phase)`). Same batches and starting state for both; the states they reach
are compared too. Run on a quiet machine, with TIL_DATA_DIR set:

  python -m benchmarks.phase_step_ab [--repeats=2] [--out=benchmarks/results/phase-step-ab-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np


def _scan(step, consts):
  return jax.jit(lambda st, bs: jax.lax.scan(lambda s, b: step(s, b, consts), st, bs),
                 donate_argnums=0)


def _time(fn, state, batches, repeats: int):
  """Seconds of each of `repeats` epochs after a compiling one, from a copy of `state` (the
  scans donate it); the state after the last."""
  st = jax.tree.map(lambda x: x.copy(), state)
  st, _ = fn(st, batches)
  jax.block_until_ready(st)
  times = []
  for _ in range(repeats):
    st = jax.tree.map(lambda x: x.copy(), state)
    t0 = time.perf_counter()
    st, _ = fn(st, batches)
    jax.block_until_ready(st)
    times.append(time.perf_counter() - t0)
  return times, st


def main(repeats: int = 2, out_path: str = "") -> dict:
  from configs import gowalla_mf
  from til_jax.train import loop
  cfg = gowalla_mf.get_config("cpu")
  cfg.method, cfg.til.pretrain_epochs = "til_mi", 1
  _, model, method, consts = loop.build(cfg)
  core = method.core
  state = loop.init_state(cfg, model, method)
  rng = lambda e: np.random.default_rng([int(cfg.seed), e])
  pre = method.epoch_batches(0, rng(0))                 # no outer batch: plain BPR reads none
  pre_outer = {**pre, "outer": method.epoch_batches(1, rng(1))["outer"]}   # what update reads
  main_b = method.epoch_batches(1, rng(1))
  out = {}
  t_cond, _ = _time(_scan(core.update, consts), state, pre_outer, repeats)
  t_own, after_pre = _time(_scan(core.pretrain_update, consts), state, pre, repeats)
  out["pretrain_epoch_s"] = {"update": t_cond, "pretrain_update": t_own}
  t_cond, s_cond = _time(_scan(core.update, consts), after_pre, main_b, repeats)
  t_own, s_own = _time(_scan(core.bilevel_update, consts), after_pre, main_b, repeats)
  out["bilevel_epoch_s"] = {"update": t_cond, "bilevel_update": t_own}
  out["bilevel_max_abs_diff"] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                    for a, b in zip(jax.tree.leaves(s_cond.params),
                                                    jax.tree.leaves(s_own.params)))
  for k, v in out.items():
    if isinstance(v, dict):
      v = {n: [round(x, 2) for x in ts] for n, ts in v.items()}
      a, b = (np.median(ts) for ts in v.values())
      out[k] = {**v, "ratio": round(float(b / a), 3)}
  print(json.dumps(out))
  if out_path:
    with open(out_path, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--out", default="", help="also write the figures to this JSON file")
  a = p.parse_args()
  main(a.repeats, a.out)
