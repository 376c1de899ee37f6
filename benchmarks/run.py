"""Speed and memory harness: `python -m benchmarks.run --suite=quick|full|peers --out=FILE.json`.

quick  a small synthetic dataset (seconds): the harness works end to end (tests run this).
full   Gowalla split-811-seed0 from $TIL_DATA_DIR (or a random dataset of the same shape when
       absent): BPR / TIL-UI / TIL-MI step times for MF and LightGCN (median of many steps after
       warm-up), epoch times including sampling, full-ranking evaluation, peak RSS, and the ratios
       TIL/BPR measured in this one process.
peers  the same epoch and evaluation work in RecBole and `implicit` (benchmarks/peers.py; build
       their venv once with `bash benchmarks/peers_env.sh`, then this command re-runs itself
       there); a peer that cannot be imported gets a record with an `error` field.

Every record: name, median_ms, p10_ms, p90_ms, peak_rss_mb. Top-level keys: bpr_mf_step_ms,
til_ui_mf_step_ms, til_mi_mf_step_ms, eval_valid_s, bpr_mf_epoch_s, lightgcn_epoch_s, the row-sparse
step's (sparse_adam) step and epoch and the large-catalogue steps, ratios, load averages,
and the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np

from benchmarks.timing import peak_rss_mb, stats
from configs import default
from til_jax.data.dataset import CSR, Dataset
from til_jax.evaluation import Evaluator
from til_jax.train import loop


def random_dataset(n_users: int, n_items: int, nnz: int, seed: int = 0) -> Dataset:
  """A dataset of a given shape with popularity-skewed random interactions."""
  rng = np.random.default_rng(seed)
  users = rng.integers(0, n_users, int(nnz * 1.25))
  items = np.minimum((rng.pareto(1.2, users.size) * n_items / 50).astype(np.int64), n_items - 1)
  items = (items + rng.integers(0, n_items, users.size) * (rng.random(users.size) < 0.5)) % n_items
  full = CSR.from_pairs(users, items, n_users, n_items)
  u, i = full.to_pairs()
  part = rng.random(u.size)
  mk = lambda m: CSR.from_pairs(u[m], i[m], n_users, n_items)
  return Dataset("random", n_users, n_items, mk(part < 0.8), mk((part >= 0.8) & (part < 0.9)),
                 mk(part >= 0.9))


def make_config(suite: str, method: str, backbone: str):
  c = default.get_config()
  c.method = method
  c.model.name = backbone
  if backbone in ("lightgcn", "mgccf"):
    c.model.layers = 1
  c.til.pretrain_epochs = 0
  if suite == "quick":
    c.data.name = "synthetic"
    c.train.batch_size = 256
    c.model.dim = 16
    c.til.n_clusters = 8
  return c


def build_for(config, dataset):
  """loop.build on a given dataset (so one dataset serves every measurement)."""
  _, model, method, consts = loop.build(config, dataset)
  return model, method, consts


def time_steps(config, dataset, n_steps: int, warmup: int = 3) -> tuple[list[float], object]:
  model, method, consts = build_for(config, dataset)
  state = loop.init_state(config, model, method)
  state = method.on_epoch_start(state, 0, consts)
  batches = method.epoch_batches(0, np.random.default_rng(0))
  steps = batches["users"].shape[0]
  step = jax.jit(lambda s, b: method.update(s, b, consts), donate_argnums=0)
  times = []
  for t in range(warmup + n_steps):
    b = jax.tree.map(lambda v, t=t: v[t % steps], batches)
    t0 = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m)
    if t >= warmup:
      times.append(time.perf_counter() - t0)
  return times, (model, method, consts, state)


def time_epochs(config, dataset, n_epochs: int) -> list[float]:
  """Whole epochs: host sampling + one jit(scan) call, as the training loop runs them."""
  model, method, consts = build_for(config, dataset)
  state = loop.init_state(config, model, method)
  run_epoch = loop.make_epoch_fn(method)
  times = []
  for e in range(n_epochs + 1):
    t0 = time.perf_counter()
    state = method.on_epoch_start(state, e, consts)
    batches = method.epoch_batches(e, np.random.default_rng(e))
    state, m = run_epoch(state, batches, consts, method.phase(e))
    jax.block_until_ready(m)
    if e > 0:  # the first epoch compiles
      times.append(time.perf_counter() - t0)
  return times


def time_eval(dataset, dim: int, repeats: int) -> list[float]:
  from til_jax.evaluation import dot_score_fn
  rng = np.random.default_rng(0)
  params = (jax.numpy.asarray(rng.normal(size=(dataset.n_users, dim)).astype(np.float32)),
            jax.numpy.asarray(rng.normal(size=(dataset.n_items, dim)).astype(np.float32)))
  ev = Evaluator(dataset, "valid", ks=(20,))
  ev(dot_score_fn, params)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    ev(dot_score_fn, params)
    times.append(time.perf_counter() - t0)
  return times


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "jax": jax.__version__,
          "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def load(suite: str) -> Dataset:
  if suite == "quick":
    from til_jax.data.synthetic import make_synthetic
    return make_synthetic()
  from til_jax.data.registry import load_dataset
  c = default.get_config()
  try:
    return load_dataset(c.data)
  except Exception as e:  # noqa: BLE001 - any failure: fall back to the same shape
    print(f"gowalla unavailable ({e}); using a random dataset of the same shape", file=sys.stderr)
    return random_dataset(29858, 40981, 1027370)


def run_ours(suite: str) -> dict:
  ds = load(suite)
  n_steps, n_epochs, n_eval = (5, 1, 1) if suite == "quick" else (40, 3, 3)
  records, top = [], {"dataset": ds.summary(), "suite": suite}

  def record(r):
    records.append(r)
    print(json.dumps(r), file=sys.stderr, flush=True)
    return r

  for backbone in ("mf", "lightgcn"):
    # (the quick suite, a harness check, times TIL-MI on MF only)
    for method in ("bpr", "til_ui") + (("til_mi",) if backbone == "mf" or suite != "quick" else ()):
      r = record(stats(f"{method}_{backbone}_step",
                       time_steps(make_config(suite, method, backbone), ds, n_steps)[0]))
      top[f"{method}_{backbone}_step_ms"] = r["median_ms"]
    if backbone == "mf":  # the other exact route to the same hypergradient (til/bilevel.py)
      c = make_config(suite, "til_ui", backbone)
      c.til.hypergrad = "jvp"
      r = record(stats("til_ui_mf_jvp_step", time_steps(c, ds, n_steps)[0]))
      top["til_ui_mf_jvp_step_ms"] = r["median_ms"]
      c = make_config(suite, "til_ui", backbone)  # the bilevel step on the batch's rows
      c.til.row_lookahead = True
      r = record(stats("til_ui_mf_step_row_lookahead", time_steps(c, ds, n_steps)[0]))
      top["til_ui_mf_step_row_lookahead_ms"] = r["median_ms"]
      if suite != "quick":  # Eq. 9 over the step's items, dense / rows (full suite only)
        c = make_config(suite, "til_mi", backbone)
        c.til.kl_items = "batch"
        r = record(stats("til_mi_mf_step_kl_batch", time_steps(c, ds, n_steps)[0]))
        top["til_mi_mf_step_kl_batch_ms"] = r["median_ms"]
        c.optim.name = "sparse_adam"
        r = record(stats("til_mi_mf_step_kl_batch_sparse_adam", time_steps(c, ds, n_steps)[0]))
        top["til_mi_mf_step_kl_batch_sparse_adam_ms"] = r["median_ms"]
    for method in ("bpr", "til_ui") if backbone == "mf" else ("bpr",):
      r = record(stats(f"{method}_{backbone}_epoch",
                       time_epochs(make_config(suite, method, backbone), ds, n_epochs)))
      top[f"{method}_{backbone}_epoch_s"] = r["median_ms"] / 1e3
  top["lightgcn_epoch_s"] = top.pop("bpr_lightgcn_epoch_s")
  # The row-sparse step (til_jax.rows) against the exact dense Adam, on this dataset and on a
  # large catalogue where the touched rows are a tiny share of the tables.
  sparse = make_config(suite, "bpr", "mf")
  sparse.optim.name = "sparse_adam"
  r = record(stats("bpr_mf_step_sparse_adam", time_steps(sparse, ds, n_steps)[0]))
  top["bpr_mf_step_sparse_adam_ms"] = r["median_ms"]
  r = record(stats("bpr_mf_epoch_sparse_adam", time_epochs(sparse, ds, n_epochs)))
  top["bpr_mf_epoch_sparse_adam_s"] = r["median_ms"] / 1e3
  sparse = make_config(suite, "til_ui", "mf")  # TIL-UI's step and lazy Adam on the batch's rows
  sparse.optim.name = "sparse_adam"
  r = record(stats("til_ui_mf_step_sparse_adam", time_steps(sparse, ds, n_steps)[0]))
  top["til_ui_mf_step_sparse_adam_ms"] = r["median_ms"]
  if suite != "quick":
    r = record(stats("til_ui_mf_epoch_sparse_adam", time_epochs(sparse, ds, n_epochs)))
    top["til_ui_mf_epoch_sparse_adam_s"] = r["median_ms"] / 1e3
  big = random_dataset(*((500_000, 1_500_000, 2_000_000) if suite != "quick" else (5000, 15000, 20000)))
  # (TIL on the large catalogue in the full suite only: the quick one checks the harness)
  methods = ("bpr",) if suite == "quick" else ("bpr", "til_ui")
  for method, name in itertools.product(methods, ("adam", "sparse_adam")):
    c = make_config(suite, method, "mf")
    c.optim.name = name
    r = record(stats(f"{method}_mf_step_large_{name}", time_steps(c, big, n_steps)[0]))
    top[f"{method}_mf_step_large_{name}_ms"] = r["median_ms"]
  top["large_catalogue"] = big.summary()
  ev = record(stats("eval_valid_full_ranking", time_eval(ds, 64 if suite != "quick" else 16, n_eval)))
  top["eval_valid_s"] = ev["median_ms"] / 1e3
  top["ratios"] = {f"{m}/bpr_{b}_step": top[f"{m}_{b}_step_ms"] / top[f"bpr_{b}_step_ms"]
                   for b in ("mf", "lightgcn") for m in ("til_ui", "til_mi")
                   if f"{m}_{b}_step_ms" in top}
  top["ratios"]["til_ui/bpr_mf_epoch"] = top["til_ui_mf_epoch_s"] / top["bpr_mf_epoch_s"]
  top["ratios"]["til_ui_jvp/autodiff_mf_step"] = (top["til_ui_mf_jvp_step_ms"]
                                                  / top["til_ui_mf_step_ms"])
  top["ratios"]["til_ui_row_lookahead/bpr_mf_step"] = (top["til_ui_mf_step_row_lookahead_ms"]
                                                        / top["bpr_mf_step_ms"])
  top["ratios"]["sparse_adam/adam_mf_epoch"] = top["bpr_mf_epoch_sparse_adam_s"] / top["bpr_mf_epoch_s"]
  top["ratios"]["sparse_adam/adam_large_step"] = (top["bpr_mf_step_large_sparse_adam_ms"]
                                                  / top["bpr_mf_step_large_adam_ms"])
  for k in ("til_mi_mf_step_kl_batch", "til_mi_mf_step_kl_batch_sparse_adam"):
    if f"{k}_ms" not in top:
      continue
    top["ratios"][f"{k.replace('_mf_step', '')}/bpr_mf_step"] = (top[f"{k}_ms"]
                                                                  / top["bpr_mf_step_ms"])
  top["ratios"]["til_ui_sparse_adam/bpr_mf_step"] = (top["til_ui_mf_step_sparse_adam_ms"]
                                                     / top["bpr_mf_step_ms"])
  top["ratios"]["til_ui_sparse_adam/bpr_sparse_adam_mf_step"] = (
      top["til_ui_mf_step_sparse_adam_ms"] / top["bpr_mf_step_sparse_adam_ms"])
  if "til_ui_mf_epoch_sparse_adam_s" in top:
    top["ratios"]["til_ui_sparse_adam/adam_mf_epoch"] = (top["til_ui_mf_epoch_sparse_adam_s"]
                                                         / top["til_ui_mf_epoch_s"])
  if "til_ui_mf_step_large_adam_ms" in top:
    top["ratios"]["til_ui_sparse_adam/adam_large_step"] = (
        top["til_ui_mf_step_large_sparse_adam_ms"] / top["til_ui_mf_step_large_adam_ms"])
  return {**top, "records": records}


def run_peers(a) -> dict:
  """The peer libraries on the same split (benchmarks/peers.py, run in .venv-peers)."""
  from benchmarks import peers
  ds = load("quick" if a.data == "synthetic" else "full")
  return peers.run(ds, a.bpr_epochs, a.lightgcn_epochs, a.implicit_iters, a.peers.split(","))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_PYTHON = os.path.join(ROOT, ".venv-peers", "bin", "python")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--suite", choices=("quick", "full", "peers"), default="quick")
  p.add_argument("--out", default="")
  g = p.add_argument_group("peers suite")
  g.add_argument("--data", choices=("gowalla", "synthetic"), default="gowalla")
  g.add_argument("--bpr-epochs", type=int, default=5)
  g.add_argument("--lightgcn-epochs", type=int, default=2)
  g.add_argument("--implicit-iters", type=int, default=5)
  g.add_argument("--peers", default="recbole_bpr,recbole_lightgcn,implicit_bpr", help="comma-separated")
  g.add_argument("--peers-python", default=PEERS_PYTHON,
                 help="interpreter to re-run under when this one lacks a peer ('' = never)")
  a = p.parse_args(argv)
  if a.suite == "peers" and a.peers_python and os.path.exists(a.peers_python):
    from benchmarks import peers
    if not peers.available():
      print(f"re-running under {a.peers_python}", file=sys.stderr, flush=True)
      args = list(sys.argv[1:] if argv is None else argv) + ["--peers-python="]
      return subprocess.call([a.peers_python, "-m", "benchmarks.run", *args])
  result = {"machine": machine(), "load_average_start": os.getloadavg()}
  result.update(run_peers(a) if a.suite == "peers" else run_ours(a.suite))
  result["load_average_end"] = os.getloadavg()
  # The 1-minute load at the start is other processes' (at the end it includes this one's own
  # threads): above 1 on this 2-core machine something else was running.
  if result["load_average_start"][0] > 1.0:
    print(f"warning: load average {result['load_average_start'][0]:.1f} at the start on "
          f"{os.cpu_count()} cores: another process was competing for the cores; absolute "
          "times may be pessimistic (ratios from this one process still hold)", file=sys.stderr)
  result["peak_rss_mb"] = peak_rss_mb()
  text = json.dumps(result, indent=2)
  if a.out:
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, a.out)
  print(text)
  return 0 if "error" not in result else 2


if __name__ == "__main__":
  sys.exit(main())
