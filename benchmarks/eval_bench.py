"""Times the full-ranking evaluator on Gowalla valid with random 64-d embeddings.

  python -m benchmarks.eval_bench [--chunk 128] [--block 32] [--dim 64] [--repeats 3]

Reads $TIL_DATA_DIR/gowalla/split-811-seed0 (default /work/shared/data). Every figure is the
median of `repeats` runs after one warm-up (compile) run, over all users with valid items, with
the same chunking as the evaluator; each reports wall seconds and process CPU seconds (all
threads: ~2x wall when both cores work, and the better estimate when the machine is shared).
Prints one JSON object to stdout:

  evaluator_s           Evaluator.__call__ (all metrics, host transfers, dispatch)
  matmul_s              scores = dot_score_fn(params, users) per chunk, materialized, nothing else
  matmul_mask_s         + the -inf scatter of the train items
  matmul_mask_topk_s    + block_top_k (what the evaluator runs before the metrics)
  matmul_mask_lax_topk_s  the same with a plain full `lax.top_k` instead, for comparison
  numpy_matmul_s        host BLAS (NumPy) matmul per chunk into a preallocated buffer
  exact                 block_top_k ids == lax.top_k ids for every user (a stable-sort order)
  evaluator_threads_cpu_s  CPU seconds of each busy thread in one evaluator run (Linux): the
                        XLA intra-op threads share the work; on a shared, loaded machine the
                        busiest thread's CPU time is the best estimate of the idle-machine wall
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from til_jax.data import load_split_folder
from til_jax.evaluation import Evaluator, block_top_k, dot_score_fn


def thread_cpu() -> dict[str, tuple[float, str]]:
  """CPU seconds (user + sys) and name of each thread of this process (Linux /proc)."""
  out = {}
  tick = os.sysconf("SC_CLK_TCK")
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/stat") as f:
        raw = f.read()
    except OSError:
      continue
    fields = raw.rsplit(")", 1)[1].split()
    out[tid] = ((int(fields[11]) + int(fields[12])) / tick, raw.split("(", 1)[1].rsplit(")", 1)[0])
  return out


def timed(fn, repeats: int) -> dict:
  """Warm-up run, then `repeats` runs: median / min wall and CPU seconds."""
  fn()
  wall, cpu = [], []
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return {"wall_s": statistics.median(wall), "wall_min_s": min(wall), "cpu_s": statistics.median(cpu),
          "runs_wall_s": [round(w, 3) for w in wall]}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--chunk", type=int, default=128)
  ap.add_argument("--block", type=int, default=32)
  ap.add_argument("--dim", type=int, default=64)
  ap.add_argument("--k", type=int, default=20)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--no-breakdown", action="store_true", help="time the evaluator only")
  args = ap.parse_args(argv)

  data_dir = os.environ.get("TIL_DATA_DIR", "/work/shared/data")
  t0 = time.perf_counter()
  ds = load_split_folder(os.path.join(data_dir, "gowalla", "split-811-seed0"), "gowalla")
  load_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  user_np = rng.standard_normal((ds.n_users, args.dim)).astype(np.float32)
  item_np = rng.standard_normal((ds.n_items, args.dim)).astype(np.float32)
  params = (jnp.asarray(user_np), jnp.asarray(item_np))

  t0 = time.perf_counter()
  ev = Evaluator(ds, "valid", ks=(args.k,), chunk=args.chunk, block=args.block)
  setup_s = time.perf_counter() - t0
  out: dict = {
      "dataset": ds.summary(), "users": ev.n_users, "items": ds.n_items, "dim": args.dim,
      "k": args.k, "chunk": ev.chunk, "block": args.block, "repeats": args.repeats,
      "jax": jax.__version__, "backend": jax.default_backend(), "cpus": os.cpu_count(),
      "machine": platform.processor() or platform.machine(),
      "loadavg_before": [round(x, 2) for x in os.getloadavg()],
      "load_s": round(load_s, 3), "evaluator_setup_s": round(setup_s, 3)}

  metrics = {}

  def run_evaluator():
    metrics.update(ev(dot_score_fn, params))

  out["evaluator"] = timed(run_evaluator, args.repeats)
  out["metrics"] = {k: round(v, 6) for k, v in metrics.items()}
  if os.path.isdir("/proc/self/task"):
    before = thread_cpu()
    run_evaluator()
    after = thread_cpu()
    busy = sorted(((t - before.get(tid, (0.0, ""))[0], name) for tid, (t, name) in after.items()),
                  reverse=True)
    out["evaluator_threads_cpu_s"] = [[name, round(t, 2)] for t, name in busy if t >= 0.05]

  if not args.no_breakdown:
    users, ex_rows, ex_cols = (list(map(jnp.asarray, a)) for a in (ev.users_c, ev.ex_rows, ev.ex_cols))
    k, block = args.k, args.block

    @jax.jit
    def matmul(p, u):
      return dot_score_fn(p, u)

    def masked(p, u, r, c):
      return dot_score_fn(p, u).at[r, c].set(-jnp.inf, mode="drop")

    stages = {
        "matmul": lambda i: matmul(params, users[i]),
        "matmul_mask": (lambda f: lambda i: f(params, users[i], ex_rows[i], ex_cols[i]))(
            jax.jit(masked)),
        "matmul_mask_topk": (lambda f: lambda i: f(params, users[i], ex_rows[i], ex_cols[i]))(
            jax.jit(lambda *a: block_top_k(masked(*a), k, block))),
        "matmul_mask_lax_topk": (lambda f: lambda i: f(params, users[i], ex_rows[i], ex_cols[i]))(
            jax.jit(lambda *a: jax.lax.top_k(masked(*a), k)[1])),
    }
    for name, stage in stages.items():
      def run(stage=stage):
        r = None
        for i in range(len(users)):
          r = stage(i)
        jax.block_until_ready(r)
      out[name] = timed(run, args.repeats)

    buf = np.empty((ev.chunk, ds.n_items), np.float32)

    def numpy_matmul():
      for u in ev.users_c:
        np.matmul(user_np[u], item_np.T, out=buf)
    out["numpy_matmul"] = timed(numpy_matmul, args.repeats)

    # Exactness on this data: block_top_k ids vs lax.top_k ids (ties: lower id), every user.
    same = True
    for i in range(len(users)):
      a = stages["matmul_mask_topk"](i)
      b = stages["matmul_mask_lax_topk"](i)
      same &= bool(np.array_equal(np.asarray(a)[ev.valid_c[i]], np.asarray(b)[ev.valid_c[i]]))
    out["exact"] = same

  out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
  for name in ("evaluator", "matmul", "matmul_mask", "matmul_mask_topk", "matmul_mask_lax_topk",
               "numpy_matmul"):
    if name in out:
      out[f"{name}_s"] = round(out[name]["wall_s"], 3)
  json.dump(out, sys.stdout, indent=1)
  sys.stdout.write("\n")
  return out


if __name__ == "__main__":
  main()
