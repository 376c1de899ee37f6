"""Registries: a backbone and a method registered from outside the package train like built-ins,
through the library call and the CLI; unknown names are refused with the registered ones."""

import json
import os
import subprocess
import sys

import pytest

from til_jax.errors import ConfigError
from til_jax.registry import BACKBONES, METHODS
from til_jax.train import config_check, loop

from . import user_plugins
from .fixtures import write_split
from .test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_builtins_are_registered_where_they_are_defined():
  assert set(BACKBONES.names()) >= {"mf", "neumf", "lightgcn", "mgccf"}
  assert set(METHODS.names()) >= {"bpr", "til_ui", "til_mi", "til_mik", "aobpr", "wbpr", "pris",
                                  "tce", "rce", "tce_bpr", "rce_bpr"}


def test_user_backbone_and_method_train_through_train_and_evaluate(tmp_path):
  c = tiny_config(write_split(str(tmp_path / "data")), epochs=4)
  c.method, c.model.name, c.optim.lr = "user_hinge", "user_scaled_mf", 1e-2
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert (res["backbone"], res["method"]) == ("user_scaled_mf", "user_hinge")
  lines = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
  assert all("margin" in x for x in lines)            # the user's update ran
  assert lines[-1]["loss"] < lines[0]["loss"] and lines[-1]["margin"] > lines[0]["margin"]
  _, model, _, state, _ = loop.restore(c, str(tmp_path / "w"))
  assert isinstance(model, user_plugins.ScaledMF) and "scale" in state.params["model"]


