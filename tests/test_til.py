"""TIL's formulas against NumPy, finite differences and a closed form (paper Eq. 3-15)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from til_jax.models import MF
from til_jax.til import api, bilevel, clustering, states
from til_jax.til.weight_generator import postprocess

N_USERS, N_ITEMS, DIM, B = 5, 7, 4, 6


def make_settings(interest="uni", **overrides) -> bilevel.TILSettings:
  """The default config's TIL settings (configs/default.py), with `overrides`."""
  return bilevel.TILSettings.from_config(default.get_config(), interest, steps_per_epoch=1,
                                         **overrides)


def fixture(seed=0, interest="uni", lr_look=0.5, first_order=False, weight_norm="none"):
  rng = np.random.default_rng(seed)
  model = MF(n_users=N_USERS, n_items=N_ITEMS, dim=DIM)
  params = {"model": {"user": jnp.asarray(rng.normal(size=(N_USERS, DIM))),
                      "item": jnp.asarray(rng.normal(size=(N_ITEMS, DIM)))}}
  batch = {"users": jnp.asarray(rng.integers(0, N_USERS, B)),
           "pos": jnp.asarray(rng.integers(0, N_ITEMS, B)),
           "neg": jnp.asarray(rng.integers(0, N_ITEMS, B)),
           "mask": jnp.ones(B, bool)}
  batch["outer"] = {"users": jnp.asarray(rng.integers(0, N_USERS, B)),
                    "pos": jnp.asarray(rng.integers(0, N_ITEMS, B)),
                    "neg": jnp.asarray(rng.integers(0, N_ITEMS, B)), "mask": jnp.ones(B, bool)}
  settings = make_settings(interest=interest, lr_look=lr_look, l2=0.0, first_order=first_order,
                           weight_norm=weight_norm)
  ctx = {"graph": {}, "eta": jnp.asarray(rng.normal(size=(N_USERS, DIM)))}
  gen_params = jax.tree.map(lambda x: jnp.asarray(x, float),
                            bilevel.init_generator(jax.random.key(seed), model))
  return model, params, batch, settings, ctx, gen_params


def numpy_bpr_grads(U, I, users, pos, neg):
  """Per-triplet gradients of BPR_t = -log sigmoid(p_u.(q_i - q_j)) w.r.t. (U, I): lists."""
  out = []
  for u, i, j in zip(users, pos, neg):
    x = U[u] @ (I[i] - I[j])
    c = -1.0 / (1.0 + np.exp(x))  # d/dx of -log sigmoid(x)
    gU, gI = np.zeros_like(U), np.zeros_like(I)
    gU[u] += c * (I[i] - I[j])
    gI[i] += c * U[u]
    gI[j] -= c * U[u]
    out.append((gU, gI))
  return out


def test_uni_and_multi_interest_states_match_numpy():
  rng = np.random.default_rng(1)
  p, qi, qj, eta, mi, mj = (rng.normal(size=(3, 4)) for _ in range(6))
  s = np.asarray(states.uni_interest_state(p, qi, qj, eta))
  np.testing.assert_allclose(s, np.concatenate([qi * p + qi * eta, qj * p + qj * eta], 1), rtol=1e-6)
  s = np.asarray(states.multi_interest_state(p, qi, qj, eta, mi, mj, 0.3))
  want = np.concatenate([qi * p + qi * eta + 0.3 * (mi * p + mi * eta),
                         qj * p + qj * eta + 0.3 * (mj * p + mj * eta)], 1)
  np.testing.assert_allclose(s, want, rtol=1e-6)


def test_user_interest_is_exact_mean_of_training_items():
  rng = np.random.default_rng(2)
  items = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
  pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 4, 15), rng.integers(0, N_ITEMS, 15))})
  tu = np.array([p[0] for p in pairs])
  ti = np.array([p[1] for p in pairs])
  eta = np.asarray(states.user_interest(jnp.asarray(items), jnp.asarray(tu), jnp.asarray(ti), N_USERS))
  for u in range(N_USERS):
    want = items[ti[tu == u]].mean(0) if (tu == u).any() else np.zeros(DIM)  # user 4: no items
    np.testing.assert_allclose(eta[u], want, rtol=1e-5, atol=1e-6)


def test_weight_generator_is_eq3():
  model, params, batch, settings, ctx, gen_params = fixture()
  s = jnp.asarray(np.random.default_rng(3).normal(size=(B, 2 * DIM)))
  w = np.asarray(bilevel.triplet_weights(model, gen_params, s, batch["mask"], settings))
  g = jax.tree.map(np.asarray, gen_params)["params"]
  z = np.maximum(np.asarray(s) @ g["W1"]["kernel"] + g["W1"]["bias"], 0)
  want = 1 / (1 + np.exp(-(z @ g["W2"]["kernel"][:, 0] + g["W2"]["bias"][0])))
  np.testing.assert_allclose(w, want, rtol=1e-6)  # float32: a few ulps


def test_hypergradient_matches_closed_form_and_finite_differences():
  """dJ_out/dw_t = -lr/B <grad J_out(Theta~), grad BPR_t(Theta)> for MF + SGD lookahead, and the
  Lambda-gradient equals central finite differences (float64)."""
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture()
    s = bilevel.triplet_state(model, params, ctx, batch, settings)

    # 1. w.r.t. the weights themselves, against the closed form in NumPy.
    def j_of_w(w):
      return bilevel.outer_loss(bilevel.lookahead(params, w, model, ctx, batch, settings), model,
                                ctx, batch["outer"])
    w0 = bilevel.triplet_weights(model, gen_params, s, batch["mask"], settings)
    g_w = np.asarray(jax.grad(j_of_w)(w0))
    U, I = np.asarray(params["model"]["user"]), np.asarray(params["model"]["item"])
    per = numpy_bpr_grads(U, I, *(np.asarray(batch[k]) for k in ("users", "pos", "neg")))
    # Theta~ in NumPy, then grad J_out(Theta~) (outer mean BPR).
    Ut = U - settings.lr_look * sum(np.asarray(w0)[t] * per[t][0] for t in range(B)) / B
    It = I - settings.lr_look * sum(np.asarray(w0)[t] * per[t][1] for t in range(B)) / B
    outer = numpy_bpr_grads(Ut, It, *(np.asarray(batch["outer"][k]) for k in ("users", "pos", "neg")))
    gU = sum(o[0] for o in outer) / B
    gI = sum(o[1] for o in outer) / B
    closed = np.array([-settings.lr_look / B * (np.sum(gU * per[t][0]) + np.sum(gI * per[t][1]))
                       for t in range(B)])
    np.testing.assert_allclose(g_w, closed, rtol=1e-8, atol=1e-12)

    # 2. w.r.t. Lambda, against central finite differences.
    _, g_gen = bilevel.hypergradient(gen_params, params, s, model, ctx, batch, batch["outer"], settings)
    flat, unravel = jax.flatten_util.ravel_pytree(gen_params)
    g_flat = np.asarray(jax.flatten_util.ravel_pytree(g_gen)[0])

    def f(vec):
      return float(bilevel.hypergradient(unravel(vec), params, s, model, ctx, batch, batch["outer"],
                                         settings)[0])
    eps = 1e-6
    idx = np.random.default_rng(0).choice(flat.size, 12, replace=False)
    for k in idx:
      e = np.zeros(flat.size)
      e[k] = eps
      fd = (f(flat + e) - f(flat - e)) / (2 * eps)
      np.testing.assert_allclose(g_flat[k], fd, rtol=1e-5, atol=1e-10)
    assert np.abs(g_flat).max() > 0


