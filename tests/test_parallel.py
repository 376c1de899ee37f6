"""Data parallelism (til_jax.parallel): one device == four devices == pmap; the CLI on 1 and 4
devices; two processes on loopback.

Every JAX run happens in a subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=4 where
several devices are needed), so the pytest process keeps its own device count.

Tolerances (float32): splitting the batch only reorders the sums of the losses and gradients,
so parameters after an epoch agree to ~3e-8 (observed); the tests allow 1e-6 absolute on
parameters and 1e-5 on metrics. Each comparison also checks that the parameters moved by more
than 1e-3, so agreement is not trivial, and a missing reduction is caught: without the pmean of
the lookahead's inner gradient, pmap's hypergradient is off by ~2x (checked by hand).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOUR = "--xla_force_host_platform_device_count=4"
PARAM_TOL = 1e-6
METRIC_TOL = 1e-5
TIMEOUT = 900  # seconds; generous for a shared, loaded CI machine

STEP_SCRIPT = r"""
import json, sys
import jax, ml_collections, numpy as np
from tests.test_train import tiny_config
from tests.fixtures import write_split
from til_jax import parallel
from til_jax.errors import ConfigError
from til_jax.train import loop

assert jax.device_count() == 4, jax.devices()
folder = write_split(sys.argv[1])

def run(method, devices, backend="shard_map", shard=False, vma=False, **kw):
  base = {k.split(".", 1)[1]: v for k, v in kw.items() if k.startswith("baselines.")}
  c = tiny_config(folder, method=method, epochs=1,
                  **{k: v for k, v in kw.items() if k not in base and not k.startswith("baselines.")})
  for k, v in base.items():
    c.baselines[k] = v
  dataset, model, m, consts = loop.build(c)
  state = loop.init_state(c, model, m)
  init = jax.device_get(state.params)
  state = m.on_epoch_start(state, 0, consts)  # TIL-MI with pretrain_epochs=0: K-means here
  batches = m.epoch_batches(0, np.random.default_rng([0, 0]))
  if devices is None:  # the single-device reference: the plain jit(scan), no mesh, no axis name
    state, metrics = loop.make_epoch_fn(m)(state, batches, consts, m.phase(0))
  else:
    c.parallel.num_devices, c.parallel.backend = devices, backend
    c.parallel.shard_embeddings = shard
    dp = parallel.DataParallel.from_config(c, rows=(model.n_users, model.n_items))
    dp.check_vma = vma
    assert dp.size == devices
    assert dp.mode(m) == ("jit" if shard or method == "tce_bpr" else backend), dp.mode(m)
    state, metrics = loop.make_epoch_fn(m, dp)(dp.put_state(state), batches,
                                               dp.put_replicated(consts), m.phase(0))
    if shard:  # the user table (40 rows) and its Adam moments are split by rows over 4 devices
      for table in (state.params["model"]["user"], state.opt_state[0].mu["model"]["user"]):
        assert table.addressable_shards[0].data.shape == (10, 8), table.sharding
  state = jax.device_get(parallel.local(state))
  leaves = lambda t: [np.asarray(x, np.float64) for x in jax.tree.leaves(t)]
  return {"params": leaves((state.params, state.gen_params)), "init": leaves(init),
          "metrics": {k: np.asarray(v, np.float64) for k, v in jax.device_get(metrics).items()}}

def maxdiff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))

cases = {
    # (pmap: TIL-UI's case below covers it, collectives and all)
    "bpr": ("bpr", {}, [(1, "shard_map"), (4, "shard_map"), (4, "sharded")]),
    # a baseline without named-axis collectives: jit over sharded arrays (global truncation)
    "tce_bpr": ("tce_bpr", {"baselines.drop_rate": 0.2, "baselines.num_gradual": 2},
                [(4, "shard_map")]),
    "til_ui": ("til_ui", {"til.weight_norm": "softmax"}, [(4, "shard_map"), (4, "pmap")]),
    "til_mi": ("til_mi", {"til.pretrain_epochs": 0, "til.weight_norm": "mean"},
               [(4, "shard_map_vma")]),
}
out = {}
for name, (method, kw, variants) in cases.items():
  ref = run(method, None, **kw)
  res = {"moved": maxdiff(ref["params"][:len(ref["init"])], ref["init"])}
  for devices, backend in variants:
    r = run(method, devices, "shard_map" if backend in ("sharded", "shard_map_vma") else backend,
            shard=backend == "sharded", vma=backend == "shard_map_vma", **kw)
    res[f"{devices}/{backend}"] = {
        "params": maxdiff(r["params"], ref["params"]),
        "metrics": max(float(np.max(np.abs(r["metrics"][k] - v))) for k, v in ref["metrics"].items()),
        "metric_names": sorted(r["metrics"])}
  out[name] = res

