"""The README's "TIL in your own JAX pipeline" example, run exactly as written."""

import os
import re

import numpy as np

from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.data.synthetic import make_synthetic

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def readme_example() -> str:
  text = open(README).read()
  section = text[text.index("## TIL in your own JAX pipeline"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_trains_a_model_defined_outside_the_library():
  ds = make_synthetic(n_users=120, n_items=80, seed=1)
  train_users, train_items = ds.train.to_pairs()
  rng = np.random.default_rng(0)
  sampler = UniformNegativeSampler(ds.train)
  ep = epoch_triplets(ds.train, sampler, rng, 256)
  outer = epoch_triplets(ds.train, sampler, rng, 256)
  batch = {**{k: v[0] for k, v in ep.items()}, **{"o_" + k: v[0] for k, v in outer.items()}}
  scope = {"n_users": ds.n_users, "n_items": ds.n_items, "train_users": train_users,
           "train_items": train_items, "batch": batch}
  exec(readme_example(), scope)  # noqa: S102 - the README's code is the test subject
  state, step, consts = scope["state"], scope["step"], scope["consts"]
  assert "bias" in state.params["model"]  # the user's own parameters, not a library backbone
  first = float(scope["metrics"]["loss"])
  for e in range(15):
    ep = epoch_triplets(ds.train, sampler, np.random.default_rng(e + 1), 256)
    outer = epoch_triplets(ds.train, sampler, np.random.default_rng(e + 100), 256)
    for s in range(ep["users"].shape[0]):
      b = {**{k: v[s] for k, v in ep.items()}, **{"o_" + k: v[s] for k, v in outer.items()}}
      state, metrics = step(state, b, consts)
  assert float(metrics["loss"]) < 0.7 * first
  assert abs(float(metrics["w_mean"]) - 1.0) < 1e-4  # weight_norm="mean" keeps the batch mean at 1
  assert float(metrics["w_std"]) > 0
  assert int(state.step) > 15