@pytest.mark.parametrize("interest,first_order,norm", [("uni", False, "none"), ("multi", False, "mean"),
                                                       ("uni", True, "none"), ("multi", False, "softmax")])
def test_jvp_hypergradient_equals_autodiff(interest, first_order, norm):
  """The forward-mode route gives the reverse-over-reverse J_out and hypergradient exactly
  (duplicate ids inside and across the inner and outer batch, L2 on, MI's KL shift)."""
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture(first_order=first_order, weight_norm=norm)
    settings = bilevel.TILSettings(**{**settings.__dict__, "interest": interest, "l2": 0.1,
                                      "gamma": 0.3, "lr_look": 0.7})
    if interest == "multi":
      rng = np.random.default_rng(7)
      params = {**params, "centres": jnp.asarray(rng.normal(size=(3, DIM)))}
      ctx = {**ctx, "membership": jnp.asarray(rng.integers(0, 3, N_ITEMS)),
             "target": jax.nn.softmax(jnp.asarray(rng.normal(size=(N_ITEMS, 3))), -1)}
    s = bilevel.triplet_state(model, params, ctx, batch, settings)
    settings = bilevel.TILSettings(**{**settings.__dict__, "hypergrad": "jvp"})
    dense = bilevel.TILSettings(**{**settings.__dict__, "hypergrad": "autodiff"})
    outer = batch["outer"]
    v_local, g_local = bilevel.hypergradient(gen_params, params, s, model, ctx, batch, outer, settings)
    v_dense, g_dense = bilevel.hypergradient(gen_params, params, s, model, ctx, batch, outer, dense)
    if not first_order:  # (first order: autodiff reports the linearised value)
      np.testing.assert_allclose(float(v_local), float(v_dense), rtol=1e-12)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(g_local)[0],
                               jax.flatten_util.ravel_pytree(g_dense)[0], rtol=1e-9, atol=1e-14)
    assert float(jnp.abs(jax.flatten_util.ravel_pytree(g_dense)[0]).max()) > 0
    # And one whole step (real update included) is the same either way.
    tx = optax.adam(1e-2)
    outs = [bilevel.til_update(params, tx.init(params), gen_params, tx.init(gen_params), model, ctx,
                               batch, batch["outer"], tx, tx, st) for st in (settings, dense)]
    for a, b in zip(jax.tree.leaves(outs[0][:3]), jax.tree.leaves(outs[1][:3])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)  # Adam on ~0


def test_first_order_drops_a_term():
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture(lr_look=2.0)
    s = bilevel.triplet_state(model, params, ctx, batch, settings)
    _, exact = bilevel.hypergradient(gen_params, params, s, model, ctx, batch, batch["outer"], settings)
    fo_settings = bilevel.TILSettings(**{**settings.__dict__, "first_order": True})
    _, approx = bilevel.hypergradient(gen_params, params, s, model, ctx, batch, batch["outer"], fo_settings)
    e = jax.flatten_util.ravel_pytree(exact)[0]
    a = jax.flatten_util.ravel_pytree(approx)[0]
    assert float(jnp.linalg.norm(e - a)) > 1e-6 * float(jnp.linalg.norm(e))
    # ... but it is the first-order term: as lr_look -> 0 both agree to O(lr^2) relative to O(lr).
    small = bilevel.TILSettings(**{**settings.__dict__, "lr_look": 1e-4})
    small_fo = bilevel.TILSettings(**{**small.__dict__, "first_order": True})
    e2 = jax.flatten_util.ravel_pytree(bilevel.hypergradient(gen_params, params, s, model, ctx,
                                                             batch, batch["outer"], small)[1])[0]
    a2 = jax.flatten_util.ravel_pytree(bilevel.hypergradient(gen_params, params, s, model, ctx,
                                                             batch, batch["outer"], small_fo)[1])[0]
    assert float(jnp.linalg.norm(e2 - a2)) < 1e-3 * float(jnp.linalg.norm(e2))


@pytest.mark.parametrize("how", ["mean", "softmax"])
def test_normalised_weights_keep_batch_mean_one(how):
  rng = np.random.default_rng(4)
  logits = jnp.asarray(rng.normal(size=10))
  mask = jnp.asarray([1] * 7 + [0] * 3)
  w = postprocess(jax.nn.sigmoid(logits), logits, mask, how)
  assert abs(float(jnp.sum(w * mask) / 7) - 1.0) < 1e-6
  if how == "mean":  # relative importance unchanged
    raw = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(np.asarray(w[:7] / w[0]), np.asarray(raw[:7] / raw[0]), rtol=1e-6)


def test_clip_postprocess():
  w = postprocess(jnp.asarray([-1.0, 2.0, 9.0]), None, None, "clip", clip_max=5.0)
  np.testing.assert_allclose(np.asarray(w), [0.0, 2.0, 5.0])


def test_soft_assignment_target_and_kl_match_numpy():
  rng = np.random.default_rng(5)
  x, c = rng.normal(size=(9, 3)), rng.normal(size=(4, 3))
  tau = 2.0
  d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
  q = (1 + d2 / tau) ** (-(tau + 1) / 2)
  q /= q.sum(1, keepdims=True)
  t = q ** 2 / q.sum(0)
  t /= t.sum(1, keepdims=True)
  kl = (t * np.log(t / q)).sum()
  with jax.enable_x64(True):
    qj = np.asarray(clustering.soft_assignment(jnp.asarray(x), jnp.asarray(c), tau))
    np.testing.assert_allclose(qj, q, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(clustering.target_distribution(jnp.asarray(q))), t, rtol=1e-9)
    np.testing.assert_allclose(float(clustering.kl_loss(jnp.asarray(t), jnp.asarray(q))), kl, rtol=1e-9)
    np.testing.assert_array_equal(np.asarray(clustering.hard_membership(jnp.asarray(x), jnp.asarray(c))),
                                  q.argmax(1))


