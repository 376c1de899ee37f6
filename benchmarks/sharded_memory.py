"""Per-device memory of the training state, embedding rows sharded over the mesh vs replicated.

  python -m benchmarks.sharded_memory [--items=4000000 --users=200000 --dim=32 --devices=8
                                       --method=bpr --steps=3 --out=FILE.json]

Fakes `--devices` CPU devices (XLA_FLAGS, set before JAX starts) and builds MF on a random
catalogue of `--items` items. For both layouts of `config.parallel.shard_embeddings` it reports,
per device:

  state_mb     the bytes of the TrainState (tables + both Adam moments) on each device: from the
               shapes and shardings (replicated: never allocated, 8 copies of a 4M-item table
               would not fit this machine), and measured from the live shards (sharded);
  xla_*_mb     XLA's memory analysis of the compiled epoch (arguments, outputs, temporaries), per
               device, compiled ahead of time from abstract inputs (nothing allocated).

Then it trains `--steps` steps on the sharded state, so the sharded program is shown to run, and
reports the step time (fake CPU devices share the host's cores: time is not a speed claim).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--items", type=int, default=4_000_000)
  p.add_argument("--users", type=int, default=200_000)
  p.add_argument("--dim", type=int, default=32)
  p.add_argument("--nnz", type=int, default=400_000)
  p.add_argument("--batch", type=int, default=8192)
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--method", default="bpr")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--out", default="")
  return p.parse_args(argv)


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import numpy as np

  from configs import default
  from til_jax import parallel
  from til_jax.data.dataset import CSR, Dataset
  from til_jax.train import loop

  assert jax.device_count() >= args.devices, jax.devices()
  rng = np.random.default_rng(0)
  users = rng.integers(0, args.users, args.nnz)
  items = rng.integers(0, args.items, args.nnz)
  train = CSR.from_pairs(users, items, args.users, args.items)
  empty = CSR.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), args.users, args.items)
  dataset = Dataset("random", args.users, args.items, train, empty, empty)

  c = default.get_config()
  c.method, c.model.dim, c.train.batch_size = args.method, args.dim, args.batch
  c.til.pretrain_epochs = 0
  _, model, method, consts = loop.build(c, dataset)
  abstract = jax.eval_shape(lambda: loop.init_state(c, model, method))
  batches = method.epoch_batches(0, np.random.default_rng([0, 0]))
  batches = jax.tree.map(lambda v: v[: args.steps], batches)
  mesh = parallel.make_mesh(args.devices)
  mb = 1.0 / 2**20
  report = {"items": args.items, "users": args.users, "dim": args.dim, "devices": args.devices,
            "method": args.method, "batch": args.batch, "jax": jax.__version__}

  for name, shard in (("replicated", False), ("sharded", True)):
    dp = parallel.DataParallel(mesh, shard_embeddings=shard, rows=(args.users, args.items))
    sh = dp.state_shardings(abstract)
    per_dev = sum(x.size * x.dtype.itemsize / (args.devices if not s.is_fully_replicated else 1)
                  for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(sh)))
    target = dp.abstract(abstract)
    abs_batches = jax.tree.map(lambda v, d=dp: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                                                    sharding=d.batch_sharding),
                               batches)
    rep_sh = dp.replicated
    abs_consts = jax.tree.map(lambda x, r=rep_sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=r),
                              consts)
    t0 = time.time()
    compiled = dp.jitted_epoch(method, abstract, method.phase(0)).lower(
        target, abs_batches, abs_consts).compile()
    mem = compiled.memory_analysis()
    report[name] = {"mode": dp.mode(method), "state_mb": per_dev * mb,
                    "xla_argument_mb": mem.argument_size_in_bytes * mb,
                    "xla_output_mb": mem.output_size_in_bytes * mb,
                    "xla_alias_mb": mem.alias_size_in_bytes * mb,
                    "xla_temp_mb": mem.temp_size_in_bytes * mb,
                    "compile_s": round(time.time() - t0, 1)}
    if shard:
      state = jax.jit(lambda: loop.init_state(c, model, method), out_shardings=sh)()
      live = {}
      for x in jax.tree.leaves(state):
        for s in x.addressable_shards:
          live[s.device.id] = live.get(s.device.id, 0) + s.data.nbytes
      report[name]["live_state_mb_per_device"] = [round(v * mb, 1) for _, v in sorted(live.items())]
      run = dp.epoch_fn(method)
      mc = dp.put_replicated(consts)
      state, metrics = run(state, batches, mc, method.phase(0))  # compiles
      jax.block_until_ready(state)
      t0 = time.time()
      state, metrics = run(state, batches, mc, method.phase(0))
      jax.block_until_ready(state)
      report[name]["step_s"] = round((time.time() - t0) / args.steps, 3)
      report[name]["loss"] = [float(v) for v in np.asarray(metrics["loss"])]
    print(name, json.dumps(report[name]), flush=True)
  rep, shd = report["replicated"], report["sharded"]
  report["state_ratio"] = rep["state_mb"] / shd["state_mb"]
  report["xla_total_ratio"] = (sum(rep[k] for k in ("xla_argument_mb", "xla_temp_mb"))
                               / sum(shd[k] for k in ("xla_argument_mb", "xla_temp_mb")))
  print(json.dumps({k: report[k] for k in ("state_ratio", "xla_total_ratio")}))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=2)
  return report


if __name__ == "__main__":
  main()
