"""The public TIL API (`til_jax.til.api.TIL`): the README's example run as written, and an
outside loop of only `init` + `update` against what the CLI computes."""

import os
import re

import jax
import numpy as np

from configs import synthetic_mf
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.data.synthetic import make_synthetic
from til_jax.state import make_consts
from til_jax.til.api import TIL
from til_jax.til.bilevel import steps_per_epoch as count_steps
from til_jax.train import loop
from til_jax.train.methods import CLUSTER_KEY_SALT

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def readme_example() -> str:
  text = open(README).read()
  section = text[text.index("## TIL in your own JAX pipeline"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def epoch(train, sampler, seed: int, e: int, batch_size: int) -> dict:
  """An epoch as any pipeline would draw it: inner batches and a fresh outer batch each step."""
  rng = np.random.default_rng([seed, e])
  b = epoch_triplets(train, sampler, rng, batch_size)
  b["outer"] = epoch_triplets(train, sampler, rng, batch_size)
  return b


def test_readme_example_trains_a_model_defined_outside_the_library():
  ds = make_synthetic(n_users=120, n_items=80, seed=1)
  train_users, train_items = ds.train.to_pairs()
  sampler = UniformNegativeSampler(ds.train)
  n = count_steps(ds.train.nnz, 256)
  ep = epoch(ds.train, sampler, 0, 0, 256)
  scope = {"n_users": ds.n_users, "n_items": ds.n_items, "train_users": train_users,
           "train_items": train_items, "steps_per_epoch": n,
           "batch": jax.tree.map(lambda v: v[0], ep)}
  exec(readme_example(), scope)  # noqa: S102 - the README's code is the test subject
  state, update, consts = scope["state"], scope["update"], scope["consts"]
  assert "bias" in state.params["model"]  # the user's own parameters, not a library backbone
  first = float(scope["metrics"]["loss"])
  assert np.isnan(float(scope["metrics"]["w_mean"]))  # pre-training: plain BPR, no weights
  gen0 = np.asarray(state.gen_params["params"]["W1"]["kernel"]).copy()
  for e in range(1, 15):
    ep = epoch(ds.train, sampler, 0, e, 256)
    for s in range(n):
      state, metrics = update(state, jax.tree.map(lambda v, s=s: v[s], ep), consts)
  assert int(state.step) == 1 + 14 * n                 # the README took the first step
  assert bool(state.aux["ready"])                      # K-means ran, nobody asked for it
  assert float(metrics["loss"]) < 0.7 * first
  assert float(metrics["w_std"]) > 1e-4                # the weights differ between triplets
  assert not np.allclose(np.asarray(state.gen_params["params"]["W1"]["kernel"]), gen0)


def test_outside_loop_of_init_and_update_equals_the_cli(tmp_path):
  """TIL-MI (one pre-training epoch, K-means, eta per epoch, membership refreshes): a loop that
  knows only init and update reaches the state train_and_evaluate checkpoints."""
  c = synthetic_mf.get_config()
  c.method, c.train.epochs, c.eval.every, c.checkpoint.every = "til_mi", 3, 3, 1
  c.til.pretrain_epochs, c.til.refresh_every = 1, 3
  work = str(tmp_path / "w")
  loop.train_and_evaluate(c, work)
  _, model, _, cli_state, _ = loop.restore(c, work, which="latest")

  ds = loop.build(c)[0]
  til = TIL.from_config(c, model, steps_per_epoch=count_steps(ds.train.nnz, c.train.batch_size))
  seed_key = jax.random.key(c.seed)
  k_model, k_til = jax.random.split(seed_key)
  state = til.init(k_til, {"model": model.init(k_model)},
                   cluster_key=jax.random.fold_in(seed_key, CLUSTER_KEY_SALT))
  consts = make_consts(*ds.train.to_pairs())
  update = jax.jit(til.update)
  sampler = UniformNegativeSampler(ds.train)
  for e in range(3):
    ep = epoch(ds.train, sampler, c.seed, e, c.train.batch_size)
    for s in range(ep["users"].shape[0]):
      state, _ = update(state, jax.tree.map(lambda v, s=s: v[s], ep), consts)
  assert int(state.step) == int(cli_state.step)
  for a, b in zip(jax.tree.leaves((state.params, state.gen_params, state.aux)),
                  jax.tree.leaves((cli_state.params, cli_state.gen_params, cli_state.aux))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
  assert bool(state.aux["ready"])


def test_til_ui_computes_the_same_whatever_the_clustering_fields():
  """The fields TIL-UI is not judged on (methods.CLUSTER_FIELDS: a finished TIL-UI cell stays
  valid when they change) do not change a step of it: every one changed, the same state."""
  from til_jax.train.methods import CLUSTER_FIELDS
  c = synthetic_mf.get_config()
  c.method = "til_ui"
  ds, model = loop.build(c)[:2]
  n = count_steps(ds.train.nnz, c.train.batch_size)
  changed = {"alpha": 5.0, "gamma": 0.1, "tau": 2.0, "n_clusters": 3, "pretrain_epochs": 2,
             "refresh_every": 1, "kmeans_iters": 2, "kl_reduction": "sum", "kl_items": "batch"}
  assert {f"til.{k}" for k in changed} == set(CLUSTER_FIELDS)
  other = c.copy_and_resolve_references()
  for k, v in changed.items():
    assert other.til[k] != v, k
    other.til[k] = v
  ep = epoch(ds.train, UniformNegativeSampler(ds.train), 0, 0, c.train.batch_size)
  consts = make_consts(*ds.train.to_pairs())
  states = []
  for cfg in (c, other):
    til = TIL.from_config(cfg, model, steps_per_epoch=n)
    k_model, k_til = jax.random.split(jax.random.key(0))
    state = til.init(k_til, {"model": model.init(k_model)}, cluster_key=jax.random.key(1))
    update = jax.jit(til.update)
    for s in range(3):
      state, _ = update(state, jax.tree.map(lambda v, s=s: v[s], ep), consts)
    states.append(state)
  assert int(states[0].step) == 3
  for a, b in zip(jax.tree.leaves((states[0].params, states[0].gen_params)),
                  jax.tree.leaves((states[1].params, states[1].gen_params))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