def test_cluster_kl_from_log_q_matches_numpy_and_finite_differences():
  """clustering.cluster_kl (what TIL-MI's step differentiates, from log Q): Eq. 9 against NumPy
  in float64, its gradient in x and the centres against central differences, the batch
  estimate (valid rows, times n_items) against the sampled kl_loss, and finite where Q
  underflows (log(softmax + 1e-30) saturates there)."""
  rng = np.random.default_rng(5)
  x, c, tau = rng.normal(size=(9, 3)), rng.normal(size=(4, 3)), 2.0
  d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)

  def numpy_kl(x, c, t):
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    q = (1 + d2 / tau) ** (-(tau + 1) / 2)
    q /= q.sum(1, keepdims=True)
    return (t * np.log(t / q)).sum()
  q = (1 + d2 / tau) ** (-(tau + 1) / 2)
  q /= q.sum(1, keepdims=True)
  t = q ** 2 / q.sum(0)
  t /= t.sum(1, keepdims=True)
  t = 0.7 * t + 0.3 * np.roll(t, 1, axis=1)  # a target that is not Q's own, so the gradient is not 0
  with jax.enable_x64(True):
    xj, cj, tj = jnp.asarray(x), jnp.asarray(c), jnp.asarray(t)
    np.testing.assert_allclose(float(clustering.cluster_kl(tj, xj, cj, tau)), numpy_kl(x, c, t),
                               rtol=1e-10)
    np.testing.assert_allclose(float(clustering.cluster_kl(tj, xj, cj, tau, "mean")),
                               numpy_kl(x, c, t) / 9, rtol=1e-10)
    gx, gc = jax.grad(lambda a, b: clustering.cluster_kl(tj, a, b, tau), argnums=(0, 1))(xj, cj)
    eps = 1e-6
    for arr, g, which in ((x, gx, 0), (c, gc, 1)):
      for idx in ((0, 0), (3, 2), (arr.shape[0] - 1, 1)):
        up, dn = arr.copy(), arr.copy()
        up[idx] += eps
        dn[idx] -= eps
        args = lambda a, which=which: (a, c, t) if which == 0 else (x, a, t)
        fd = (numpy_kl(*args(up)) - numpy_kl(*args(dn))) / (2 * eps)
        np.testing.assert_allclose(float(g[idx]), fd, rtol=1e-6, atol=1e-9)
    valid = np.asarray([True, False, True, True, False, True, True, True, False])
    rows = (t * np.log(t / q)).sum(1)
    np.testing.assert_allclose(
        float(clustering.cluster_kl(tj, xj, cj, tau, "sum", jnp.asarray(valid), 100)),
        rows[valid].mean() * 100, rtol=1e-10)
  # Where Q underflows (Student-t with tau 100, an item 1e3 from a centre: Q ~ exp(-233)), log Q
  # from log_softmax is exact; log(Q + 1e-30) stops at -69 and gets the loss wrong.
  x = jnp.asarray([[0.0, 0.0], [1e3, 0.0]], jnp.float32)
  centres = jnp.asarray([[0.0, 0.0], [1e3, 1.0]], jnp.float32)
  t = jnp.full((2, 2), 0.5, jnp.float32)
  xn, cn = np.asarray(x, np.float64), np.asarray(centres, np.float64)
  logits = -(100 + 1) / 2 * np.log1p(((xn[:, None] - cn[None]) ** 2).sum(-1) / 100)
  log_q = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
      - logits.max(1, keepdims=True)
  want = (0.5 * (np.log(0.5) - log_q)).sum()
  got = float(clustering.cluster_kl(t, x, centres, 100.0))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(float(clustering.kl_loss(t, clustering.soft_assignment(x, centres, 100.0))) - want) > 10
  g = jax.grad(lambda c: clustering.cluster_kl(t, x, c, 100.0))(centres)
  assert np.all(np.isfinite(np.asarray(g)))


def test_kl_decreases_on_fixed_embeddings():
  x = jax.random.normal(jax.random.key(0), (200, 8))
  centres = clustering.kmeans(jax.random.key(1), x, 5, iters=3)
  target = clustering.target_distribution(clustering.soft_assignment(x, centres))
  loss = lambda c: clustering.kl_loss(target, clustering.soft_assignment(x, c))
  tx = optax.adam(1e-2)
  st = tx.init(centres)
  values = []
  for _ in range(50):
    v, g = jax.value_and_grad(loss)(centres)
    u, st = tx.update(g, st)
    centres = optax.apply_updates(centres, u)
    values.append(float(v))
  assert values[-1] < values[0] * 0.9


def test_kmeans_recovers_separated_clusters():
  rng = np.random.default_rng(6)
  means = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
  x = np.concatenate([m + rng.normal(size=(30, 2)) for m in means]).astype(np.float32)
  c = np.asarray(clustering.kmeans(jax.random.key(0), jnp.asarray(x), 3))
  assert np.abs(np.sort(c[:, 0] + 100 * c[:, 1]) - np.sort(means[:, 0] + 100 * means[:, 1])).max() < 50
  a = np.asarray(clustering.hard_membership(jnp.asarray(x), jnp.asarray(c)))
  for g in range(3):
    assert len(set(a[g * 30:(g + 1) * 30])) == 1


def test_til_update_changes_generator_and_model():
  model, params, batch, settings, ctx, gen_params = fixture()
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  ctx = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), ctx)
  gen_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), gen_params)
  tx, gtx = optax.adam(1e-2), optax.adam(1e-2)
  out = bilevel.til_update(params, tx.init(params), gen_params, gtx.init(gen_params), model, ctx,
                           batch, batch["outer"], tx, gtx, settings)
  new_params, _, new_gen, _, metrics = out
  assert not np.allclose(np.asarray(new_params["model"]["user"]), np.asarray(params["model"]["user"]))
  old_b, new_b = gen_params["params"]["W2"]["bias"], new_gen["params"]["W2"]["bias"]
  assert not np.allclose(np.asarray(new_b), np.asarray(old_b))
  # The reported weights are those of the updated generator (Eq. 3 on the same state).
  s = bilevel.triplet_state(model, params, ctx, batch, settings)
  w_new = np.asarray(bilevel.triplet_weights(model, new_gen, s, batch["mask"], settings))
  np.testing.assert_allclose(float(metrics["w_mean"]), w_new.mean(), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["w_std"]), w_new.std(), rtol=1e-4)
  assert np.isfinite(float(metrics["loss"]))