def test_user_plugins_train_through_the_cli(tmp_path):
  data = write_split(str(tmp_path / "data"))
  work = str(tmp_path / "w")
  cmd = [sys.executable, "-m", "experiments.main", "--config=tests/user_plugins.py",
         f"--workdir={work}", f"--config.data.path={data}", "--config.train.epochs=2",
         "--config.eval.every=1", "--config.model.dim=8", "--config.train.batch_size=64",
         "--config.eval.ks=(5,)", "--config.eval.metric=recall@5"]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.load(open(os.path.join(work, "metrics.json")))
  assert (res["backbone"], res["method"]) == ("user_scaled_mf", "user_hinge")
  # The same CLI with a name nobody registered: one line naming the field and the choices.
  p = subprocess.run(cmd[:4] + [f"--workdir={tmp_path / 'x'}", "--config.model.name=nope"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert p.returncode == 2
  assert p.stderr.strip().splitlines()[-1].startswith("error: config.model.name: unknown backbone 'nope'")
  assert "user_scaled_mf" in p.stderr and "lightgcn" in p.stderr


@pytest.mark.parametrize("field,value", [("method", "nope"), ("model.name", "nope")])
def test_validate_reads_the_registries(field, value):
  c = user_plugins.get_config()
  config_check.validate(c)                             # registered names pass
  if field == "method":
    c.method = value
  else:
    c.model.name = value
  with pytest.raises(ConfigError, match=f"config.{field}: unknown"):
    config_check.validate(c)


def test_a_new_til_state_is_one_function_and_one_registration(tmp_path):
  """A state variant: its function in til.states (registered) and a TIL method naming it."""
  import jax.numpy as jnp

  from til_jax.til import states
  from til_jax.train import methods

  @states.state("test_pos_only")
  def pos_only(p_u, q_i, q_j, eta_u, mu_i, mu_j, settings):  # the negative side zeroed
    return jnp.concatenate([q_i * p_u + q_i * eta_u, jnp.zeros_like(q_j)], axis=-1)

  @methods.register("test_til_pos")
  class TILPos(methods.TIL):
    name, interest = "test_til_pos", "test_pos_only"

  c = tiny_config(write_split(str(tmp_path / "data")), "test_til_pos", epochs=2)
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert res["method"] == "test_til_pos"
  lines = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
  assert all("w_mean" in x for x in lines)            # bilevel from the first step (no clusters)


def test_a_til_subclass_with_its_own_update_trains_through_pre_training(tmp_path):
  """A subclass that wraps `update` gets its own step in every epoch, pre-training included, with
  whole batches (the outer one too: core.update's cond traces the bilevel branch)."""
  from til_jax.train import methods
  calls = []

  @methods.register("test_til_mi_wrapped")
  class Wrapped(methods.TILMI):
    name = "test_til_mi_wrapped"

    def update(self, state, batch, consts):
      calls.append(sorted(batch))           # at trace time: once per compiled phase
      return self.core.update(state, batch, consts)

  c = tiny_config(write_split(str(tmp_path / "data")), "test_til_mi_wrapped", epochs=3,
                  **{"til.pretrain_epochs": 1})
  loop.train_and_evaluate(c, str(tmp_path / "w"))
  lines = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
  assert [x["phase"] for x in lines if "phase" in x] == ["pretrain", "main", "main"]
  assert calls and all("outer" in keys for keys in calls)


def test_a_method_is_judged_only_on_the_config_sections_it_reads():
  """config_check.identity_diff: BPR ignores the TIL and baselines sections (but reads
  til.meta_fraction when it trains on the meta split), a baseline its own `baselines` knobs, TIL
  `til`, and a method whose class does not say keeps every field."""
  from configs import default
  from til_jax.train import config_check, methods

  def ident(method, **fields):
    c = default.get_config()
    c.method = method
    default.set_fields(c, fields)
    return config_check.identity(c)
  til, base = {"til.gen_lr": 0.5}, {"baselines.drop_rate": 0.3}
  assert config_check.identity_diff(ident("bpr"), ident("bpr", **til, **base)) == []
  assert config_check.identity_diff(ident("bpr", **{"train.meta_to_train": True}),
                                    ident("bpr", **{"train.meta_to_train": True,
                                                    "til.meta_fraction": 0.3})) == ["til.meta_fraction"]
  assert config_check.identity_diff(ident("tce_bpr"), ident("tce_bpr", **til, **base)) == [
      "baselines.drop_rate"]
  assert config_check.identity_diff(ident("til_mi"), ident("til_mi", **til, **base)) == ["til.gen_lr"]
  # TIL-UI never reads the clustering's fields (no pre-training, no clusters); TIL-MI does.
  mi = {"til.pretrain_epochs": 250, "til.alpha": 5.0, "til.n_clusters": 7}
  assert config_check.identity_diff(ident("til_ui"), ident("til_ui", **mi)) == []
  assert config_check.identity_diff(ident("til_mi"), ident("til_mi", **mi)) == sorted(mi)
  lloyd = {"til.kmeans_iters": 9}  # TIL-MIK's alone
  assert config_check.identity_diff(ident("til_mi"), ident("til_mi", **lloyd)) == []
  assert config_check.identity_diff(ident("til_mik"), ident("til_mik", **lloyd)) == sorted(lloyd)
  # Each baseline reads only its own knobs: tuning PRIS's K leaves T-CE and R-CE runs valid.
  knobs = {"baselines.pris_clusters": 7, "baselines.beta": 0.5, "baselines.aobpr_lambda": 0.2,
           "baselines.wbpr_exponent": 0.5, "baselines.num_gradual": 10}
  for method, want in (("pris", ["baselines.pris_clusters"]), ("rce", ["baselines.beta"]),
                       ("rce_bpr", ["baselines.beta"]), ("aobpr", ["baselines.aobpr_lambda"]),
                       ("wbpr", ["baselines.wbpr_exponent"]), ("tce", ["baselines.num_gradual"]),
                       ("tce_bpr", ["baselines.num_gradual"])):
    assert config_check.identity_diff(ident(method), ident(method, **knobs, **til)) == want, method
  assert "method" in config_check.identity_diff(ident("bpr"), ident("til_ui"))
  assert config_check.identity_diff(ident("bpr"), ident("bpr", **{"optim.lr": 0.5})) == ["optim.lr"]

  # A plugin that does not name its sections, standalone or a subclass of BPR defined outside
  # til_jax (it may read any section): every field counts. One that names them is judged so.
  from til_jax.bpr import BPR

  class Mine:
    pass

  class MyBPR(BPR):
    pass

  class MyTIL(BPR):
    config_sections = ("til",)

  class MyUI(methods.TILUI):  # names its sections, not what it ignores: it ignores nothing
    config_sections = ("til",)
  assert MyUI.config_ignores == () and methods.TILUI.config_ignores
  assert user_plugins.HingeBPR.config_sections is None
  for name, cls, want in (("mine_unsaid", Mine, ["baselines.drop_rate", "til.gen_lr"]),
                          ("my_bpr", MyBPR, ["baselines.drop_rate", "til.gen_lr"]),
                          ("my_til", MyTIL, ["til.gen_lr"]), ("my_ui", MyUI, ["til.gen_lr"])):
    if name == "my_ui":  # and the clustering's fields count for it
      til = {**til, **mi}
      want = sorted(want + list(mi))
    methods.register(name, cls)
    try:
      assert config_check.identity_diff(ident(name), ident(name, **til, **base)) == want, name
    finally:
      config_check.METHODS._classes.pop(name)
