"""Times the full-ranking evaluator on Gowalla valid with random 64-d embeddings.

  python -m benchmarks.eval_bench [--chunk 128] [--block 32] [--dim 64] [--repeats 3]

Reads $TIL_DATA_DIR/gowalla/split-811-seed0 (default /work/shared/data). Every figure is the
median of `repeats` runs after one warm-up (compile) run, over all users with valid items, with
the same chunking as the evaluator; the stages run in turn within each round, so a load change
on a shared machine hits them alike. Each reports wall seconds and process CPU seconds (all
threads: ~2x wall when both cores work; wall ~= CPU means the process got one core).
Prints one JSON object to stdout:

  evaluator_s           Evaluator.__call__ (all metrics, host transfers, dispatch)
  matmul_s              scores = dot_score_fn(params, users) per chunk, written out, nothing else
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


def timed(fns: dict, repeats: int) -> dict[str, dict]:
  """One warm-up (compile) run of each function, then `repeats` rounds that run each once in
  turn (so a load change on a shared machine hits every stage alike): median / min wall and
  median CPU seconds per function."""
  for fn in fns.values():
    fn()
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t, c = time.perf_counter(), time.process_time()
      fn()
      wall[name].append(time.perf_counter() - t)
      cpu[name].append(time.process_time() - c)
  return {name: {"wall_s": statistics.median(wall[name]), "wall_min_s": min(wall[name]),
                 "cpu_s": statistics.median(cpu[name]),
                 "runs_wall_s": [round(w, 3) for w in wall[name]]} for name in fns}


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

  fns = {"evaluator": run_evaluator}
  if not args.no_breakdown:
    # Each stage is one jit call looping over the same chunks as the evaluator (`lax.scan`). The
    # matmul stages carry the last chunk's scores, so every chunk's [c, n] scores are written out
    # (XLA cannot drop a loop iteration) and nothing fuses into the matmul.
    chunks = tuple(map(jnp.asarray, (ev.users_c, ev.ex_rows, ev.ex_cols)))
    k, block, shape = args.k, args.block, (ev.chunk, ds.n_items)

    def masked(p, a):
      return dot_score_fn(p, a[0]).at[a[1], a[2]].set(-jnp.inf, mode="drop")

    def carry_scores(score):
      return jax.jit(lambda p, xs: jax.lax.scan(
          lambda _, a: (score(p, a), None), jnp.zeros(shape, jnp.float32), xs)[0])

    def map_ids(select):
      return jax.jit(lambda p, xs: jax.lax.map(lambda a: select(masked(p, a)), xs))

    chunk_fns = {
        "matmul": carry_scores(lambda p, a: dot_score_fn(p, a[0])),
        "matmul_mask": carry_scores(masked),
        "matmul_mask_topk": map_ids(lambda s: block_top_k(s, k, block)),
        "matmul_mask_lax_topk": map_ids(lambda s: jax.lax.top_k(s, k)[1]),
    }
    def run_all(f):
      return lambda: jax.block_until_ready(f(params, chunks))
    fns.update({name: run_all(f) for name, f in chunk_fns.items()})
    buf = np.empty((ev.chunk, ds.n_items), np.float32)

    def numpy_matmul():
      for u in ev.users_c:
        np.matmul(user_np[u], item_np.T, out=buf)
    fns["numpy_matmul"] = numpy_matmul

  out.update(timed(fns, args.repeats))
  out["metrics"] = {k: round(v, 6) for k, v in metrics.items()}
  if os.path.isdir("/proc/self/task"):
    before = thread_cpu()
    run_evaluator()
    after = thread_cpu()
    busy = sorted(((t - before.get(tid, (0.0, ""))[0], name) for tid, (t, name) in after.items()),
                  reverse=True)
    out["evaluator_threads_cpu_s"] = [[name, round(t, 2)] for t, name in busy if t >= 0.05]

  if not args.no_breakdown:
    # Exactness on this data: block_top_k ids vs lax.top_k ids (ties: lower id), every user.
    a = np.asarray(chunk_fns["matmul_mask_topk"](params, chunks))[ev.valid_c]
    b = np.asarray(chunk_fns["matmul_mask_lax_topk"](params, chunks))[ev.valid_c]
    out["exact"] = bool(np.array_equal(a, b))

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