def _tiny_til(tmp_path, method, epochs, **kw):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  data = write_split(str(tmp_path / "data"))
  return tiny_config(data, method, epochs=epochs, **kw)


@pytest.mark.parametrize("method_name", ["til_mi", "til_mik"])
def test_schedule_sets_every_cluster_field_and_nothing_else(tmp_path, method_name):
  """The schedule's conds carry the cluster fields alone (api._where, not the whole state): the
  first bilevel step gives init_clusters' fields (TIL-MI's centres in params, TIL-MIK's in
  aux), a refresh step recluster's (TIL-MIK: Lloyd-moved centres), any other step none."""
  from til_jax.train import loop
  cfg = _tiny_til(tmp_path, method_name, epochs=2,
                  **{"til.refresh_every": 2, "til.pretrain_epochs": 1, "til.kmeans_iters": 2})
  _, model, method, consts = loop.build(cfg)
  core = method.core
  scheduled = jax.jit(lambda st: core._scheduled(st, consts))
  at = lambda st, k: st.replace(step=jnp.asarray(k, st.step.dtype))
  p = core.settings.pretrain_steps
  odd = p + 1 if (p + 1) % 2 else p + 2          # not a refresh step
  state = at(loop.init_state(cfg, model, method), odd)
  state = state.replace(params={**state.params, "model": jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape), state.params["model"])})

  leaves = lambda st: [np.asarray(x) for x in jax.tree.leaves(api._cluster_fields(st))]

  def check(before, want):
    got = scheduled(before)
    np.testing.assert_array_equal(np.asarray(got.params["model"]["item"]),
                                  np.asarray(before.params["model"]["item"]))
    for a, b in zip(leaves(got), leaves(want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    return got

  first = check(state, core.init_clusters(state, consts))
  assert bool(first.aux["ready"])
  moved = first.replace(params={**first.params, "model": jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(jax.random.key(2), x.shape), first.params["model"])})
  check(moved, moved)                                          # odd: nothing due
  refresh = at(moved, odd + 1)
  want = core.recluster(refresh, consts)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(want), leaves(refresh)))
  check(refresh, want)