errors = []
for field, value in (("train.batch_size", 66), ("parallel.num_devices", 5)):
  c = tiny_config(folder)
  node, leaf = c, field.split(".")
  node[leaf[0]][leaf[1]] = value
  try:
    parallel.DataParallel.from_config(c)
    errors.append("no error")
  except ConfigError as e:
    errors.append(str(e))
out["errors"] = errors
print("RESULT " + json.dumps(out))
"""


def _env(devices: int | None) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  # Unoptimised XLA code compiles ~25% faster; every run compared here uses the same flags.
  env["XLA_FLAGS"] = (FOUR if devices == 4 else "") + " --xla_backend_optimization_level=0"
  env["JAX_PLATFORMS"] = "cpu"  # the forced device count applies to the host platform only
  env["PYTHONPATH"] = ROOT
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cli(workdir, *extra):
  return [sys.executable, "-m", "experiments.main", "--config=configs/synthetic_mf.py",
          f"--workdir={workdir}", "--config.method=til_ui", "--config.train.epochs=3",
          "--config.train.batch_size=512", "--config.eval.every=3", "--config.til.eta_every=1",
          "--config.export_embeddings=True", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Every subprocess of this module, started together (they are mostly compilation, one core
  each): the one-epoch comparisons (STEP_SCRIPT, 4 devices), and three CLI runs of TIL-UI on
  the synthetic data: one process on one device (the reference), one process on 4 devices,
  two processes of one device each (jax.distributed on 127.0.0.1)."""
  tmp = tmp_path_factory.mktemp("parallel")
  cache = f"--config.data.cache_dir={tmp / 'cache'}"
  multi = [f"--config.parallel.coordinator=127.0.0.1:{_free_port()}",
           "--config.parallel.num_processes=2"]
  jobs = {
      "steps": ([sys.executable, "-c", STEP_SCRIPT, str(tmp / "split")], _env(4)),
      "one": (_cli(tmp / "one", cache), _env(None)),
      "four": (_cli(tmp / "four", cache), _env(4)),
      "proc0": (_cli(tmp / "multi", cache, *multi, "--config.parallel.process_id=0"), _env(None)),
      "proc1": (_cli(tmp / "multi", cache, *multi, "--config.parallel.process_id=1"), _env(None)),
      "sparse4": (_cli(tmp / "sparse4", cache, "--config.method=bpr",
                       "--config.optim.name=sparse_adam"), _env(4)),
  }
  procs = {k: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for k, (cmd, env) in jobs.items()}
  out = {}
  for k, p in procs.items():
    try:
      stdout, stderr = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      p.kill()
      stdout, stderr = p.communicate()
    out[k] = {"rc": p.returncode, "stdout": stdout, "stderr": stderr[-3000:]}
  for k, sub in (("one", "one"), ("four", "four"), ("proc0", "multi")):
    path = tmp / sub / "metrics.json"
    out[k]["metrics"] = json.loads(path.read_text()) if path.exists() else None
    out[k]["workdir"] = str(tmp / sub)
  return out


@pytest.fixture(scope="module")
def steps(runs):
  r = runs["steps"]
  lines = [ln for ln in r["stdout"].splitlines() if ln.startswith("RESULT ")]
  assert r["rc"] == 0 and lines, r["stderr"]
  return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("case", ["bpr", "til_ui", "til_mi", "tce_bpr"])
