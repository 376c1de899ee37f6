"""Which TIL variant makes triplet importance pay off? One restartable command (issues #10, #18):

  python -m experiments.importance_study --stage=all --budget=cpu --root=runs/importance
  python -m experiments.importance_study --stage=clean --dataset=lastfm --budget=converged \
      --root=runs/importance_converged/lastfm --clean-variants=<ROUND2, comma separated>

Stages (each cell a run of experiments.main in <root>/<stage>/<variant>/...; finished cells
are read, not rerun):
  clean      --dataset (Gowalla), MF: BPR vs every variant, same epoch budget, --seeds;
             test Recall@20 / NDCG@20 mean +- std, paired t-tests against BPR and against the
             variant's control (CONTROL)
  noise      the same under Noisy-Pos / Noisy-Neg / both 50% (sec. 5.6.2; `--noises`),
             --noise-seeds: Recall@20 drop relative to each variant's clean run, and the AUROC
             of the learned weights against the injected positives over training
  ml100k     MovieLens-100K with every rating kept as a positive: AUROC of the learned weight
             vs rating >= 4; and the paper's Fig. 4 view (triplets with rating(u,i) in {4,5},
             rating(u,j) in {1,2,3}) from a run on the >= 4 positives
  synthetic  the synthetic dataset with planted noisy positives: AUROC of weight vs clean flag
  report     trains nothing: the tables of the finished clean and noise cells (and the small
             stages' CSVs)
Outputs in <root>: <stage>.csv, importance.md (tables), and PNG plots with the `plots` extra.
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments import common, ledger

# Each variant: (method, config overrides). All TIL variants are TIL-UI (the cheapest state);
# the chosen one is then run as TIL-MI by experiments/table1.py.
VARIANTS = {
    "bpr": ("bpr", {}),
    "paper": ("til_ui", {"til.mode": "paper"}),
    "mean": ("til_ui", {"til.weight_norm": "mean"}),
    "mean_lr2": ("til_ui", {"til.weight_norm": "mean", "til.gen_lr": 1e-2}),
    "softmax": ("til_ui", {"til.weight_norm": "softmax"}),
    # The outer loss on the inner batch itself (the authors' code): its hypergradient includes
    # each triplet's own squared gradient norm, so hard triplets gain weight.
    "same_lr2": ("til_ui", {"til.weight_norm": "mean", "til.outer_batch": "same", "til.gen_lr": 1e-2}),
    "authors": ("til_ui", {"til.activation": "softplus", "til.reduction": "sum",
                           "til.weight_norm": "clip"}),
    # ... and with the authors' outer batch too (the inner batch itself).
    "authors_same": ("til_ui", {"til.activation": "softplus", "til.reduction": "sum",  # = til.mode=authors
                                "til.weight_norm": "clip", "til.outer_batch": "same"}),
    "same": ("til_ui", {"til.weight_norm": "mean", "til.outer_batch": "same"}),
    # The control of the authors' choices: their weights saturate at the clip (5) with a summed
    # loss, i.e. BPR scaled by 5 * batch (25,000), which shrinks the L2 term's relative weight by
    # that factor (Adam ignores the scale itself): BPR with l2 / 25,000.
    "bpr_l2_scaled": ("bpr", {"optim.l2": 1e-4 / 25000}),
    # ... and the other thing a 25,000x loss scale changes under Adam: epsilon's relative size
    # (rows with tiny gradients take larger steps). BPR with Adam eps 1e-8 / 25,000.
    "bpr_eps": ("bpr", {"optim.eps": 1e-8 / 25000}),
    "valid": ("til_ui", {"til.weight_norm": "mean", "til.outer_batch": "valid"}),
    # The control of `valid`: BPR that also trains on the meta part of valid (same split).
    "bpr_meta": ("bpr", {"train.meta_to_train": True}),
    # Inner SGD (a uniform weight scale matters there, unlike with Adam) and its BPR control.
    "sgd_paper": ("til_ui", {"til.mode": "paper", "optim.name": "sgd", "optim.lr": 50.0}),
    "bpr_sgd": ("bpr", {"optim.name": "sgd", "optim.lr": 50.0}),
}
# Round 2 (issue #18: judged at `--budget=converged`, e.g. `--dataset=lastfm
# --clean-variants=bpr,...`), each with the control that isolates what it changes.
VARIANTS.update({
    "authors_code": ("til_ui", {"til.mode": "authors_code"}),   # their effective objective
    "bpr_wd": ("bpr", {"optim.weight_decay": 1e-2}),            # ... its decay alone
    "adam_lookahead": ("til_ui", {"til.lookahead": "optimizer"}),
    "loss_inputs": ("til_ui", {"til.loss_inputs": True}),
    # ... Adam's lookahead ranks lastfm's injected positives right (weight AUROC 0.82) but drives
    # every sigmoid weight to 1.0 (spread ~1e-4): the outer gradient's uniform part (a larger
    # step lowers the outer loss) saturates them. With the weights normalised to batch mean 1
    # (w / mean w, or B * softmax of the logits) that part is gone and only relative importance
    # is learnt; the loss scale is BPR's by construction, so BPR is their control.
    "adam_lookahead_mean": ("til_ui", {"til.lookahead": "optimizer", "til.weight_norm": "mean"}),
    "adam_lookahead_softmax": ("til_ui", {"til.lookahead": "optimizer",
                                          "til.weight_norm": "softmax"}),
    **{f"neg{n}_softmax": ("til_ui", {"train.negatives": n, "til.weight_norm": "group_softmax"})
       for n in (4, 16)},
    # ... at the temperature tuned on valid (results/grid_lastfm_mf_til_ui_neg4_temperature.csv:
    # 0.1 / 1 / 10 give 0.2638 / 0.2730 / 0.2811 valid Recall@20, lastfm MF seed 0)
    "neg4_softmax_t10": ("til_ui", {"train.negatives": 4, "til.weight_norm": "group_softmax",
                                    "til.temperature": 10.0}),
    **{f"bpr_neg{n}": ("bpr", {"train.negatives": n}) for n in (4, 16)},   # uniform over N
    **{f"dns{n}": ("bpr", {"train.negatives": n, "train.negative_pick": "hardest"})
       for n in (4, 16)},
})
VARIANTS.update({
    # TIL-UI with the library's defaults: for TIL-UI the same numbers as `paper` (the fields
    # the two differ in, kl_*, belong to TIL-MI), and the same cell as Table 1's til_ui.
    "til_ui": ("til_ui", {}),
    # Loss-scale controls: BPR times the mean weight its reference cell (same stage, same seed)
    # trained with, from that cell's metrics.jsonl (`measured_scale`); the overrides here are
    # the rest of the control.
    "bpr_scaled": ("bpr", {}),                                    # c = mean w of til_ui
    "bpr_authors_scaled": ("bpr", {"optim.weight_decay": 1e-2}),  # c = B * (mean w + 1) of
                                                                  # authors_code, its decay too
    # A coupled weight-decay grid. With the mean loss, a row's BPR gradient is ~1/B of the
    # summed loss's, so the authors' 1e-2 (with their summed loss) acts like ~1e-2 / B here:
    # bpr_wd (1e-2 on the mean loss) collapses the embeddings; the grid is below it.
    **{f"bpr_wd{w}": ("bpr", {"optim.weight_decay": float(w)}) for w in ("1e-4", "1e-5", "1e-6")},
    # The generator at its nominal rate (session 17). The paper's hypergradient (mean losses,
    # lr_look 1e-3) has entries of 1e-13..5e-10 in the Table 1 cells (median norms 1e-11..4e-8),
    # below OPT_Lambda's Adam epsilon 1e-8, so Adam stepped at about |g| / eps (1e-5..5e-2) of
    # gen_lr: the generator barely learnt. gen_eps 1e-20 restores Adam's scale-free step;
    # against til_ui (the same run at eps 1e-8), and with the weights normalised to batch mean 1
    # (the outer gradient's uniform part, which saturates the sigmoid once it is followed,
    # removed; BPR's loss scale), against `mean` (the same at eps 1e-8).
    "gen_eps": ("til_ui", {"til.gen_eps": 1e-20}),
    "gen_eps_mean": ("til_ui", {"til.gen_eps": 1e-20, "til.weight_norm": "mean"}),
    # ... which under Noisy-Pos rank the injected positives early (weight AUROC peaks of
    # 0.76-0.78 at epochs 15-30, spread 0.2-2) and then flatten as the model fits them: the
    # outer batch is drawn from the same noisy training data. With a clean outer batch (a meta
    # part of valid, as Meta-Weight-Net trains); its control is BPR trained on train + that
    # meta part (and `valid`, the same at eps 1e-8).
    "gen_eps_valid": ("til_ui", {"til.gen_eps": 1e-20, "til.weight_norm": "mean",
                                 "til.outer_batch": "valid"}),
    # ... whose early ranking the state loses as the model fits the injected positives (the
    # epoch-25 generator on the late model ranks them at AUROC 0.52-0.58: experiments.
    # weight_drift, results/weight_drift_lastfm*.csv). gen_eps_mean with its weights
    # frozen per training pair after E epochs and raised to t (til.freeze_*), E and t on valid
    # (seed 0, results/grid_lastfm_mf_til_ui_freeze*.csv): `freeze` at clean valid's best
    # (E 100, t 1: 0.2761; E 50 level, and E -> infinity is the control itself),
    # `freeze_noisy` at Noisy-Pos valid's best (E 25, t 1: 0.2294, every other point <= 0.2150).
    # Control: gen_eps_mean, the same run never frozen.
    "freeze": ("til_ui", {"til.gen_eps": 1e-20, "til.weight_norm": "mean",
                          "til.freeze_epoch": 100, "til.freeze_temper": 1.0}),
    "freeze_noisy": ("til_ui", {"til.gen_eps": 1e-20, "til.weight_norm": "mean",
                                "til.freeze_epoch": 25, "til.freeze_temper": 1.0}),
})
# variant -> (reference variant, c from (mean weight, batch size)): the model step of TIL-UI is
# mean(w * BPR), so its scale is mean w; authors_code's is sum(w * BPR) + sum BPR(Theta~), i.e.
# B * (mean w + 1) (the "1 + the mean TIL weight", with their summed losses).
SCALED = {"bpr_scaled": ("til_ui", lambda w, b: w),
          "bpr_authors_scaled": ("authors_code", lambda w, b: b * (w + 1.0))}
ROUND2 = ["bpr", "til_ui", "bpr_scaled", "authors_code", "bpr_authors_scaled", "bpr_wd",
          "adam_lookahead", "loss_inputs", "neg4_softmax", "neg4_softmax_t10", "bpr_neg4", "dns4",
          "neg16_softmax",
          "bpr_neg16", "dns16", "bpr_wd1e-4", "bpr_wd1e-5", "bpr_wd1e-6", "adam_lookahead_mean",
          "adam_lookahead_softmax", "gen_eps", "gen_eps_mean", "gen_eps_valid", "bpr_meta",
          "freeze", "freeze_noisy"]
# Each variant is compared with plain BPR and with its control (what isolates its change).
CONTROL = {"valid": "bpr_meta", "sgd_paper": "bpr_sgd", "authors_code": "bpr_authors_scaled",
           "neg4_softmax": "bpr_neg4", "neg4_softmax_t10": "bpr_neg4",
           "neg16_softmax": "bpr_neg16", "til_ui": "bpr_scaled",
           # paper: bpr_scaled's c comes from til_ui's run, which trains exactly as paper
           # (test_til_ui_default_is_the_paper_mode)
           "paper": "bpr_scaled", "adam_lookahead": "til_ui", "loss_inputs": "til_ui",
           "dns4": "bpr_neg4", "dns16": "bpr_neg16", "gen_eps": "til_ui",
           # the same run at Adam's default epsilon; gen_eps_valid's data control is bpr_meta
           # (and its epsilon control `valid`, compared in RESULTS.md)
           "gen_eps_mean": "mean", "gen_eps_valid": "bpr_meta",
           "freeze": "gen_eps_mean", "freeze_noisy": "gen_eps_mean"}
CLEAN = ["bpr", "paper", "mean", "mean_lr2", "same_lr2", "authors", "valid", "bpr_meta"]
NOISE = ["bpr", "paper", "authors_same", "valid", "bpr_meta"]
SMALL = list(VARIANTS)  # the cheap stages run every variant
NOISES = ("pos", "neg", "both")


# The variants that are plain Table 1 cells. With `--table1-root` the clean stage reads (or runs)
# them there, <table1-root>/<dataset>_mf/<method>/seed<k>, instead of training the same run twice.
TABLE1_VARIANTS = ("bpr", "til_ui")


def home(stage_root: str, prefix: str, variant: str, table1_group: str = "") -> str:
  """The folder of a variant's seed cells: under the stage, or its Table 1 group's."""
  if table1_group and variant in TABLE1_VARIANTS and not prefix:
    return os.path.join(table1_group, VARIANTS[variant][0])
  return os.path.join(stage_root, prefix, variant)


def cell_overrides(variant: str, seed: int, extra: dict | None = None) -> dict:
  method, over = VARIANTS[variant]
  return {"method": method, "seed": seed, **over, **(extra or {})}


def measured_scale(stage_root: str, variant: str, seed: int, prefix: str = "",
                   budget: str | None = None, table1_group: str = "") -> float | None:
  """train.loss_scale of a SCALED control: from the mean over the training epochs of the
  `w_mean` its reference cell (same stage root, prefix and seed, or the Table 1 cell of that
  seed with `table1_group`: `home`; trained with `budget`) logged,
  or None (with a line saying why) if that cell has not finished or logged no weights."""
  import json
  ref, scale = SCALED[variant]
  d = os.path.join(home(stage_root, prefix, ref, table1_group), f"seed{seed}")
  if not os.path.exists(os.path.join(d, "metrics.json")):
    return None
  stale = common.stale_cell(d)
  if stale:
    print(f"[skip] {variant}: its reference {d} is stale ({stale})", flush=True)
    return None
  with open(os.path.join(d, "metrics.json")) as f:
    if budget is not None and json.load(f).get("budget") != budget:
      print(f"[skip] {variant}: its reference {d} was trained with another budget", flush=True)
      return None
  ws = []
  if os.path.exists(os.path.join(d, "metrics.jsonl")):
    with open(os.path.join(d, "metrics.jsonl")) as f:
      ws = [r["w_mean"] for r in map(json.loads, f) if "w_mean" in r]
  if not ws:
    print(f"[skip] {variant}: {d}/metrics.jsonl has no w_mean record to scale by", flush=True)
    return None
  with open(os.path.join(d, "config.json")) as f:
    batch = int(json.load(f)["config"]["train"]["batch_size"])
  return round(float(scale(sum(ws) / len(ws), batch)), 6)


def ordered(variants: list[str]) -> list[str]:
  """The SCALED controls after every other variant (they read their reference's run)."""
  return [v for v in variants if v not in SCALED] + [v for v in variants if v in SCALED]


def run_variant(stage_root: str, cell: str, config: str, v: str, seed: int, extra: dict,
                budget: str, prefix: str = "", table1_group: str = "") -> None:
  extra = dict(extra)
  if v in SCALED:
    c = measured_scale(stage_root, v, seed, prefix, budget, table1_group)
    if c is None:
      print(f"[wait] {cell}: needs {SCALED[v][0]}/seed{seed} finished first", flush=True)
      return
    extra["train.loss_scale"] = c
  root = stage_root
  if home(stage_root, prefix, v, table1_group) != os.path.join(stage_root, prefix, v):
    root, cell = table1_group, f"{VARIANTS[v][0]}/seed{seed}"  # the Table 1 cell
  common.run_cell(root, cell, config, cell_overrides(v, seed, extra), budget)


def run_clean(a) -> list[dict]:
  for seed in a.seeds:
    for v in ordered(a.clean_variants):
      run_variant(os.path.join(a.root, "clean"), f"{v}/seed{seed}",
                  common.config_path(a.dataset, "mf"), v, seed, {}, a.budget,
                  table1_group=table1_group(a))
  return collect_clean(a)


def collect_clean(a) -> list[dict]:
  """Rows of every finished clean cell under the root (clean.csv)."""
  rows = [row(v, seed, "none", m) for (v, seed), m in finished(os.path.join(a.root, "clean"), "",
                                                                a.budget, table1_group(a))]
  common.write_csv(os.path.join(a.root, "clean.csv"), rows)
  return rows


def table1_group(a) -> str:
  """The Table 1 group folder of the clean stage's dataset (MF), or '' without --table1-root."""
  return os.path.join(a.table1_root, common.group(a.dataset, "mf")) if a.table1_root else ""


def finished(stage_root: str, prefix: str = "", budget: str | None = None, table1_group: str = ""):
  """((variant, seed), metrics) of every finished cell under stage_root[/prefix] trained with
  `budget`, so a report covers earlier invocations' cells too (e.g. variants run for fewer
  seeds)."""
  out = []
  for v in VARIANTS:
    out += [((v, seed), m) for seed, m in
            common.finished_seeds(home(stage_root, prefix, v, table1_group), v, budget)]
  return out


def run_noise(a) -> list[dict]:
  for seed in a.noise_seeds:
    for noise in a.noises:
      for v in ordered(a.noise_variants):
        run_variant(os.path.join(a.root, "noise"), f"{noise}/{v}/seed{seed}",
                    common.config_path(a.dataset, "mf"), v, seed,
                    {"data.noise": noise, "data.noise_seed": seed}, a.budget, noise)
  return collect_noise(a)


def collect_noise(a) -> list[dict]:
  """Rows of every finished noise cell under the root, with the weights' AUROC (noise.csv)."""
  rows = []
  for noise in NOISES:
    for (v, seed), m in finished(os.path.join(a.root, "noise"), noise, a.budget):
      r = row(v, seed, noise, m)
      trace = auroc_trace(os.path.join(a.root, "noise", noise, v, f"seed{seed}"))
      if trace:  # TIL on data with noise flags: the weights' AUROC, clean vs injected
        at_best = [x for e, x in trace if e <= m.get("best_epoch", trace[-1][0])]
        r.update(auroc_last=trace[-1][1], **({"auroc_best": at_best[-1]} if at_best else {}))
      rows.append(r)
  common.write_csv(os.path.join(a.root, "noise.csv"), rows)
  return rows


def auroc_trace(workdir: str) -> list[tuple[int, float]]:
  """(epoch, weight_auroc) of every evaluation a cell logged (metrics.jsonl), in order."""
  import json
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    recs = [json.loads(line) for line in f if "weight_auroc" in line]
  return [(int(r["epoch"]), float(r["weight_auroc"])) for r in recs if "weight_auroc" in r]


def row(variant: str, seed: int, noise: str, m: dict) -> dict:
  return {"variant": variant, "method": m["method"], "seed": seed, "noise": noise,
          "valid_recall@20": m["valid"]["recall@20"], "test_recall@20": m["test"]["recall@20"],
          "test_ndcg@20": m["test"]["ndcg@20"], "epochs": m["epochs"],
          "train_seconds": m["train_seconds"], "budget": m.get("budget", ""),
          "best_epoch": m.get("best_epoch", ""), "stop": m.get("stop", "")}


def weights_of(config_file: str, workdir: str, overrides: dict):
  """(dataset, method, state, consts, users, pos, neg, weights) of a finished TIL cell's
  best checkpoint."""
  import importlib
  import json

  from configs.default import set_fields
  from til_jax.train import loop
  with open(os.path.join(workdir, "metrics.json")) as f:
    budget = json.load(f).get("budget") or "cpu"
  c = importlib.import_module(config_file[:-3].replace(os.sep, ".")).get_config(budget)
  set_fields(c, overrides)
  dataset, model, method, state, consts = loop.restore(c, workdir)
  users, pos, neg, w = loop.all_triplet_weights(method, state, dataset, consts)
  return dataset, method, state, consts, users, pos, neg, w


def auroc(score, label) -> float:
  """P(score of a random positive-label item > a random negative-label one), ties half."""
  import numpy as np
  score, label = np.asarray(score, float), np.asarray(label, bool)
  order = np.argsort(score, kind="stable")
  s = score[order]
  ranks = np.empty(score.size)
  i = 0
  while i < s.size:  # average ranks over ties
    j = i
    while j + 1 < s.size and s[j + 1] == s[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
    i = j + 1
  n1, n0 = label.sum(), (~label).sum()
  if n1 == 0 or n0 == 0:
    return float("nan")
  return float((ranks[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def run_weight_stage(a, stage: str) -> list[dict]:
  """ml100k / synthetic: train each TIL variant, then AUROC of its weights vs the truth."""
  import numpy as np
  config = common.config_path("ml100k" if stage == "ml100k" else "synthetic", "mf")
  extra = {"data.keep_all_ratings": True} if stage == "ml100k" else {}
  rows = []
  seed = a.seeds[0]  # one seed: these stages measure what the weights learn, not variance
  for v in a.small_variants:
    over = cell_overrides(v, seed, {**extra, "train.epochs": a.small_epochs,
                                    "eval.every": max(1, a.small_epochs // 4),
                                    "train.patience": a.small_epochs})
    root = os.path.join(a.root, stage)
    m = common.run_cell(root, f"{v}/seed{seed}", config, over, a.budget)
    if not m:
      continue
    r = row(v, seed, "none", m)
    if VARIANTS[v][0] != "bpr":
      ds, _, _, _, users, pos, neg, w = weights_of(config, os.path.join(root, f"{v}/seed{seed}"),
                                                    over)
      truth = ds.extras["rating"] >= 4 if stage == "ml100k" else ds.extras["clean"]
      r.update(auroc=auroc(w, truth), w_true=float(np.mean(w[truth])),
               w_false=float(np.mean(w[~truth])), n_false=int((~truth).sum()))
    rows.append(r)
  common.write_csv(os.path.join(a.root, f"{stage}.csv"), rows)
  if stage == "ml100k":
    fig4(a)
  return rows


def fig4(a) -> None:
  """Fig. 4: learned weights of triplets (u, i, j) with rating(u,i) in {4,5} and rating(u,j) in
  {1,2,3} (j: a low-rated item, not a training positive), divided by the largest of them, x100,
  averaged per rating pair, for the `--fig4-variant` trained on the >= 4 positives."""
  import numpy as np
  v = a.fig4_variant
  over = cell_overrides(v, 0, {"train.epochs": a.small_epochs, "train.patience": a.small_epochs,
                               "eval.every": max(1, a.small_epochs // 4)})
  config = common.config_path("ml100k", "mf")
  root = os.path.join(a.root, "fig4")
  if not common.run_cell(root, f"{v}/seed0", config, over, a.budget):
    return
  from til_jax.train import loop
  ds, method, state, consts, users, pos, _, _ = weights_of(config, os.path.join(root, f"{v}/seed0"),
                                                           over)
  low = ds.extras["low_rated"]
  low_u, low_j = low.to_pairs()
  low_r = ds.extras["low_rated_rating"]
  rating_i = ds.extras["rating"]
  rng = np.random.default_rng(0)
  tu, ti, tj, ri, rj = [], [], [], [], []
  for u in np.unique(low_u):  # each positive of u with one random low-rated item of u
    mine = np.flatnonzero(users == u)
    lows = np.flatnonzero(low_u == u)
    pick = rng.choice(lows, mine.size)
    tu.append(users[mine]), ti.append(pos[mine]), tj.append(low_j[pick])
    ri.append(rating_i[mine]), rj.append(low_r[pick])
  tu, ti, tj, ri, rj = (np.concatenate(x) for x in (tu, ti, tj, ri, rj))
  w = loop.triplet_weights(method, state, consts, tu, ti, tj, seed=1)
  rows = []
  for a_i in (5, 4):
    for a_j in (1, 2, 3):
      sel = (ri == a_i) & (rj == a_j)
      rows.append({"rating_i": a_i, "rating_j": a_j, "n": int(sel.sum()),
                   "mean_weight": float(w[sel].mean()) if sel.any() else float("nan")})
  top = float(w.max())  # the paper (5.6.1): weights normalised by the largest one, x100
  for r in rows:
    r["weight_x100_of_max"] = 100.0 * r["mean_weight"] / top
  common.write_csv(os.path.join(a.root, "fig4.csv"), rows)
  plt = common.pyplot()
  if plt:
    grid = np.array([[r["weight_x100_of_max"] for r in rows[k * 3:(k + 1) * 3]] for k in range(2)])
    fig, ax = plt.subplots(figsize=(4, 3))
    im = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(3), ["j:1", "j:2", "j:3"])
    ax.set_yticks(range(2), ["i:5", "i:4"])
    for (y, x), val in np.ndenumerate(grid):
      ax.text(x, y, f"{val:.1f}", ha="center", va="center", color="w")
    fig.colorbar(im)
    ax.set_title(f"ML-100K weights x100/max ({v})")
    fig.tight_layout()
    fig.savefig(os.path.join(a.root, "fig4.png"), dpi=120)


def compare(by: dict, v: str, ref: str, key: str = "test_recall@20") -> tuple[str, str]:
  """(relative difference of the seed-paired sums of `key`, paired t-test p) of v vs ref."""
  seeds = sorted(set(by.get(v, {})) & set(by.get(ref, {})))
  if v == ref or not seeds:
    return "", ""
  a_ = [by[v][s][key] for s in seeds]
  b_ = [by[ref][s][key] for s in seeds]
  p = common.paired_ttest(a_, b_)[1]
  rel = f"{100 * (sum(a_) / sum(b_) - 1):+.2f}%" if sum(b_) > 0 else ""
  return rel, (f"{p:.3g}" if p == p else "")


def pm(xs: list[float], scale: float = 100.0) -> str:
  m, sd = common.mean_std(xs)
  return f"{scale * m:.2f}" + (f" ± {scale * sd:.2f}" if len(xs) > 1 else "")


def summarise(a, clean: list[dict], noise: list[dict], weights: dict[str, list[dict]]) -> str:
  """importance.md: the clean table (each variant against BPR and against its control, paired
  t-tests over seeds), the noise table (Recall@20 drops from the same variant's clean run, the
  weights' AUROC) and the AUROC tables of the small stages."""
  import collections
  command = " ".join(["python -m experiments.importance_study"] + a.argv)
  out = ["# Importance study\n", common.header_lines(a.budget, command), ""]
  by = collections.defaultdict(dict)
  for r in clean:
    by[r["variant"]][r["seed"]] = r
  if by:
    out.append(f"## Clean {a.dataset} MF (test, best-valid checkpoint)\n")
    rows = []
    for v in [v for v in VARIANTS if v in by]:
      ctrl = CONTROL.get(v, "bpr")
      seeds = sorted(by[v])
      vs_bpr, p_bpr = compare(by, v, "bpr")
      vs_ctrl, p_ctrl = compare(by, v, ctrl) if ctrl != "bpr" else ("", "")
      conv = sum(by[v][s].get("stop") == "patience" for s in seeds)
      rows.append([v, VARIANTS[v][0], f"{len(seeds)} ({conv})",
                   pm([by[v][s]["valid_recall@20"] for s in seeds]),
                   pm([by[v][s]["test_recall@20"] for s in seeds]),
                   pm([by[v][s]["test_ndcg@20"] for s in seeds]), vs_bpr, p_bpr,
                   ctrl if ctrl != "bpr" else "", vs_ctrl, p_ctrl])
    out.append(common.markdown_table(
        ["variant", "method", "seeds (stopped by patience)", "valid R@20 %", "test R@20 %",
         "test N@20 %", "R@20 vs bpr", "p", "control", "R@20 vs control", "p"], rows))
  if noise:
    out.append("\n## Robustness: test Recall@20 drop from the same variant's clean run (same seed)\n")
    drops = collections.defaultdict(dict)  # (noise, variant) -> seed -> row (+ "drop")
    for r in noise:
      base = by.get(r["variant"], {}).get(r["seed"])
      ok = base and base["test_recall@20"] > 0  # else no drop: shown with the AUROC only
      drops[(r["noise"], r["variant"])][r["seed"]] = (
          {**r, "drop": 1 - r["test_recall@20"] / base["test_recall@20"]} if ok else r)
    rows = []
    for (nz, v), rs in sorted(drops.items(), key=lambda kv: (kv[0][0], list(VARIANTS).index(kv[0][1]))):
      seeds = sorted(rs)
      bpr = drops.get((nz, "bpr"), {})
      both = [s for s in seeds if "drop" in rs[s] and "drop" in bpr.get(s, {})]
      less, p = "", ""
      if v != "bpr" and both:
        dv, db = [rs[s]["drop"] for s in both], [bpr[s]["drop"] for s in both]
        less = f"{100 * (1 - sum(dv) / sum(db)):+.1f}%" if sum(db) else ""
        pv = common.paired_ttest(dv, db)[1]
        p = f"{pv:.3g}" if pv == pv else ""
      au = [rs[s]["auroc_best"] for s in seeds if "auroc_best" in rs[s]]
      au_last = [rs[s]["auroc_last"] for s in seeds if "auroc_last" in rs[s]]
      dr = [rs[s]["drop"] for s in seeds if "drop" in rs[s]]
      rows.append([nz, v, len(seeds), pm([rs[s]["test_recall@20"] for s in seeds]),
                   pm(dr) if dr else "", less, p,
                   pm(au, 1.0) if au else "", pm(au_last, 1.0) if au_last else ""])
    out.append(common.markdown_table(
        ["noise", "variant", "seeds", "test R@20 %", "drop %",
         "drop reduction vs bpr's (+: smaller drop)", "p", "weight AUROC (best epoch)",
         "weight AUROC (last)"], rows))
    out.append("The drop is against the same variant's clean run of the same seed (a scaled "
               "control's noisy and clean runs have their own c, each from its reference's "
               "run); the reduction and its paired t-test use the seeds BPR has too.\n")
    plot_auroc(a, noise)
  for stage, rs in weights.items():
    if not rs:
      continue
    truth = "rating >= 4" if stage == "ml100k" else "clean (not planted)"
    out.append(f"\n## {stage}: AUROC of the learned weight vs {truth}\n")
    out.append(common.markdown_table(
        ["variant", "test R@20 %", "AUROC", "mean w (true)", "mean w (false)"],
        [[r["variant"], f"{100 * r['test_recall@20']:.2f}",
          f"{r['auroc']:.3f}" if "auroc" in r else "", f"{r.get('w_true', float('nan')):.3f}",
          f"{r.get('w_false', float('nan')):.3f}"] for r in rs]))
  text = "\n".join(out)
  common.write_text(os.path.join(a.root, "importance.md"), text)
  plot_clean(a, by)
  return text


def plot_auroc(a, noise: list[dict]) -> None:
  """noise_auroc.png: each TIL variant's weight AUROC over training, mean over seeds."""
  import collections

  import numpy as np
  plt = common.pyplot()
  traces = collections.defaultdict(list)
  for r in noise:
    t = auroc_trace(os.path.join(a.root, "noise", r["noise"], r["variant"], f"seed{r['seed']}"))
    if t:
      traces[(r["noise"], r["variant"])].append(dict(t))
  if not plt or not traces:
    return
  fig, ax = plt.subplots(figsize=(7.5, 3.5))
  colors = plt.get_cmap("tab20").colors   # one colour per variant (the default cycle has 10)
  for n, ((nz, v), ts) in enumerate(sorted(traces.items())):
    epochs = sorted(set.intersection(*(set(t) for t in ts)))
    ax.plot(epochs, [np.mean([t[e] for t in ts]) for e in epochs], label=f"{v} ({nz}, {len(ts)} seeds)",
            color=colors[n % len(colors)], ls=("-", "--")[n // len(colors) % 2])
  ax.axhline(0.5, color="grey", lw=0.8, ls=":")
  ax.set_xlabel("epoch")
  ax.set_ylabel("weight AUROC (clean vs injected)")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  fig.savefig(os.path.join(a.root, "noise_auroc.png"), dpi=120)


def plot_clean(a, by) -> None:
  plt = common.pyplot()
  if not plt or not by:
    return
  names = [v for v in VARIANTS if v in by]
  means = [common.mean_std([r["test_recall@20"] for r in by[v].values()]) for v in names]
  fig, ax = plt.subplots(figsize=(max(7, 0.5 * len(names)), 3.2))
  ax.bar(range(len(names)), [100 * m for m, _ in means], yerr=[100 * s for _, s in means])
  ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
  ax.set_ylabel("test Recall@20 (%)")
  lo = min(100 * m for m, _ in means)
  ax.set_ylim(lo * 0.9, None)
  ax.set_title(f"{a.dataset} MF, clean")
  fig.tight_layout()
  fig.savefig(os.path.join(a.root, "clean.png"), dpi=120)


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--stage", default="all", choices=("all", "clean", "noise", "ml100k", "synthetic",
                                                    "report"))
  p.add_argument("--budget", default="cpu", choices=tuple(common.BUDGETS))
  p.add_argument("--dataset", default="gowalla", help="of the clean and noise stages (MF)")
  p.add_argument("--root", default="runs/importance")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--noise-seeds", default="0")
  p.add_argument("--noises", default=",".join(NOISES), help="noise stage: which of pos,neg,both")
  p.add_argument("--clean-variants", default=",".join(CLEAN))
  p.add_argument("--noise-variants", default=",".join(NOISE))
  p.add_argument("--small-variants", default=",".join(SMALL))
  p.add_argument("--small-epochs", type=int, default=40, help="epochs of the ml100k/synthetic runs")
  p.add_argument("--fig4-variant", default="mean_lr2")
  p.add_argument("--table1-root", default="", help="clean stage: the bpr and til_ui variants are "
                 "the Table 1 cells there (e.g. runs/table1_converged), not runs of their own; "
                 "remembered in the root for later calls")
  a = p.parse_args(argv)
  a.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command line
  a.seeds = [int(s) for s in a.seeds.split(",") if s]
  a.noise_seeds = [int(s) for s in a.noise_seeds.split(",") if s]
  a.noises = [n for n in a.noises.split(",") if n]
  if set(a.noises) - set(NOISES):
    p.error(f"--noises: unknown {', '.join(sorted(set(a.noises) - set(NOISES)))}; known: {', '.join(NOISES)}")
  for k in ("clean_variants", "noise_variants", "small_variants"):
    names = [v for v in getattr(a, k).split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
      p.error(f"--{k.replace('_', '-')}: unknown variant(s) {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    setattr(a, k, names)
  return a


def load_rows(path: str) -> list[dict]:
  import csv
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    for k, v in list(r.items()):
      if v == "":
        del r[k]  # a column this row does not have (e.g. BPR's AUROC)
        continue
      try:
        text = ("variant", "method", "noise", "budget", "stop")
        r[k] = int(v) if k == "seed" else float(v) if k not in text else v
      except ValueError:
        pass
  return rows


TABLE1_ROOT_FILE = "table1_root.txt"  # the stage root remembers its --table1-root


def main(argv=None) -> int:
  a = parse(argv)
  os.makedirs(a.root, exist_ok=True)
  remembered = os.path.join(a.root, TABLE1_ROOT_FILE)
  if a.table1_root:
    common.write_text(remembered, a.table1_root + "\n")
  elif os.path.exists(remembered):  # e.g. the report stage of a study run with --table1-root
    with open(remembered) as f:
      a.table1_root = f.read().strip()
  ledger.sync(a.root, a.table1_root)
  st = a.stage
  # `report` trains nothing: it collects the finished clean and noise cells under the root.
  clean = run_clean(a) if st in ("all", "clean") else collect_clean(a)
  noise = run_noise(a) if st in ("all", "noise") else collect_noise(a)
  weights = {}
  for stage in ("synthetic", "ml100k"):
    weights[stage] = (run_weight_stage(a, stage) if st in ("all", stage)
                      else load_rows(os.path.join(a.root, f"{stage}.csv")))
  print(summarise(a, clean, noise, weights))
  return 0


if __name__ == "__main__":
  sys.exit(main())
