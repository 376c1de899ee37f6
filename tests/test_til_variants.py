"""The options of the importance study (issue #10): the meta split keeps test and the selection
part of valid out of training, the BPR control trains on exactly the meta part, eta once per
epoch is exact at the epoch start, and the SGD inner optimizer is plain SGD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import synthetic_mf
from til_jax import optim
from til_jax.til import states
from til_jax.train import loop


def pairs(csr):
  u, i = csr.to_pairs()
  return set(zip(u.tolist(), i.tolist()))


def config():
  c = synthetic_mf.get_config()
  c.train.batch_size = 256
  return c


def test_valid_outer_batch_reads_only_the_meta_part_of_valid():
  c = config()
  c.method = "til_ui"
  c.til.outer_batch = "valid"
  full = loop.build(synthetic_mf.get_config())[0]
  dataset, _, method, _ = loop.build(c)
  meta, selection = pairs(dataset.extras["meta"]), pairs(dataset.valid)
  assert meta and selection and not meta & selection
  assert meta | selection == pairs(full.valid)           # valid split in two, nothing lost
  assert pairs(dataset.test) == pairs(full.test)         # test untouched
  assert pairs(dataset.train) == pairs(full.train)       # the meta part does not join training
  b = method.epoch_batches(0, np.random.default_rng(0))
  outer = set(zip(b["outer"]["users"].ravel().tolist(), b["outer"]["pos"].ravel().tolist()))
  assert outer <= meta                                   # never test, never the selection part
  inner = set(zip(b["users"][b["mask"]].tolist(), b["pos"][b["mask"]].tolist()))
  assert inner <= pairs(full.train)


def test_bpr_control_trains_on_train_plus_the_same_meta_part():
  c = config()
  c.train.meta_to_train = True
  til = config()
  til.method, til.til.outer_batch = "til_ui", "valid"
  control, til_ds = loop.build(c)[0], loop.build(til)[0]
  assert pairs(control.train) == pairs(til_ds.train) | pairs(til_ds.extras["meta"])
  assert pairs(control.valid) == pairs(til_ds.valid)     # model selection on the same part
  assert not pairs(control.train) & pairs(control.test)


def test_eta_once_per_epoch_is_exact_at_the_epoch_start():
  """eta_every 0: the update recomputes eta_u exactly at the first step of every epoch, from the
  parameters of that moment, and holds it for the rest of the epoch."""
  c = config()
  c.method = "til_ui"
  assert c.til.eta_every == 0
  dataset, model, method, consts = loop.build(c)
  state = loop.init_state(c, model, method)
  users, items = dataset.train.to_pairs()
  step = jax.jit(lambda s, b: method.update(s, b, consts))
  batches = method.epoch_batches(0, np.random.default_rng(0))
  n = batches["users"].shape[0]
  assert n > 2 and method.core.settings.steps_per_epoch == n
  for _epoch in range(2):
    item_repr = np.asarray(model.represent(state.params["model"], consts["graph"])[1])
    want = np.asarray(states.user_interest(jnp.asarray(item_repr), jnp.asarray(users),
                                           jnp.asarray(items), dataset.n_users))
    u0 = int(users[0])
    np.testing.assert_allclose(want[u0], item_repr[items[users == u0]].mean(0), rtol=1e-5)
    for t in range(n):
      state, _ = step(state, jax.tree.map(lambda v, t=t: v[t], batches))
      np.testing.assert_allclose(np.asarray(state.aux["eta"]), want, rtol=1e-6)  # held all epoch
    assert not np.allclose(np.asarray(model.represent(state.params["model"], {})[1]), item_repr)


def test_sgd_inner_optimizer_is_plain_sgd():
  c = config()
  c.optim.name, c.optim.lr = "sgd", 3.0
  tx = optim.model_optimizer(c.optim)
  p = {"a": jnp.asarray([1.0, -2.0])}
  g = {"a": jnp.asarray([0.5, 0.25])}
  upd, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(np.asarray(optax.apply_updates(p, upd)["a"]), [-0.5, -2.75])
  assert jax.tree.leaves(optim.model_optimizer(config().optim).init(p))  # adam has moments


def test_adam_epsilon_is_configurable():
  c = config()
  c.optim.lr, c.optim.eps = 1.0, 1.0
  tx = optim.model_optimizer(c.optim)
  p = {"a": jnp.asarray([0.0])}
  upd, _ = tx.update({"a": jnp.asarray([1.0])}, tx.init(p), p)
  # first Adam step: m_hat = g, v_hat = g^2 -> -lr * g / (|g| + eps) = -1 / 2
  np.testing.assert_allclose(np.asarray(upd["a"]), [-0.5], rtol=1e-4)  # (eps 1e-8: -1)