def test_one_epoch_equals_single_device(steps, case):
  """BPR, TIL-UI (global softmax weights) and TIL-MI (global mean-one weights, learned centres):
  one epoch on a 1-device mesh, on 4 devices (shard_map; TIL-MI with check_vma=True, the
  others with the default False) and, TIL-UI, under pmap equals the plain single-device jit(scan) step:
  parameters, generator and every step metric. BPR also with
  embedding rows sharded over the 4 devices, and TCE-BPR (a baseline: no named-axis code, run
  as jit over sharded arrays) with a truncation that must see the whole batch."""
  res = steps[case]
  assert res["moved"] > 1e-3
  variants = [k for k in res if "/" in k]
  assert variants
  for v in variants:
    assert res[v]["params"] < PARAM_TOL, (case, v, res[v])
    assert res[v]["metrics"] < METRIC_TOL, (case, v, res[v])
  if case.startswith("til"):
    assert {"hypergrad_norm", "w_mean", "w_std", "outer_loss"} <= set(res[variants[0]]["metric_names"])


def test_sparse_adam_on_several_devices_is_refused_in_one_line(runs):
  r = runs["sparse4"]
  assert r["rc"] == 2, r["stderr"]
  assert r["stderr"].strip().splitlines()[-1].startswith(
      "error: config.optim.name: sparse_adam's row-sparse step runs on one device")


def test_batch_and_device_count_are_checked(steps):
  not_divisible, too_many = steps["errors"]
  assert "config.train.batch_size" in not_divisible and "66" in not_divisible
  assert "config.parallel.num_devices" in too_many


def _same_metrics(a, b):
  for split in ("valid", "test"):
    for name, v in a[split].items():
      assert abs(v - b[split][name]) < METRIC_TOL, (split, name, v, b[split][name])
  assert a["best_epoch"] == b["best_epoch"] and a["epochs"] == b["epochs"]


def _embeddings(workdir):
  return [np.load(os.path.join(workdir, "embeddings", f"{n}.npy")) for n in ("user", "item")]


def _restored_params(workdir):
  """The best checkpoint's MF tables, restored in this (single-device) process."""
  from ml_collections import config_dict

  from til_jax.train import loop
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = config_dict.ConfigDict(json.load(f)["config"])
  _, _, _, state, _ = loop.restore(cfg, workdir, "best")
  return [np.asarray(state.params["model"][n]) for n in ("user", "item")]


def test_cli_four_devices_equals_one(runs):
  """The CLI (TIL-UI, 3 epochs, batch 512 = 4 x 128) on 4 devices: the same valid/test metrics
  and exported embeddings as on one device."""
  one, four = runs["one"], runs["four"]
  assert one["rc"] == 0, one["stderr"]
  assert four["rc"] == 0, four["stderr"]
  assert "data parallel: 4 devices in 1 process(es), shard_map" in four["stderr"]
  _same_metrics(one["metrics"], four["metrics"])
  for a, b in zip(_embeddings(one["workdir"]), _embeddings(four["workdir"])):
    np.testing.assert_allclose(a, b, atol=PARAM_TOL, rtol=0)


def test_two_processes_equal_one(runs):
  """jax.distributed on 127.0.0.1 with gloo CPU collectives: 2 processes x 1 device train TIL-UI
  as one process does; the checkpoint Orbax wrote from both processes restores in one process
  and process 0 alone wrote the workdir's files."""
  p0, p1, one = runs["proc0"], runs["proc1"], runs["one"]
  assert one["rc"] == 0, one["stderr"]
  if p0["rc"] != 0 and "DEADLINE_EXCEEDED" in p0["stderr"] + p1["stderr"]:
    pytest.skip("the two processes could not connect on 127.0.0.1: " + p0["stderr"][-300:])
  assert p0["rc"] == 0, p0["stderr"]
  assert p1["rc"] == 0, p1["stderr"]
  assert "data parallel: 2 devices in 2 process(es)" in p0["stderr"]
  _same_metrics(one["metrics"], p0["metrics"])
  with open(os.path.join(p0["workdir"], "metrics.jsonl")) as f:
    assert [json.loads(ln)["epoch"] for ln in f] == [1, 2, 3]  # one writer, no duplicates
  ref = _embeddings(one["workdir"])
  for a, b, c in zip(ref, _embeddings(p0["workdir"]), _restored_params(p0["workdir"])):
    np.testing.assert_allclose(a, b, atol=PARAM_TOL, rtol=0)
    np.testing.assert_allclose(a, c, atol=PARAM_TOL, rtol=0)