def test_memberships_refresh_on_schedule_and_resume_restores_clusters(tmp_path):
  """TIL's update owns the schedule: plain BPR for the pre-training epoch (its batches carry no
  outer batch, and the loop's step for them is the pre-training branch), K-means at the first
  bilevel step, then memberships and T refreshed at global steps that are multiples of
  refresh_every, nothing asked of the caller."""
  from til_jax.train import loop
  cfg = _tiny_til(tmp_path, "til_mi", epochs=4, **{"til.refresh_every": 3, "til.pretrain_epochs": 1})
  dataset, model, method, consts = loop.build(cfg)
  state = loop.init_state(cfg, model, method)
  step = jax.jit(lambda s, b: method.update(s, b, consts))
  pre = method.epoch_batches(0, np.random.default_rng(0))
  assert "outer" not in pre and "outer" in method.epoch_batches(1, np.random.default_rng(0))
  pre_step = jax.jit(lambda s, b: method.epoch_update("pretrain")(s, b, consts))  # the loop's
  n = pre["users"].shape[0]
  assert method.core.settings.pretrain_steps == n
  for t in range(n):
    state, m = pre_step(state, jax.tree.map(lambda v, t=t: v[t], pre))
    assert np.isnan(float(m["w_mean"])) and not bool(state.aux["ready"])
  expected = method.core.init_clusters(state, consts)  # what the first bilevel step must do
  batches = method.epoch_batches(1, np.random.default_rng(0))
  seen = []
  for t in range(batches["users"].shape[0]):
    before = np.asarray(state.aux["target"]).copy()
    state, m = step(state, jax.tree.map(lambda v, t=t: v[t], batches))
    assert np.isfinite(float(m["w_mean"]))
    if t == 0:
      assert bool(state.aux["ready"])
      np.testing.assert_array_equal(np.asarray(state.aux["membership"]),
                                    np.asarray(expected.aux["membership"]))
      np.testing.assert_allclose(np.asarray(state.aux["target"]),
                                 np.asarray(expected.aux["target"]), rtol=1e-6)
    else:
      seen.append(not np.array_equal(before, np.asarray(state.aux["target"])))
  # T changes only at steps whose global index is a multiple of refresh_every.
  assert seen == [((n + t) % 3 == 0) for t in range(1, len(seen) + 1)]
  assert any(seen)
  # A run resumed from a checkpoint restores centres, memberships and T.
  from til_jax.train.checkpoint import Checkpointer, abstract_like
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(1, state, {"epoch": 1})
  restored, _ = ck.restore_latest(abstract_like(loop.init_state(cfg, model, method)))
  ck.close()
  for a, b in ((restored.params["centres"], state.params["centres"]),
               (restored.aux["membership"], state.aux["membership"]),
               (restored.aux["target"], state.aux["target"]), (restored.aux["eta"], state.aux["eta"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_weights_do_not_collapse_on_real_data(tmp_path):
  """Paper mode (sigmoid, mean, no normalisation) on MovieLens-100K: the bilevel design keeps the
  mean weight away from zero (a naive joint minimisation would drive it to 0, paper 4.4)."""
  import os

  from tests.conftest import DATA_DIR
  if not os.path.exists(os.path.join(DATA_DIR, "ml-100k")):
    pytest.skip("ml-100k not available (set TIL_DATA_DIR)")
  from configs import ml100k_mf
  from til_jax.train import loop
  cfg = ml100k_mf.get_config()
  cfg.method = "til_ui"
  cfg.data.root = DATA_DIR
  cfg.data.cache_dir = str(tmp_path / "cache")
  cfg.train.epochs = 8          # 8 epochs x 44 steps of 1024 = 350 steps
  cfg.eval.every = 8
  res = loop.train_and_evaluate(cfg, str(tmp_path / "w"))
  import json
  lines = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
  w = [x["w_mean"] for x in lines]
  assert min(w) > 0.3, w
  assert res["valid"]["recall@20"] > 0.05


def test_kl_reduction_mean_is_sum_over_items():
  rng = np.random.default_rng(11)
  t = jax.nn.softmax(jnp.asarray(rng.normal(size=(9, 4))), -1)
  q = jax.nn.softmax(jnp.asarray(rng.normal(size=(9, 4))), -1)
  total = float(np.sum(np.asarray(t) * (np.log(np.asarray(t)) - np.log(np.asarray(q)))))
  assert abs(float(clustering.kl_loss(t, q, "sum")) - total) < 1e-5
  assert abs(float(clustering.kl_loss(t, q, "mean")) - total / 9) < 1e-6


def test_paper_mode_overrides_the_variant_fields():
  from configs import default
  from til_jax.til import modes
  c = default.get_config()
  c.til.weight_norm, c.til.activation, c.til.kl_reduction = "mean", "softplus", "mean"
  assert modes.resolve(c) is c  # mode "default": the fields as set
  c.til.mode = "paper"
  r = modes.resolve(c)
  assert (r.til.weight_norm, r.til.activation, r.til.kl_reduction, r.til.outer_batch,
          r.optim.name) == ("none", "sigmoid", "sum", "fresh", "adam")
  assert c.til.weight_norm == "mean"  # the caller's config is not changed
  c.optim.name = "sgd"                # the SGD variant: paper TIL with an SGD model optimizer
  assert modes.resolve(c).optim.name == "sgd"
  c.til.mode = "authors"
  r = modes.resolve(c)
  assert (r.til.activation, r.til.weight_norm, r.til.clip_max, r.til.reduction, r.til.outer_batch) == (
      "softplus", "clip", 5.0, "sum", "same")


def test_a_default_run_uses_the_exact_hypergradient():
  """The default config (what a CLI run builds) takes Eq. 14 exactly through the lookahead: its
  route equals a hand-written jax.grad of J_out(Theta~(Lambda)) and not the first-order one."""
  with jax.enable_x64(True):
    model, params, batch, _, ctx, gen_params = fixture()
    settings = make_settings()                        # configs/default.py, nothing overridden
    s = bilevel.triplet_state(model, params, ctx, batch, settings)

    def reference(gp):  # Theta~ = Theta - lr * grad J_in, then the outer mean BPR
      w = bilevel.triplet_weights(model, gp, s, batch["mask"], settings)
      g = jax.grad(bilevel.inner_loss)(params, w, model, ctx, batch, settings)
      theta = jax.tree.map(lambda p, d: p - settings.lr_look * d, params, g)
      return bilevel.outer_loss(theta, model, ctx, batch["outer"])
    want = jax.flatten_util.ravel_pytree(jax.grad(reference)(gen_params))[0]
    got = jax.flatten_util.ravel_pytree(
        bilevel.hypergradient(gen_params, params, s, model, ctx, batch, batch["outer"], settings)[1])[0]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    first = jax.flatten_util.ravel_pytree(bilevel.hypergrad_first_order(
        gen_params, params, s, model, ctx, batch, batch["outer"], settings)[1])[0]
    assert float(jnp.linalg.norm(first - want)) > 1e-7 * float(jnp.linalg.norm(want))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weighted_bpr_ignores_padded_rows(reduction):
  """Eq. 2 over the real rows only: padded rows (mask 0) with large weights and losses change
  neither the value nor the gradient."""
  from til_jax import objectives
  rng = np.random.default_rng(12)
  pos, neg, w = rng.normal(size=8), rng.normal(size=8), rng.uniform(0.1, 2.0, 8)
  mask = np.array([1, 1, 0, 1, 1, 0, 1, 0], bool)
  pos[~mask], neg[~mask], w[~mask] = -5.0, 5.0, 9.0     # garbage that would dominate if counted
  per = w * np.log1p(np.exp(-(pos - neg)))
  want = per[mask].sum() / (mask.sum() if reduction == "mean" else 1)
  with jax.enable_x64(True):
    f = lambda p: objectives.weighted_bpr_loss(p, jnp.asarray(neg), jnp.asarray(w),
                                               jnp.asarray(mask), reduction)
    val, grad = jax.value_and_grad(f)(jnp.asarray(pos))
  np.testing.assert_allclose(float(val), want, rtol=1e-12)
  sig = 1 / (1 + np.exp(pos - neg))
  g_want = np.where(mask, -w * sig, 0.0) / (mask.sum() if reduction == "mean" else 1)
  np.testing.assert_allclose(np.asarray(grad), g_want, rtol=1e-10, atol=1e-15)


def test_kl_target_is_held_constant():
  """Eq. 9 with T a constant (DEC): dKL/dQ = -T/Q even when T is computed from the same Q."""
  rng = np.random.default_rng(13)
  with jax.enable_x64(True):
    q = jax.nn.softmax(jnp.asarray(rng.normal(size=(6, 3))), -1)
    g = jax.grad(lambda q: clustering.kl_loss(clustering.target_distribution(q), q, "sum"))(q)
    t = np.asarray(clustering.target_distribution(q))
    np.testing.assert_allclose(np.asarray(g), -t / (np.asarray(q) + 1e-30), rtol=1e-9)


def test_kl_over_the_batch_items_matches_numpy():
  for reduction in ("sum", "mean"):
    _check_batch_kl(reduction)


def _check_batch_kl(reduction):
  """kl_items=batch: gamma * the mean KL over the batch's distinct items (positives and
  negatives, each once), times n_items for "sum"; with every item in the batch it is Eq. 9."""
  rng = np.random.default_rng(3)
  model = MF(n_users=N_USERS, n_items=N_ITEMS, dim=DIM)
  with jax.enable_x64(True):
    items = rng.normal(size=(N_ITEMS, DIM))
    centres = rng.normal(size=(3, DIM))
    params = {"model": {"user": jnp.zeros((N_USERS, DIM)), "item": jnp.asarray(items)},
              "centres": jnp.asarray(centres)}
    target = np.asarray(clustering.target_distribution(
        clustering.soft_assignment(jnp.asarray(items + 0.3), jnp.asarray(centres))))
    q = np.asarray(clustering.soft_assignment(jnp.asarray(items), jnp.asarray(centres)))
    per_item = (target * np.log(target / q)).sum(1)
    s = make_settings("multi", kl_items="batch", kl_reduction=reduction, gamma=0.5)
    batch = {"pos": jnp.asarray([1, 4, 4, 0]), "neg": jnp.asarray([4, 6, 1, 1]),
             "mask": jnp.asarray([True, True, True, False])}
    ctx = {"graph": {}, "target": jnp.asarray(target),
           "kl_items": bilevel.batch_items(batch, N_ITEMS)}
    ids = np.asarray(ctx["kl_items"][0])
    np.testing.assert_array_equal(ids, [0, 1, 4, 6] + [N_ITEMS] * 4)
    want = 0.5 * per_item[[0, 1, 4, 6]].mean() * (N_ITEMS if reduction == "sum" else 1)
    np.testing.assert_allclose(float(bilevel.cluster_loss(model, params, ctx, s)), want, rtol=1e-9)
    every = {"pos": jnp.arange(N_ITEMS), "neg": jnp.arange(N_ITEMS), "mask": jnp.ones(N_ITEMS, bool)}
    full = {**ctx, "kl_items": bilevel.batch_items(every, N_ITEMS)}
    all_items = {k: v for k, v in ctx.items() if k != "kl_items"}
    np.testing.assert_allclose(float(bilevel.cluster_loss(model, params, full, s)),
                               float(bilevel.cluster_loss(model, params, all_items, s)), rtol=1e-9)


def _adam_state_with_moments(tx, params, steps, seed):
  """Adam's state after `steps` updates on random gradients: nonzero moments."""
  st = tx.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    st = tx.update(jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params), st,
                   params)[1]
  return st


def _assert_matches_central_differences(f, flat, g_flat, n, seed, eps=1e-6):
  """g_flat (the gradient of the scalar f at the flat vector `flat`) against central finite
  differences along n random coordinates."""
  for k in np.random.default_rng(seed).choice(flat.size, n, replace=False):
    e = np.zeros(flat.size)
    e[k] = eps
    np.testing.assert_allclose(g_flat[k], (f(flat + e) - f(flat - e)) / (2 * eps), rtol=1e-5,
                               atol=1e-10)


def test_optimizer_lookahead_is_the_real_adam_step_and_its_hypergradient_checks_out():
  """til.lookahead=optimizer: Theta~ is OPT_Theta's next step with its state held (NumPy Adam
  with nonzero moments); with SGD at lr it equals Eq. 15 at lr_look = lr; the hypergradient
  through the Adam lookahead matches central finite differences (float64)."""
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture()
    s = bilevel.triplet_state(model, params, ctx, batch, settings)
    opt = bilevel.TILSettings(**{**settings.__dict__, "lookahead": "optimizer"})
    w = bilevel.triplet_weights(model, gen_params, s, batch["mask"], settings)
    # SGD at lr: the paper's lookahead at lr_look = lr
    sgd = optax.sgd(settings.lr_look)
    a = bilevel.lookahead(params, w, model, {**ctx, "opt": (sgd, sgd.init(params))}, batch, opt)
    b = bilevel.lookahead(params, w, model, ctx, batch, settings)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12)
    # Adam with moments from three earlier steps
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    tx = optax.adam(lr)
    st = _adam_state_with_moments(tx, params, steps=3, seed=4)
    ctx_a = {**ctx, "opt": (tx, st)}
    got = bilevel.lookahead(params, w, model, ctx_a, batch, opt)
    g = jax.grad(bilevel.inner_loss)(params, w, model, ctx, batch, settings)
    for k in ("user", "item"):
      m = b1 * np.asarray(st[0].mu["model"][k]) + (1 - b1) * np.asarray(g["model"][k])
      v = b2 * np.asarray(st[0].nu["model"][k]) + (1 - b2) * np.asarray(g["model"][k]) ** 2
      want = np.asarray(params["model"][k]) - lr * (m / (1 - b1 ** 4)) / (
          np.sqrt(v / (1 - b2 ** 4)) + eps)
      np.testing.assert_allclose(np.asarray(got["model"][k]), want, rtol=1e-10, err_msg=k)
    # the hypergradient through it, against finite differences
    _, g_gen = bilevel.hypergradient(gen_params, params, s, model, ctx_a, batch, batch["outer"], opt)
    flat, unravel = jax.flatten_util.ravel_pytree(gen_params)
    g_flat = np.asarray(jax.flatten_util.ravel_pytree(g_gen)[0])
    f = lambda vec: float(bilevel.hypergradient(unravel(vec), params, s, model, ctx_a, batch,
                                                batch["outer"], opt)[0])
    _assert_matches_central_differences(f, flat, g_flat, n=10, seed=1)
    assert np.abs(g_flat).max() > 0
    _, g_sgd = bilevel.hypergradient(gen_params, params, s, model, ctx, batch, batch["outer"],
                                     settings)
    assert np.abs(g_flat - np.asarray(jax.flatten_util.ravel_pytree(g_sgd)[0])).max() > 1e-6


@pytest.mark.parametrize("norm", ["mean", "softmax"])
def test_optimizer_lookahead_with_normalised_weights(norm):
  """Adam's lookahead with weights normalised to batch mean 1 (importance_study's
  adam_lookahead_{mean,softmax}): the hypergradient matches central finite differences, and
  under the softmax it is blind to the generator's output bias (a uniform logit shift leaves
  B * softmax unchanged), which it is not without normalisation."""
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture(weight_norm=norm)
    s = bilevel.triplet_state(model, params, ctx, batch, settings)
    tx = optax.adam(0.05)
    ctx_a = {**ctx, "opt": (tx, _adam_state_with_moments(tx, params, steps=2, seed=5))}

    def hyper(gp, how):
      opt = bilevel.TILSettings(**{**settings.__dict__, "lookahead": "optimizer",
                                   "weight_norm": how})
      return bilevel.hypergradient(gp, params, s, model, ctx_a, batch, batch["outer"], opt)

    _, g = hyper(gen_params, norm)
    flat, unravel = jax.flatten_util.ravel_pytree(gen_params)
    g_flat = np.asarray(jax.flatten_util.ravel_pytree(g)[0])
    _assert_matches_central_differences(lambda vec: float(hyper(unravel(vec), norm)[0]), flat,
                                        g_flat, n=8, seed=2)
    assert np.abs(g_flat).max() > 1e-8
    bias = lambda grads: float(np.abs(np.asarray(grads["params"]["W2"]["bias"])).max())
    if norm == "softmax":
      assert bias(g) < 1e-12 * np.abs(g_flat).max() + 1e-15
    assert bias(hyper(gen_params, "none")[1]) > 1e-8


def test_optimizer_lookahead_refuses_the_linear_routes():
  from til_jax.errors import ConfigError
  c = default.get_config()
  c.til.lookahead, c.til.hypergrad = "optimizer", "jvp"
  with pytest.raises(ConfigError, match="config.til.lookahead"):
    bilevel.TILSettings.from_config(c, "uni", 1)
  c.til.hypergrad, c.til.first_order = "autodiff", True
  with pytest.raises(ConfigError, match="config.til.lookahead"):
    bilevel.TILSettings.from_config(c, "uni", 1)


def test_til_update_with_the_optimizer_lookahead_trains(tmp_path):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.train import loop
  c = tiny_config(write_split(str(tmp_path / "d")), method="til_ui", epochs=1,
                  **{"til.lookahead": "optimizer"})
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert res["valid"]["recall@10"] > 0


def test_weight_auroc_is_logged_on_noisy_data(tmp_path):
  """With injected positives (data.noise=pos) every evaluation of a TIL run logs the AUROC of
  its weights, clean vs injected, equal to the one recomputed from the final state; BPR logs
  none."""
  import json

  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.evaluation import auroc
  from til_jax.train import loop
  data = write_split(str(tmp_path / "d"))
  c = tiny_config(data, method="til_ui", epochs=2, **{"data.noise": "pos", "eval.every": 1})
  loop.train_and_evaluate(c, str(tmp_path / "w"))
  lines = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
  assert all(0.0 <= x["weight_auroc"] <= 1.0 for x in lines)
  dataset, _, method, state, consts = loop.restore(c, str(tmp_path / "w"), "latest")
  w = loop.all_triplet_weights(method, state, dataset, consts)[3]
  assert abs(auroc(w, dataset.extras["clean"]) - lines[-1]["weight_auroc"]) < 1e-6
  c = tiny_config(data, method="bpr", epochs=1, **{"data.noise": "pos", "eval.every": 1})
  loop.train_and_evaluate(c, str(tmp_path / "b"))
  assert "weight_auroc" not in json.loads(open(tmp_path / "b" / "metrics.jsonl").readline())


def test_loss_inputs_state_and_running_statistics_match_numpy():
  """til.loss_inputs: s_t ends with the triplet's BPR loss and its z-score among the user's
  running losses; the statistics follow the per-user EMA of batch means (repeated users)."""
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture()
    s = bilevel.TILSettings(**{**settings.__dict__, "loss_inputs": True, "loss_decay": 0.8})
    stats = np.zeros((N_USERS, 3))
    stats[1] = [2, 0.5, 0.5 ** 2 + 0.09]          # mean 0.5, sd 0.3
    ctx = {**ctx, "loss_stats": jnp.asarray(stats)}
    st = np.asarray(bilevel.triplet_state(model, params, ctx, batch, s))
    U, I = np.asarray(params["model"]["user"]), np.asarray(params["model"]["item"])
    u, i, j = (np.asarray(batch[k]) for k in ("users", "pos", "neg"))
    loss = np.log1p(np.exp(-((U[u] * I[i]).sum(1) - (U[u] * I[j]).sum(1))))
    z = np.where(stats[u, 0] > 0, (loss - stats[u, 1]) / (np.sqrt(np.maximum(
        stats[u, 2] - stats[u, 1] ** 2, 0)) + 1e-6), 0.0)
    assert st.shape == (B, 2 * DIM + 2)
    np.testing.assert_allclose(st[:, -2], loss, rtol=1e-10)
    np.testing.assert_allclose(st[:, -1], z, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(st[:, :-2], np.asarray(bilevel.triplet_state(
        model, params, ctx, batch, settings)), rtol=1e-12)
    users = jnp.asarray([1, 1, 3, 0])
    losses = jnp.asarray([0.2, 0.6, 1.0, 7.0])
    mask = jnp.asarray([True, True, True, False])
    new = np.asarray(bilevel.update_loss_stats(jnp.asarray(stats), users, losses, mask, 0.8))
    want = stats.copy()
    want[1] = [4, 0.8 * 0.5 + 0.2 * 0.4, 0.8 * stats[1, 2] + 0.2 * (0.04 + 0.36) / 2]
    want[3] = [1, 1.0, 1.0]                        # first batch: the batch mean itself
    np.testing.assert_allclose(new, want, rtol=1e-12)   # user 0: masked out, unchanged
    g = bilevel.init_generator(jax.random.key(0), model, s)
    assert g["params"]["W1"]["kernel"].shape[0] == 2 * DIM + 2


def test_loss_inputs_train_through_the_loop(tmp_path):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.train import loop
  c = tiny_config(write_split(str(tmp_path / "d")), method="til_ui", epochs=1,
                  **{"til.loss_inputs": True})
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert res["valid"]["recall@10"] > 0
  _, _, _, state, _ = loop.restore(c, str(tmp_path / "w"), "latest")
  stats = np.asarray(state.aux["loss_stats"])
  assert (stats[:, 0] > 0).mean() > 0.9 and np.isfinite(stats).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_authors_objective_is_the_total_derivative_of_their_losses(reduction):
  """til.objective=authors: the model's gradient is d/dTheta of J_in(Theta, w(s(Theta))) +
  J_out(Theta - lr grad J_in) with the state undetached, and Lambda's that of J_out only; both
  against central finite differences of those scalars (float64); they differ from the paper's.
  With the summed reduction (theirs) both losses are sums over their batches."""
  with jax.enable_x64(True):
    model, params, batch, settings, ctx, gen_params = fixture(lr_look=0.5)
    s = bilevel.TILSettings(**{**settings.__dict__, "objective": "authors", "l2": 0.05,
                               "activation": "softplus", "reduction": reduction})
    om = batch["outer"].get("mask")
    n_outer = float(np.sum(om) if om is not None else len(batch["outer"]["users"]))
    tx = optax.sgd(1.0)
    _, _, grads, m = bilevel.bilevel_grads(params, gen_params, tx.init(gen_params), model, ctx,
                                           batch, batch["outer"], tx, s)
    g_gen = jax.tree.map(lambda a, b: a - b, gen_params, bilevel.bilevel_grads(
        params, gen_params, tx.init(gen_params), model, ctx, batch, batch["outer"], tx, s)[0])

    def j_in(th, gp):
      st = bilevel.triplet_state(model, th, ctx, batch, s, detach=False)
      return bilevel.inner_loss(th, bilevel.triplet_weights(model, gp, st, batch["mask"], s), model,
                                ctx, batch, s)

    def j_out(th, gp):
      g = jax.grad(j_in)(th, gp)
      j = bilevel.outer_loss(jax.tree.map(lambda p, d: p - 0.5 * d, th, g), model, ctx,
                             batch["outer"])
      return j * n_outer if reduction == "sum" else j
    total = lambda th: float(j_in(th, gen_params) + j_out(th, gen_params))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    g_flat = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
    for k in np.random.default_rng(3).choice(flat.size, 10, replace=False):
      e = np.zeros(flat.size)
      e[k] = 1e-6
      fd = (total(unravel(flat + e)) - total(unravel(flat - e))) / 2e-6
      np.testing.assert_allclose(g_flat[k], fd, rtol=1e-5, atol=1e-9)
    gflat, gun = jax.flatten_util.ravel_pytree(gen_params)
    gg = np.asarray(jax.flatten_util.ravel_pytree(g_gen)[0])
    for k in np.random.default_rng(4).choice(gflat.size, 8, replace=False):
      e = np.zeros(gflat.size)
      e[k] = 1e-6
      fd = (float(j_out(params, gun(gflat + e))) - float(j_out(params, gun(gflat - e)))) / 2e-6
      np.testing.assert_allclose(gg[k], fd, rtol=1e-5, atol=1e-9)
    paper = bilevel.TILSettings(**{**s.__dict__, "objective": "paper"})
    g_paper = bilevel.bilevel_grads(params, gen_params, tx.init(gen_params), model, ctx, batch,
                                    batch["outer"], tx, paper)[2]
    assert np.abs(g_flat - np.asarray(jax.flatten_util.ravel_pytree(g_paper)[0])).max() > 1e-4
    assert float(m["outer_loss"]) == pytest.approx(float(j_out(params, gen_params)), rel=1e-12)


def test_authors_code_mode_trains_with_their_optimizers(tmp_path):
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.til import modes
  from til_jax.train import loop
  c = tiny_config(write_split(str(tmp_path / "d")), method="til_ui", epochs=1,
                  **{"til.mode": "authors_code"})
  r = modes.resolve(c)
  assert (r.til.objective, r.optim.weight_decay, r.til.gen_weight_decay) == ("authors", 1e-2, 0.1)
  assert c.optim.weight_decay == 0.0               # the caller's config is not changed
  _, _, m, _ = loop.build(c)
  assert len(m.core.tx.init({"x": jnp.zeros(2)})) == 2   # chain(decay, adam)
  res = loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert res["valid"]["recall@10"] > 0


def test_group_softmax_normalises_each_positive_s_negatives():
  logits = jnp.asarray([0.0, 1.0, 2.0, 5.0, 5.0, 5.0])
  w = np.asarray(postprocess(jnp.exp(logits), logits, None, "group_softmax", temperature=2.0,
                             group=3))
  e = np.exp(np.asarray(logits).reshape(2, 3) / 2.0)
  np.testing.assert_allclose(w, (3 * e / e.sum(1, keepdims=True)).ravel(), rtol=1e-6)
  np.testing.assert_allclose(w.reshape(2, 3).sum(1), [3.0, 3.0], rtol=1e-6)


def test_optimizer_lookahead_has_a_finite_hypergradient_from_fresh_moments():
  """At nu = 0 (a fresh Adam state, or a unit no triplet reaches) the root's derivative is
  infinite: the library's lookahead transformation (eps_root > 0) keeps the hypergradient
  finite on NeuMF, whose MLP has such units."""
  from til_jax.models import NeuMF
  from til_jax.til.api import TIL
  c = default.get_config()
  c.method, c.til.lookahead = "til_ui", "optimizer"
  model = NeuMF(n_users=N_USERS, n_items=N_ITEMS, dim=DIM, mlp_layers=(8, 4))
  til = TIL.from_config(c, model, steps_per_epoch=1)
  state = til.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.integers(0, n, B)) for k, n in (("users", N_USERS), ("pos", N_ITEMS),
                                                              ("neg", N_ITEMS))}
  batch["mask"] = jnp.ones(B, bool)
  batch["outer"] = dict(batch)
  from til_jax.state import make_consts
  consts = make_consts(np.arange(N_USERS), np.arange(N_USERS) % N_ITEMS)
  new, m = jax.jit(til.update)(state, batch, consts)
  assert np.isfinite(float(m["hypergrad_norm"])) and float(m["hypergrad_norm"]) > 0
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new.gen_params))


