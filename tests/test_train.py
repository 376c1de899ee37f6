"""The training loop: BPR against NumPy, CLI, resume after a kill, refusals, non-finite stops."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from configs.default import set_fields
from til_jax import objectives
from til_jax.bpr import bpr_objective
from til_jax.errors import ConfigError, NonFiniteError
from til_jax.models import MF
from til_jax.train import loop

from .fixtures import write_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(path, method="bpr", epochs=6, **kw):
  c = default.get_config()
  c.data.path = path
  c.method = method
  c.model.dim = 8
  c.train.batch_size = 64
  c.train.epochs = epochs
  c.train.patience = 100
  c.eval.every = 2
  c.eval.ks = (5, 10)
  c.eval.metric = "recall@10"
  c.checkpoint.every = 1
  c.til.n_clusters = 3
  c.til.pretrain_epochs = 2
  c.til.eta_every = 1
  c.til.refresh_every = 2
  set_fields(c, kw)
  return c


def test_bpr_loss_and_gradient_match_numpy():
  rng = np.random.default_rng(0)
  model = MF(n_users=5, n_items=7, dim=4)
  U, I = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
  users, pos, neg = np.array([0, 1, 1, 4]), np.array([2, 3, 3, 6]), np.array([5, 0, 1, 2])
  batch = {"users": users, "pos": pos, "neg": neg, "mask": np.array([1, 1, 1, 0], bool)}
  l2 = 0.1
  with jax.enable_x64(True):
    params = {"model": {"user": jnp.asarray(U), "item": jnp.asarray(I)}}
    loss, g = jax.value_and_grad(bpr_objective)(params, model, {}, batch, l2)
  x = (U[users] * (I[pos] - I[neg])).sum(1)
  per = np.log1p(np.exp(-x))
  reg = 0.5 * ((U[users] ** 2).sum() + (I[pos] ** 2).sum() + (I[neg] ** 2).sum()) / 4
  np.testing.assert_allclose(float(loss), per[:3].mean() + l2 * reg, rtol=1e-10)
  gU = np.zeros_like(U)
  c = -1 / (1 + np.exp(x))
  for t in range(3):
    gU[users[t]] += c[t] * (I[pos[t]] - I[neg[t]]) / 3
  for t in range(4):
    gU[users[t]] += l2 * U[users[t]] / 4
  np.testing.assert_allclose(np.asarray(g["model"]["user"]), gU, rtol=1e-9, atol=1e-12)


def test_log_sigmoid_is_stable():
  big = jnp.asarray([-200.0, 200.0])
  v = objectives.bpr_per_triplet(big, jnp.zeros(2))
  assert np.isfinite(np.asarray(v)).all() and abs(float(v[0]) - 200.0) < 1e-3


@pytest.mark.parametrize("method", ["bpr", "til_ui", "til_mi", "til_mik"])
def test_every_method_trains_and_writes_outputs(tmp_path, method):
  data = write_split(str(tmp_path / "data"))
  work = str(tmp_path / "run")
  cfg = tiny_config(data, method, epochs=6)
  cfg.export_embeddings = True
  res = loop.train_and_evaluate(cfg, work)
  for key in ("dataset", "backbone", "method", "seed", "best_epoch", "epochs", "train_seconds"):
    assert key in res
  assert res["method"] == method and res["epochs"] == 6
  assert set(res["test"]) >= {"recall@10", "ndcg@10", "recall@5"}
  lines = [json.loads(x) for x in open(os.path.join(work, "metrics.jsonl"))]
  assert len(lines) == 6 and "valid" in lines[1]
  if method != "bpr":
    main = [x for x in lines if x["phase"] == "main"]
    assert main and all(0.0 < x["w_mean"] for x in main)
  u = np.load(os.path.join(work, "embeddings", "user.npy"))
  i = np.load(os.path.join(work, "embeddings", "item.npy"))
  assert u.shape == (40, 8) and i.shape[1] == 8 and u.dtype == np.float32
  on_disk = json.load(open(os.path.join(work, "metrics.json")))
  assert on_disk["test"] == pytest.approx(res["test"])
  # the phase that trained the reported checkpoint: its epoch's record in the log
  assert on_disk["best_phase"] == next(x["phase"] for x in lines if x["epoch"] == res["best_epoch"])


def test_a_run_that_never_leaves_pretraining_says_so(tmp_path, caplog):
  """TIL-MI whose pre-training outlasts the run reports a BPR model: metrics.json names the
  phase of its best checkpoint and the log warns."""
  data = write_split(str(tmp_path / "data"))
  res = loop.train_and_evaluate(tiny_config(data, "til_mi", epochs=4, **{"til.pretrain_epochs": 4}),
                                str(tmp_path / "run"))
  assert res["best_phase"] == "pretrain"
  assert "from pre-training" in caplog.text
  assert loop.train_and_evaluate(tiny_config(data, "bpr", epochs=2), str(tmp_path / "b"))[
      "best_phase"] == "main"


def test_learns_on_planted_structure(tmp_path):
  data = write_split(str(tmp_path / "data"), n_users=60, n_items=45)
  res = loop.train_and_evaluate(tiny_config(data, epochs=40, **{"optim.lr": 0.02,
                                                                "eval.every": 10}), str(tmp_path / "r"))
  # Random ranking of 45 items hits one of ~3 eligible-by-group items rarely; learning must beat it.
  assert res["valid"]["recall@10"] > 0.5


def _cli(args, **kw):
  env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}
  kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
  return subprocess.Popen([sys.executable, "-m", "experiments.main", *args], cwd=ROOT, env=env,
                          text=True, **kw)


def _cli_args(data, work, epochs, method="bpr"):
  return ["--config=configs/synthetic_mf.py", f"--workdir={work}", f"--config.data.path={data}",
          f"--config.method={method}", f"--config.train.epochs={epochs}", "--config.model.dim=8",
          "--config.train.batch_size=64", "--config.eval.every=2", "--config.checkpoint.every=1",
          "--config.til.pretrain_epochs=2", "--config.til.n_clusters=3", "--config.eval.ks=(10,)",
          "--config.eval.metric=recall@10"]


@pytest.mark.parametrize("method,kill_points", [
    ("bpr", (2, 6)),  # killed twice, at different points
    ("til_mi", (4,)),  # once, after the pre-training (epoch 2): the clusters are in the state
    ("pris", (3,)),  # its sampler is rebuilt from the restored state each epoch
])
def test_sigkill_then_resume_gives_identical_metrics(tmp_path, method, kill_points):
  data = write_split(str(tmp_path / "data"), n_users=60, n_items=45)
  # The reference runs beside the killed runs (its own workdir; its output to a file, which a
  # pipe nobody reads would block).
  with open(tmp_path / "ref.log", "w+") as ref_log:
    ref = _cli(_cli_args(data, tmp_path / "ref", 12, method), stdout=ref_log, stderr=ref_log)
    try:
      _kill_and_resume(data, tmp_path, method, kill_points, ref, ref_log)
    finally:
      if ref.poll() is None:
        ref.kill()
        ref.wait()


def _kill_and_resume(data, tmp_path, method, kill_points, ref, ref_log):
  work = tmp_path / "killed"
  for kill_after_ckpts in kill_points:
    p = _cli(_cli_args(data, work, 12, method))
    deadline = time.time() + 300
    while time.time() < deadline:
      ck = work / "checkpoints"
      steps = [int(x) for x in os.listdir(ck) if x.isdigit()] if ck.exists() else []
      if steps and max(steps) >= kill_after_ckpts:
        break
      if p.poll() is not None:
        break
      time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
  p = _cli(_cli_args(data, work, 12, method))
  out, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-2000:]
  ref.wait(timeout=600)
  ref_log.seek(0)
  assert ref.returncode == 0, ref_log.read()[-2000:]
  a = json.load(open(tmp_path / "ref" / "metrics.json"))
  b = json.load(open(work / "metrics.json"))
  assert a["valid"] == b["valid"] and a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def test_cli_bad_config_value_is_one_line_exit_2(tmp_path):
  data = write_split(str(tmp_path / "data"))
  p = _cli(_cli_args(data, tmp_path / "w", 2, method="nope"))
  out, err = p.communicate(timeout=120)
  assert p.returncode == 2
  assert err.strip().splitlines()[-1].startswith("error: config.method")
  p = _cli(_cli_args(data, tmp_path / "w", 2) + ["--config.no_such_field=1"])
  out, err = p.communicate(timeout=120)
  assert p.returncode == 2 and err.strip().splitlines()[-1].startswith("error:")
  assert "Traceback" not in err


def test_cli_missing_data_is_one_line_exit_2(tmp_path):
  p = _cli(_cli_args(str(tmp_path / "nowhere"), tmp_path / "w", 2))
  out, err = p.communicate(timeout=120)
  assert p.returncode == 2 and "nowhere" in err.strip().splitlines()[-1]
  assert "Traceback" not in err


def test_workdir_with_other_config_is_refused(tmp_path):
  data = write_split(str(tmp_path / "data"))
  loop.train_and_evaluate(tiny_config(data, epochs=2), str(tmp_path / "w"))
  with pytest.raises(ConfigError, match="different config"):
    loop.train_and_evaluate(tiny_config(data, epochs=2, **{"optim.lr": 0.5}), str(tmp_path / "w"))
  res = loop.train_and_evaluate(tiny_config(data, epochs=2, **{"optim.lr": 0.5,
                                                               "checkpoint.overwrite": True}),
                                str(tmp_path / "w"))
  assert res["epochs"] == 2


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  data = write_split(str(tmp_path / "data"))
  work = str(tmp_path / "w")
  loop.train_and_evaluate(tiny_config(data, epochs=2), work)
  from til_jax.bpr import BPR
  good_update = BPR.update

  def poisoned(self, state, batch, consts):
    state, m = good_update(self, state, batch, consts)
    return state, {**m, "loss": jnp.where(state.step > 10, jnp.nan, m["loss"])}
  monkeypatch.setattr(BPR, "update", poisoned)
  with pytest.raises(NonFiniteError, match=r"non-finite loss or gradient at epoch 3"):
    loop.train_and_evaluate(tiny_config(data, epochs=4), work)
  steps = sorted(int(x) for x in os.listdir(os.path.join(work, "checkpoints")) if x.isdigit())
  assert steps[-1] == 2  # nothing saved after the last good epoch


def test_config_validation_names_the_field():
  for field, value, match in (("train.batch_size", 0, "config.train.batch_size"),
                              ("model.name", "bert", "config.model.name"),
                              ("til.outer_batch", "x", "config.til.outer_batch"),
                              ("optim.lr", -1.0, "config.optim.lr")):
    c = tiny_config("/nonexistent", **{field: value})
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
      loop.train_and_evaluate(c, "/tmp/never-created-" + field)


def test_cluster_and_cutoff_larger_than_catalogue_are_refused(tmp_path):
  data = write_split(str(tmp_path / "data"))  # 30 items
  with pytest.raises(ConfigError, match=r"config\.til\.n_clusters"):
    loop.train_and_evaluate(tiny_config(data, "til_mi", **{"til.n_clusters": 31}), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match=r"config\.eval\.ks"):
    loop.train_and_evaluate(tiny_config(data, **{"eval.ks": (10, 500), "eval.metric": "recall@10"}),
                            str(tmp_path / "b"))


@pytest.mark.parametrize("backbone", ["neumf", "lightgcn", "mgccf"])
def test_other_backbones_train_through_the_loop(tmp_path, backbone):
  data = write_split(str(tmp_path / "data"))
  res = loop.train_and_evaluate(tiny_config(data, "til_ui", epochs=2, **{"model.name": backbone}),
                                str(tmp_path / "w"))
  assert res["backbone"] == backbone and np.isfinite(res["valid"]["recall@10"])


def test_loss_scale_multiplies_the_bpr_term_only():
  rng = np.random.default_rng(2)
  model = MF(n_users=5, n_items=7, dim=4)
  params = {"model": {"user": jnp.asarray(rng.normal(size=(5, 4))),
                      "item": jnp.asarray(rng.normal(size=(7, 4)))}}
  batch = {"users": jnp.asarray([0, 1, 4]), "pos": jnp.asarray([2, 3, 6]),
           "neg": jnp.asarray([5, 0, 1]), "mask": jnp.ones(3, bool)}
  bpr = float(bpr_objective(params, model, {}, batch, 0.0))
  reg = float(bpr_objective(params, model, {}, batch, 0.3)) - bpr
  assert abs(float(bpr_objective(params, model, {}, batch, 0.3, scale=2.5)) - (2.5 * bpr + reg)) < 1e-5


def test_loss_scale_and_weight_decay_are_checked(tmp_path):
  c = tiny_config(write_split(str(tmp_path / "d")), method="pris", **{"train.loss_scale": 2.0})
  with pytest.raises(ConfigError, match="config.train.loss_scale"):
    loop.build(c)
  c = tiny_config(write_split(str(tmp_path / "d")), **{"optim.weight_decay": 1e-2,
                                                       "optim.name": "sparse_adam"})
  with pytest.raises(ConfigError, match="config.optim.weight_decay"):
    loop.build(c)


def test_weight_decay_is_coupled_l2_before_adam():
  """optim.weight_decay = PyTorch Adam's weight_decay: Adam on g + wd * theta."""
  from til_jax import optim as opt
  c = default.get_config()
  c.optim.weight_decay, c.optim.lr = 0.1, 0.01
  tx = opt.model_optimizer(c.optim)
  p = {"w": jnp.asarray([1.0, -2.0, 3.0])}
  g = {"w": jnp.asarray([0.5, 0.0, -1.0])}
  ref = optax.adam(0.01)
  want = ref.update({"w": g["w"] + 0.1 * p["w"]}, ref.init(p), p)[0]
  got = tx.update(g, tx.init(p), p)[0]
  np.testing.assert_allclose(np.asarray(got["w"]), np.asarray(want["w"]), rtol=1e-6)


