"""A/B in one process: value_and_grad of TIL-MI's clustering loss (Eq. 9) over every item.

Gowalla's shape (40,981 items, K 60, d 64). "log_q_of_softmax" is the form used before 2026-12-02:
log(softmax + 1e-30). "log_softmax" is clustering.cluster_kl. The loss values agree to float32
rounding. Run on a quiet machine:

  python -m benchmarks.kl_logq_ab
"""

from __future__ import annotations

import time

import jax
import numpy as np

from til_jax.til import clustering


def main(n: int = 40981, k: int = 60, d: int = 64, repeats: int = 20) -> dict:
  k1, k2 = jax.random.split(jax.random.key(0))
  x = jax.random.normal(k1, (n, d)) * 0.1
  c = jax.random.normal(k2, (k, d)) * 0.1
  t = clustering.target_distribution(clustering.soft_assignment(x, c))
  forms = {"log_q_of_softmax": lambda x, c: clustering.kl_loss(t, clustering.soft_assignment(x, c)),
           "log_softmax": lambda x, c: clustering.cluster_kl(t, x, c)}
  out = {}
  for name in (*forms, *forms):  # each twice, interleaved: the second pass is the one kept
    g = jax.jit(jax.value_and_grad(forms[name], argnums=(0, 1)))
    jax.block_until_ready(g(x, c))
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(g(x, c))
      times.append(time.perf_counter() - t0)
    out[name] = {"median_ms": round(1e3 * float(np.median(times)), 1), "loss": float(g(x, c)[0])}
  out["ratio"] = round(out["log_softmax"]["median_ms"] / out["log_q_of_softmax"]["median_ms"], 3)
  print(out)
  return out


if __name__ == "__main__":
  main()