def test_authors_objective_refusals_and_paper_mode_pins_it():
  from til_jax.errors import ConfigError
  from til_jax.til import modes
  from til_jax.til.api import TIL
  c = default.get_config()
  c.method, c.til.objective, c.til.hypergrad = "til_ui", "authors", "jvp"
  with pytest.raises(ConfigError, match="config.til.objective"):
    bilevel.TILSettings.from_config(c, "uni", 1)
  c.til.hypergrad, c.optim.name = "autodiff", "sparse_adam"
  with pytest.raises(ConfigError, match="config.til.objective"):
    TIL.from_config(c, MF(N_USERS, N_ITEMS, DIM), 1)
  c.til.mode = "paper"
  assert modes.resolve(c).til.objective == "paper"


def test_generator_adam_steps_at_gen_lr_only_where_the_hypergradient_exceeds_gen_eps():
  """OPT_Lambda is Adam with epsilon `til.gen_eps`: its first step is -lr * g / (|g| + eps)
  (m_hat = g, v_hat = g^2). At the hypergradient's scale (1e-12 an entry; the runs log norms of
  1e-11..4e-8 as a median) the default eps 1e-8 shrinks it 1e4-fold; gen_eps 1e-20 gives -lr * sign(g). TIL
  builds its OPT_Lambda from the config; gen_eps 0 (0 / 0 where an entry's gradient is 0) is
  refused by name."""
  from til_jax import optim
  from til_jax.errors import ConfigError
  from til_jax.til.api import TIL
  from til_jax.train import config_check
  g = {"w": jnp.asarray([1e-12, -3e-12, 0.0], jnp.float32)}
  for eps, l2 in ((None, 0.0), (1e-20, 0.0), (1e-20, 0.5)):   # l2 > 0: the AdamW branch
    c = default.get_config()
    c.method, c.til.gen_lr, c.til.gen_l2 = "til_ui", 1e-3, l2
    if eps is not None:
      c.til.gen_eps = eps
    e = 1e-8 if eps is None else eps
    gw = np.asarray(g["w"], np.float64)
    want = -1e-3 * (gw / (np.abs(gw) + e) + l2 * gw)   # params = g: AdamW's decay l2 * params
    tx = TIL.from_config(c, MF(n_users=N_USERS, n_items=N_ITEMS, dim=DIM), steps_per_epoch=1).gen_tx
    for t in (tx, optim.generator_optimizer(c.til)):
      upd, _ = t.update(g, t.init(g), g)
      np.testing.assert_allclose(np.asarray(upd["w"]), want, rtol=1e-5, atol=1e-12)
  assert np.abs(want[:2]).min() > 0.9e-3   # at gen_lr, not |g| / eps of it
  c.til.gen_eps = 0.0
  with pytest.raises(ConfigError, match=r"config\.til\.gen_eps: must be > 0"):
    config_check.validate(c)