def test_hardest_of_n_is_dynamic_negative_sampling():
  """negative_pick=hardest: BPR on each group's highest-scored negative (NumPy), and the
  gradient of the others is zero; negative_pick=all is the mean over all N."""
  rng = np.random.default_rng(6)
  model = MF(n_users=5, n_items=9, dim=4)
  U, I = rng.normal(size=(5, 4)), rng.normal(size=(9, 4))
  users, pos = np.repeat([0, 3], 3), np.repeat([1, 2], 3)
  neg = np.array([4, 5, 6, 7, 8, 0])
  batch = {"users": users, "pos": pos, "neg": neg, "mask": np.ones(6, bool)}
  with jax.enable_x64(True):
    params = {"model": {"user": jnp.asarray(U), "item": jnp.asarray(I)}}
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    ys = lambda a, b: (U[a] * I[b]).sum(1)
    sn = ys(users, neg).reshape(2, 3)
    hard = neg.reshape(2, 3)[np.arange(2), sn.argmax(1)]
    want = np.mean(np.log1p(np.exp(-(ys(users[::3], pos[::3]) - ys(users[::3], hard)))))
    got = float(bpr_objective(params, model, {}, batch, 0.0, hardest_of=3))
    assert abs(got - want) < 1e-12
    mean_all = np.mean(np.log1p(np.exp(-(ys(users, pos) - ys(users, neg)))))
    assert abs(float(bpr_objective(params, model, {}, batch, 0.0)) - mean_all) < 1e-12
    g = jax.grad(bpr_objective)(params, model, {}, batch, 0.0, hardest_of=3)["model"]["item"]
    others = np.setdiff1d(neg, hard)
    assert np.abs(np.asarray(g)[others]).max() == 0.0


@pytest.mark.parametrize("method,kw", [
    ("bpr", {"train.negatives": 4}),
    ("bpr", {"train.negatives": 4, "train.negative_pick": "hardest"}),
    ("til_ui", {"train.negatives": 4, "til.weight_norm": "group_softmax"})])
def test_several_negatives_train_through_the_loop(tmp_path, method, kw):
  c = tiny_config(write_split(str(tmp_path / "d")), method=method, epochs=1, **kw)
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert res["valid"]["recall@10"] > 0


def test_several_negatives_are_refused_where_they_mean_nothing(tmp_path):
  d = write_split(str(tmp_path / "d"))
  for method, kw, field in (("pris", {"train.negatives": 4}, "config.train.negatives"),
                            ("bpr", {"train.negative_pick": "hardest"}, "config.train.negative_pick"),
                            ("til_ui", {"train.negatives": 4}, "config.til.weight_norm"),
                            ("til_ui", {"til.weight_norm": "group_softmax"}, "config.til.weight_norm")):
    with pytest.raises(ConfigError, match=field):
      loop.build(tiny_config(d, method=method, **kw))
