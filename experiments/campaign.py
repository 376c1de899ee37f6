"""The converged campaign behind RESULTS.md as one restartable command, one cell at a time.

  python -m experiments.campaign --list          # the steps in order: commands, cells finished
  python -m experiments.campaign                 # run them all (finished cells are read)
  python -m experiments.campaign --from=lastfm-baseline-knobs --to=gowalla-mf-bpr-grid
  python -m experiments.campaign --runs=/abs/runs --results=/abs/results   # from a worktree
  python -m experiments.campaign --end=09:10      # the session ends then: only cells that fit

Every step is one call of a runner (experiments.grid, table1, importance_study, figures), whose
cells are restartable: a finished cell is read, not rerun, and an interrupted one resumes, so
running the whole list again costs only the cells that are missing. Steps are listed in the
order they were (or are to be) run; the finished ones stay listed, as the record of the command
that produced each result file. Afterwards `python -m experiments.report` writes the tables.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from experiments import common, ledger

CONVERGED = "--budget=converged"
SEEDS3 = "--seeds=0,1,2"
LASTFM_MF = ["--dataset=lastfm", "--backbone=mf", CONVERGED]
BASELINES = "aobpr,wbpr,pris,tce,rce,tce_bpr,rce_bpr"
RERUN = "rerun-stale"  # a step mark: its stale cells are rerun
TUNES = "tunes"  # a step mark: a grid whose choice the config must name (TUNED) before the rows


def _grid(name: str, dataset: str, backbone: str, method: str, grid: str, seeds: str = "0",
          root: str = "grid", out: str = "", fixed: str = "", rerun_stale: bool = False,
          tunes: bool = False) -> tuple:
  """tunes: the config's TUNED must name this grid's CSV before a row, figure or importance
  study of its (dataset, backbone) runs, and before the other methods' grids if it is BPR's."""
  out = out or f"grid_{common.group(dataset, backbone)}_{method}.csv"
  return (name, "experiments.grid",
          [f"--dataset={dataset}", f"--backbone={backbone}", f"--method={method}", CONVERGED,
           f"--grid={grid}", f"--seeds={seeds}", f"--root={{runs}}/{root}",
           f"--out={{results}}/{out}"] + ([f"--fixed={fixed}"] if fixed else [])
          ) + ((RERUN,) if rerun_stale else ()) + ((TUNES,) if tunes else ())


def _table1(name: str, dataset: str, backbone: str, methods: str, rerun_stale: bool = False) -> tuple:
  """rerun_stale: the step reruns cells its configs/*.py edit made stale (a tuned knob), as
  `--rerun-stale` does for every step."""
  return (name, "experiments.table1",
          [f"--datasets={dataset}", f"--backbones={backbone}", f"--methods={methods}", SEEDS3,
           CONVERGED, "--root={runs}/table1_converged"]) + ((RERUN,) if rerun_stale else ())


def _figure(name: str, fig: str, dataset: str, backbone: str, *extra: str) -> tuple:
  """A figure on the converged cells: the clean cells are Table 1's, the others go under
  {runs}/figures_converged; the CSV and PNG go where experiments.report writes them."""
  return (name, "experiments.figures",
          [f"--fig={fig}", f"--dataset={dataset}", f"--backbone={backbone}", CONVERGED, SEEDS3,
           "--root={runs}/figures_converged", "--table1-root={runs}/table1_converged",
           f"--out={{results}}/converged_{common.group(dataset, backbone)}", *extra])


def _importance(name: str, dataset: str, stage: str, variants: str, table1: bool = False,
                seeds: str = SEEDS3) -> tuple:
  """table1: the clean stage's bpr and til_ui are the Table 1 cells (--table1-root)."""
  args = [f"--stage={stage}", f"--dataset={dataset}", CONVERGED,
          f"--root={{runs}}/importance_converged/{dataset}"]
  if table1:
    args.append("--table1-root={runs}/table1_converged")
  if stage == "clean":
    args += [f"--clean-variants={variants}", seeds]
  else:
    args += ["--noises=pos", "--noise-seeds=0,1,2", f"--noise-variants={variants}"]
  return (name, "experiments.importance_study", args)


ROUND2 = ("bpr,til_ui,bpr_scaled,authors_code,bpr_authors_scaled,bpr_wd,adam_lookahead,"
          "loss_inputs,neg4_softmax,bpr_neg4,dns4,neg16_softmax,bpr_neg16,dns16,bpr_wd1e-4,"
          "bpr_wd1e-5,bpr_wd1e-6,neg4_softmax_t10")
ROUND2_NOISE = "bpr,til_ui,bpr_scaled,authors_code,bpr_authors_scaled,adam_lookahead,loss_inputs"

# (name, runner module, argv with {runs} / {results} for the two base folders[, RERUN])
STEPS = [
    # lastfm x MF: BPR's lr x L2 on the paper's ranges, then the edge, then finer (valid only)
    _grid("lastfm-mf-bpr-grid", "lastfm", "mf", "bpr",
          "optim.lr=1e-3,1e-2,1e-4;optim.l2=1e-4,1e-5,1e-3,1e-6,1e-2"),
    _grid("lastfm-mf-bpr-l2-edge", "lastfm", "mf", "bpr", "optim.lr=1e-3,1e-2;optim.l2=3e-2,1e-1",
          out="grid_lastfm_mf_bpr_l2edge.csv"),
    _grid("lastfm-mf-bpr-l2-fine", "lastfm", "mf", "bpr", "optim.l2=1.5e-2,2e-2", "0,1,2",
          root="grid_l2fine", out="grid_lastfm_mf_bpr_l2fine.csv"),
    # TIL's own knobs on lastfm x MF (reused by the other backbones)
    _grid("lastfm-mf-til-ui-grid", "lastfm", "mf", "til_ui",
          "til.gen_lr=1e-3,1e-2;til.lr_look=1e-3,1e-2,1e-1"),
    _grid("lastfm-mf-til-ui-gen-lr-1e-4", "lastfm", "mf", "til_ui",
          "til.gen_lr=1e-4;til.lr_look=1e-3,1e-2,1e-1", out="grid_lastfm_mf_til_ui_gen_lr1e-4.csv"),
    # (TIL-MI's were run at 100 epochs of pre-training, the converged budget's then: pinned, so
    # they stay the record of what they ran; lastfm's is 250 now, configs/default.py)
    _grid("lastfm-mf-til-mi-grid", "lastfm", "mf", "til_mi", "til.alpha=0.1,1.0,10.0;til.gamma=1e-4,1e-2",
          fixed="til.pretrain_epochs=100"),
    _grid("lastfm-mf-til-mi-kl-items", "lastfm", "mf", "til_mi", "til.kl_items=batch", "0,1,2",
          out="grid_lastfm_mf_til_mi_kl_items.csv", fixed="til.pretrain_epochs=100"),
    # the lastfm x MF row, every method, 3 seeds
    _table1("lastfm-mf-table1", "lastfm", "mf", f"bpr,{BASELINES},til_ui,til_mi,til_mik"),
    # the row's TIL at BPR's best L2 of the finer grid (report --points)
    _grid("lastfm-mf-til-ui-l2-fine", "lastfm", "mf", "til_ui", "optim.l2=1.5e-2", "0,1,2",
          root="grid_l2fine", out="grid_lastfm_mf_til_ui_l2fine.csv"),
    _grid("lastfm-mf-til-mi-l2-fine", "lastfm", "mf", "til_mi", "optim.l2=1.5e-2", "0,1,2",
          root="grid_l2fine", out="grid_lastfm_mf_til_mi_l2fine.csv"),
    # the baselines' own knobs on lastfm x MF (seed 0, valid); T-CE's schedule in steps (lastfm
    # has 9 steps an epoch at batch 5000: 300 / 3000 / 30000 steps = 33 / 333 / 3333 epochs)
    *[_grid(f"lastfm-mf-{m}-knobs", "lastfm", "mf", m, g, root="grid_baselines") for m, g in (
        ("tce_bpr", "baselines.drop_rate=0.1,0.2,0.3;baselines.num_gradual=300,3000,30000"),
        ("tce", "baselines.drop_rate=0.1,0.2,0.3;baselines.num_gradual=300,3000,30000"),
        ("rce_bpr", "baselines.beta=0.1,0.25,0.5"), ("rce", "baselines.beta=0.1,0.25,0.5"),
        ("aobpr", "baselines.aobpr_lambda=0.01,0.05,0.2"), ("wbpr", "baselines.wbpr_exponent=0.5,1.0"),
        ("pris", "baselines.pris_clusters=20,100"))],
    # ... T-CE's best drop rate was the grid's smallest (0.1, at 30000 steps): one point below
    *[_grid(f"lastfm-mf-{m}-drop-edge", "lastfm", "mf", m,
            "baselines.drop_rate=0.05;baselines.num_gradual=30000", root="grid_baselines",
            out=f"grid_lastfm_mf_{m}_drop_edge.csv") for m in ("tce_bpr", "tce")],
    # ... and the samplers' best points were at their grids' uniform-most edge too (AOBPR's
    # largest lambda, WBPR's smallest exponent, PRIS's fewest clusters): one step further
    _grid("lastfm-mf-aobpr-edge", "lastfm", "mf", "aobpr", "baselines.aobpr_lambda=0.5,1.0",
          root="grid_baselines", out="grid_lastfm_mf_aobpr_edge.csv"),
    _grid("lastfm-mf-wbpr-edge", "lastfm", "mf", "wbpr", "baselines.wbpr_exponent=0.25",
          root="grid_baselines", out="grid_lastfm_mf_wbpr_edge.csv"),
    _grid("lastfm-mf-pris-edge", "lastfm", "mf", "pris", "baselines.pris_clusters=5",
          root="grid_baselines", out="grid_lastfm_mf_pris_edge.csv"),
    # the importance study, round 2 (#18), lastfm x MF
    _importance("lastfm-mf-importance-clean", "lastfm", "clean", ROUND2),
    _importance("lastfm-mf-importance-noisy-pos", "lastfm", "noise", ROUND2_NOISE),
    _grid("lastfm-mf-neg4-temperature", "lastfm", "mf", "til_ui", "til.temperature=0.1,10,100",
          root="grid_neg4", out="grid_lastfm_mf_til_ui_neg4_temperature.csv",
          fixed="train.negatives=4;til.weight_norm=group_softmax"),
    # ... and Adam's lookahead (the one variant whose weights rank the injected positives,
    # AUROC 0.82, but are flat) with its weights normalised to batch mean 1 (session 12)
    _importance("lastfm-mf-importance-adam-norm-clean", "lastfm", "clean",
                "bpr,adam_lookahead_mean,adam_lookahead_softmax"),
    _importance("lastfm-mf-importance-adam-norm-noisy-pos", "lastfm", "noise",
                "bpr,adam_lookahead_mean,adam_lookahead_softmax"),
    # ... and the generator at its nominal rate (til.gen_eps 1e-20: the paper's hypergradient is
    # below Adam's default epsilon, session 17), clean and under Noisy-Pos
    _importance("lastfm-mf-importance-gen-eps-clean", "lastfm", "clean", "bpr,til_ui,gen_eps,gen_eps_mean"),
    _importance("lastfm-mf-importance-gen-eps-noisy-pos", "lastfm", "noise",
                "bpr,til_ui,gen_eps,gen_eps_mean"),
    # ... whose weights rank the injected positives early and then flatten: with a clean outer
    # batch (a meta part of valid), against BPR that trains on that part too
    _importance("lastfm-mf-importance-gen-eps-valid-clean", "lastfm", "clean", "bpr,gen_eps_valid,bpr_meta"),
    _importance("lastfm-mf-importance-gen-eps-valid-noisy-pos", "lastfm", "noise",
                "bpr,gen_eps_valid,bpr_meta"),
    # ... and the same two at Adam's default epsilon (round 1's `mean` and `valid`), which
    # isolate the epsilon's own effect in gen_eps_mean and gen_eps_valid
    _importance("lastfm-mf-importance-eps-controls-clean", "lastfm", "clean", "bpr,mean,valid"),
    _importance("lastfm-mf-importance-eps-controls-noisy-pos", "lastfm", "noise", "bpr,mean,valid"),
    # ... whose early ranking of the injected positives fades as the model fits them: the
    # epoch-25 generator on the late model ranks them at AUROC 0.52-0.58 (experiments.
    # weight_drift, results/weight_drift_lastfm*.csv), so the state loses the signal and only
    # weights frozen per pair keep it. The weights frozen per training pair after E epochs and tempered by t
    # (til.freeze_*) on gen_eps_mean; E x t on valid (seed 0), clean and under Noisy-Pos (whose
    # valid is the held-out data a user of noisy data tunes on); own roots, since a point's
    # name omits --fixed
    *[_grid(f"lastfm-mf-freeze-grid{sfx}", "lastfm", "mf", "til_ui",
            "til.freeze_epoch=10,25,50;til.freeze_temper=0.1,0.3,1.0", root=f"grid_freeze{sfx2}",
            out=f"grid_lastfm_mf_til_ui_freeze{sfx2}.csv",
            fixed="til.gen_eps=1e-20;til.weight_norm=mean" + noise)
      for sfx, sfx2, noise in (("", "", ""),
                               ("-noisy-pos", "_noisy_pos", ";data.noise=pos;data.noise_seed=0"))],
    # ... whose best points were at t's upper edge (clean: E 50, t 1, also E's edge; Noisy-Pos:
    # E 25, t 1): one step past each edge (the same roots: the shared points are read)
    _grid("lastfm-mf-freeze-grid-edge", "lastfm", "mf", "til_ui",
          "til.freeze_epoch=50,100;til.freeze_temper=1.0,2.0", root="grid_freeze",
          out="grid_lastfm_mf_til_ui_freeze_edge.csv", fixed="til.gen_eps=1e-20;til.weight_norm=mean"),
    _grid("lastfm-mf-freeze-grid-noisy-pos-edge", "lastfm", "mf", "til_ui",
          "til.freeze_epoch=25;til.freeze_temper=1.0,2.0", root="grid_freeze_noisy_pos",
          out="grid_lastfm_mf_til_ui_freeze_noisy_pos_edge.csv",
          fixed="til.gen_eps=1e-20;til.weight_norm=mean;data.noise=pos;data.noise_seed=0"),
    # ... the two chosen points (clean valid's and Noisy-Pos valid's), 3 seeds, clean and noisy
    *[_importance(f"lastfm-mf-importance-freeze-{st}", "lastfm", stage,
                  "bpr,gen_eps_mean,freeze,freeze_noisy")
      for st, stage in (("clean", "clean"), ("noisy-pos", "noise"))],
    # ... adam_lookahead_mean (BPR's loss scale by construction) at BPR's best L2 on the fine
    # grid, against BPR's cells there (grid_lastfm_mf_bpr_l2fine.csv): is its +2% the L2 again?
    _grid("lastfm-mf-adam-lookahead-mean-l2-fine", "lastfm", "mf", "til_ui", "optim.l2=1.5e-2",
          "0,1,2", root="grid_l2fine_adam_mean",  # own root: the point name omits --fixed
          out="grid_lastfm_mf_adam_lookahead_mean_l2fine.csv",
          fixed="til.lookahead=optimizer;til.weight_norm=mean"),
    # lastfm x LightGCN (1 layer): BPR's grid (lr 1e-4 left out: the worst on MF), the row
    _grid("lastfm-lightgcn-bpr-grid", "lastfm", "lightgcn", "bpr",
          "optim.lr=1e-3,1e-2;optim.l2=1e-4,1e-3,1e-2"),
    _table1("lastfm-lightgcn-table1", "lastfm", "lightgcn", "bpr,pris,til_ui,til_mi"),
    # ... and the loss-scale control of its TIL-UI: BPR times TIL-UI's mean weight there
    # (0.617 / 0.569 / 0.578 over seeds 0-2, importance_study.measured_scale on the Table 1
    # cells; one c = 0.59 for the three seeds)
    _grid("lastfm-lightgcn-bpr-loss-scale", "lastfm", "lightgcn", "bpr", "train.loss_scale=0.59",
          "0,1,2", root="grid_loss_scale", out="grid_lastfm_lightgcn_bpr_loss_scale.csv"),
    # the baselines' tuned knobs (configs/lastfm_mf.py, from the grids above, shared by every
    # lastfm backbone) and TIL-MI's pre-training on lastfm (configs/default.py DATASET_BUDGETS:
    # then 250 epochs for every backbone, where the tuned BPR-MF reaches 94% of its best valid
    # Recall@20; per backbone since 2026-12-04, steps at the end) make those
    # methods' cells stale: rerun them (the old cells are kept in <root>/_stale/)
    _table1("lastfm-mf-table1-tuned", "lastfm", "mf", "aobpr,wbpr,pris,tce,tce_bpr,til_mi,til_mik",
            rerun_stale=True),
    _table1("lastfm-lightgcn-table1-tuned", "lastfm", "lightgcn", "pris,til_mi", rerun_stale=True),
    # ... and TIL-MI at BPR's finer-grid L2 (report --points) at the new pre-training too
    _grid("lastfm-mf-til-mi-l2-fine-tuned", "lastfm", "mf", "til_mi", "optim.l2=1.5e-2", "0,1,2",
          root="grid_l2fine", out="grid_lastfm_mf_til_mi_l2fine.csv", rerun_stale=True),
    # Gowalla and Amazon-CD x MF: BPR's grid, pruned by the lastfm evidence (L2 <= 1e-3 all
    # equal there) and by #16's measurement (lr 1e-2 peaks by epoch 10 on Gowalla, then falls)
    _grid("gowalla-mf-bpr-grid", "gowalla", "mf", "bpr", "optim.lr=3e-3,1e-3;optim.l2=1e-4,1e-2",
          tunes=True),
    # ... where L2 1e-4 beat 1e-2 at lr 1e-3 (0.1670 vs 0.1617), the reverse of lastfm: the L2
    # between them at the better lr
    _grid("gowalla-mf-bpr-l2-mid", "gowalla", "mf", "bpr", "optim.lr=1e-3;optim.l2=1e-3",
          out="grid_gowalla_mf_bpr_l2mid.csv", tunes=True),
    # ... which was best (0.1800): half a decade stronger, since on lastfm TIL's gain was a
    # stronger L2's and BPR must sit at its own best L2 for the comparison to be fair
    _grid("gowalla-mf-bpr-l2-fine", "gowalla", "mf", "bpr", "optim.lr=1e-3;optim.l2=3e-3",
          out="grid_gowalla_mf_bpr_l2fine.csv", tunes=True),
    # Amazon-CD: pruned by Gowalla's grid too (lr 3e-3 was 11% and 8% below 1e-3 at the two L2s, and
    # L2 1e-3 beat both ends by 8-11%): lr 1e-3 at L2 {1e-4, 1e-3, 1e-2}
    _grid("amazon-cd-mf-bpr-grid", "amazon-cd", "mf", "bpr", "optim.lr=1e-3;optim.l2=1e-3,1e-4,1e-2",
          tunes=True),
    # ... where L2 1e-2 was best (0.1374 vs 0.1257 at 1e-3), at the grid's edge: one step further
    _grid("amazon-cd-mf-bpr-l2-edge", "amazon-cd", "mf", "bpr", "optim.lr=1e-3;optim.l2=3e-2",
          out="grid_amazon_cd_mf_bpr_l2edge.csv", tunes=True),
    # lastfm x MF, Figures 3 (Noisy-Pos / Noisy-Neg / both; the clean runs are the row's) and 5
    # (TIL-MI's K; K 60 is the row's cell), 3 seeds
    _figure("lastfm-mf-fig3", "3", "lastfm", "mf", "--methods=bpr,pris,tce_bpr,til_ui,til_mi"),
    _figure("lastfm-mf-fig5", "5", "lastfm", "mf", "--clusters=1,5,20,60,100"),
    # --- steps below wait for their configs' tuning (`untuned`): after the two grids above, set
    # lr / L2 and TUNED in configs/{gowalla,amazon_cd}_mf.py and TIL-MI's pre-training per
    # (dataset, backbone) (the tuned cell's epoch_94pct) in configs/default.py DATASET_BUDGETS ---
    # Gowalla and Amazon-CD x MF: the row's methods' own knobs on seed 0, one point beside each
    # default along the axis that moved valid most on lastfm (PRIS: K 5 there, 100 the default;
    # TIL-UI: gen_lr; TIL-MI: gamma). The winner's cell is the row's seed-0 cell (a twin: trained
    # once), so a screen costs one cell beyond the row; the row waits until the config sets the
    # winner and names the screen in TUNED. Amazon-CD's TIL-MI screen is pruned to gamma 1e-4:
    # on Gowalla, the other large dataset, 1e-2 lost by 1.1 points of valid (0.1694 vs 0.1803):
    # its best was the last pre-training epoch, after which the clustering loss pulled valid
    # down. lastfm's alpha x gamma grid is no evidence either way (one seed; 1e-4 ahead by 0.1
    # and 0.2 points at alpha 0.1 and 1, behind at 10). The one point is the row's seed-0 cell.
    # Amazon-CD's TIL-UI screen is pruned to gen_lr 1e-3 (the default): on Gowalla the two points
    # were level on valid (0.18028 vs 0.18045), as they must be where the generator hardly moves
    # (its hypergradient's norm, median 1.2e-11 over the Gowalla cell, is 1e-3 of its Adam
    # epsilon, so each step is about 1e-3 of gen_lr either way); on lastfm 1e-3 led by 2.7%.
    *[_grid(f"{d}-mf-{m}-knobs", d, "mf", m, g, root=r, tunes=True) for d in ("gowalla", "amazon-cd")
      for m, g, r in (("pris", "baselines.pris_clusters=100,5", "grid_baselines"),
                      ("til_ui", "til.gen_lr=1e-3" + (",1e-2" if d == "gowalla" else ""), "grid"),
                      ("til_mi", "til.gamma=1e-4" + (",1e-2" if d == "gowalla" else ""), "grid"))],
    # Amazon-CD's TIL-MI at gamma 1e-4 stalled after pre-training (valid 0.1303 at epoch 270,
    # the 10th bilevel epoch, then flat at 0.127-0.130 for 100 epochs; BPR 0.1374): one edge
    # point below it, where the clustering loss hardly pulls the items
    _grid("amazon-cd-mf-til_mi-gamma-edge", "amazon-cd", "mf", "til_mi", "til.gamma=1e-6",
          out="grid_amazon_cd_mf_til_mi_edge.csv", tunes=True),
    # ... and the test of why: TIL-MI with mean-one weights (no loss scale at the switch). If it
    # does not stall, the paper's weights' mean (~0.55 then) is what holds it back, via L2
    _grid("amazon-cd-mf-til_mi-mean-weights", "amazon-cd", "mf", "til_mi", "til.weight_norm=mean",
          out="grid_amazon_cd_mf_til_mi_mean_weights.csv"),
    # Gowalla and Amazon-CD x MF rows (#16 items 2 and 3)
    _table1("gowalla-mf-table1", "gowalla", "mf", "bpr,pris,til_ui,til_mi"),
    # ... Amazon-CD's BPR seeds first: they wait only for BPR's grids (untuned), not the screens
    _table1("amazon-cd-mf-table1-bpr", "amazon-cd", "mf", "bpr"),
    _table1("amazon-cd-mf-table1", "amazon-cd", "mf", "bpr,pris,til_ui,til_mi"),
    # #18 on Gowalla and Amazon-CD: lastfm's most informative variants and their controls,
    # screened on seed 0 (bpr and til_ui are the rows' cells); a variant above BPR and its
    # control on valid gets seeds 1-2
    # Gowalla's screen has no `bpr_scaled`: that control explains a TIL-UI gain over BPR by its
    # loss scale, and Gowalla's TIL-UI has none (18.14 +- 0.06 vs 18.19 +- 0.18, 3 seeds,
    # p = 0.70); the N-negatives pair runs first (lastfm's open question: +0.8% over its control)
    *[_importance(f"{d}-mf-importance-screen", d, "clean", v, table1=True, seeds="--seeds=0")
      for d, v in (("gowalla", "bpr,til_ui,neg4_softmax_t10,bpr_neg4,loss_inputs"),
                   ("amazon-cd", "bpr,til_ui,loss_inputs,neg4_softmax_t10,bpr_neg4,bpr_scaled"))],
    # lastfm x NeuMF and x MGCCF (1 layer): BPR's grid as LightGCN's, then the rows
    *[_grid(f"lastfm-{b}-bpr-grid", "lastfm", b, "bpr", "optim.lr=1e-3,1e-2;optim.l2=1e-4,1e-3,1e-2",
            tunes=True) for b in ("neumf", "mgccf")],
    # ... NeuMF's best (lr 1e-2, L2 1e-2: valid 0.1954) is at both edges: one step past each;
    # MGCCF's best is at lr 1e-3 (0.2292, L2 inert), peaking by epoch 40: lr 1e-4 below it
    _grid("lastfm-neumf-bpr-edge", "lastfm", "neumf", "bpr", "optim.lr=1e-2,3e-2;optim.l2=1e-2,3e-2",
          out="grid_lastfm_neumf_bpr_edge.csv", tunes=True),
    _grid("lastfm-mgccf-bpr-lr-1e-4", "lastfm", "mgccf", "bpr", "optim.lr=1e-4;optim.l2=1e-4,1e-2",
          out="grid_lastfm_mgccf_bpr_lr1e-4.csv", tunes=True),
    _table1("lastfm-neumf-table1", "lastfm", "neumf", "bpr,pris,til_ui,til_mi"),
    _table1("lastfm-mgccf-table1", "lastfm", "mgccf", "bpr,pris,til_ui,til_mi"),
    # TIL-MI's pre-training per backbone (configs/default.py DATASET_BUDGETS "lastfm/<backbone>",
    # each its tuned BPR's epoch_94pct): lastfm's 250, measured on MF, outlasted NeuMF's peak
    # (epoch 30), so its TIL-MI cells stopped by patience still in pre-training (BPR's numbers);
    # NeuMF now pre-trains 10 epochs and LightGCN 300 (was 250): their TIL-MI cells again
    _table1("lastfm-neumf-table1-pretrain", "lastfm", "neumf", "til_mi", rerun_stale=True),
    _table1("lastfm-lightgcn-table1-pretrain", "lastfm", "lightgcn", "til_mi", rerun_stale=True),
]
NAMES = [s[0] for s in STEPS]


def cells(step: tuple, runs: str) -> list[str]:
  """The workdirs of the cells a step runs (a finished one holds metrics.json)."""
  return [w for w, _ in _cells(step, runs)]


def _cells(step: tuple, runs: str) -> list[tuple[str, tuple | None]]:
  """(workdir, (config, overrides, budget) the runner asks of it, or None where that needs a
  finished reference: the importance study's loss-scale controls) of each cell of a step."""
  import itertools

  from experiments import figures, grid, importance_study
  _, module, a = _step_args(step, runs)
  seeds = [int(s) for s in a.get("seeds", "0").split(",")]
  budget = a.get("budget", "converged")

  def ask(dataset, backbone, **over):
    return common.config_path(dataset, backbone), over, budget
  if module == "experiments.grid":
    g = grid.parse_grid(a["grid"])
    fixed = {k: v[0] for k, v in grid.parse_grid(a.get("fixed", "")).items()}
    points = [dict(zip(g, vals)) for vals in itertools.product(*g.values())]
    base = os.path.join(a["root"], common.group(a["dataset"], a["backbone"]), a["method"])
    return [(os.path.join(base, grid.point_name(pt), f"seed{s}"),
             ask(a["dataset"], a["backbone"], **fixed, **pt, method=a["method"], seed=s))
            for pt in points for s in seeds]
  if module == "experiments.table1":
    return [(os.path.join(a["root"], common.group(d, b), m, f"seed{s}"), ask(d, b, method=m, seed=s))
            for d in a["datasets"].split(",") for b in a["backbones"].split(",")
            for m in a["methods"].split(",") for s in seeds]
  if module == "experiments.figures":  # the cells beyond Table 1's (its clean cells)
    d, b = a["dataset"], a["backbone"]
    group = os.path.join(a["root"], f"fig{a['fig']}", common.group(d, b))
    if a["fig"] == "3":
      return [(os.path.join(group, n, m, f"seed{s}"),
               ask(d, b, method=m, seed=s, **{"data.noise": n, "data.noise_seed": s}))
              for s in seeds for m in a["methods"].split(",")
              for n in a.get("noises", ",".join(figures.NOISES)).split(",")]
    if a["fig"] == "5":
      own = figures.own_clusters(d, b, budget)
      return [(os.path.join(group, f"K{k}", f"seed{s}"),
               ask(d, b, method="til_mi", seed=s, **{"til.n_clusters": int(k)}))
              for s in seeds for k in a["clusters"].split(",") if int(k) != own]
    return []
  if module == "experiments.importance_study":
    def imp(v, s):
      return None if v in importance_study.SCALED else ask(
          a["dataset"], "mf", **importance_study.cell_overrides(v, s))
    if a["stage"] == "clean":
      t1 = (os.path.join(a["table1-root"], common.group(a["dataset"], "mf"))
            if a.get("table1-root") else "")
      return [(os.path.join(importance_study.home(os.path.join(a["root"], "clean"), "", v, t1),
                            f"seed{s}"), imp(v, s))
              for v in a["clean-variants"].split(",") for s in seeds]
    return [(os.path.join(a["root"], "noise", n, v, f"seed{s}"), None) for n in a["noises"].split(",")
            for v in a["noise-variants"].split(",") for s in a["noise-seeds"].split(",")]
  return []


def progress(step: tuple, runs: str) -> str:
  """'k/n cells finished' (and how many of those are stale: what the runner would not reuse,
  common.stale_reason, or where that needs a reference run, common.stale_cell)."""
  todo = _cells(step, runs)
  done = [(w, q) for w, q in todo if os.path.exists(os.path.join(w, "metrics.json"))]
  stale = sum(bool(common.stale_reason(w, *q) if q else common.stale_cell(w)) for w, q in done)
  left, unknown = 0.0, 0
  for w, q in todo:
    if os.path.exists(os.path.join(w, "metrics.json")):
      continue
    if q is None:   # its config needs a finished reference cell: no estimate yet
      unknown += 1
    elif not common.twin_of(w, *q):   # a twin is read, not trained
      est = common.estimate_seconds(w, *q)
      unknown += est is None
      left += est[0] if est else 0.0
  eta = ""
  if left or unknown:
    eta = ((f", ~{left / 3600:.1f} h to train" if left >= 3600 else f", ~{left / 60:.0f} min to train")
           if left else "") + (f" ({unknown} cell(s) with no estimate)" if unknown else "")
  return (f"{len(done) - stale}/{len(todo)} cells finished"
          + (f", {stale} stale (--rerun-stale reruns them)" if stale else "") + eta) if todo else ""


def untuned(step: tuple) -> list[str]:
  """What a step needs tuned first. A Table 1 row, a figure, an importance study or a grid of
  another method than BPR trains only with a configs/<dataset>_<backbone>.py whose `TUNED` names
  the grids that tuned it: at least one, and every grid step of its pair marked TUNES (for a
  grid: BPR's; for an importance study, whose variants and controls are BPR's and TIL-UI's:
  those two methods'). TIL-MI trains only on a (dataset, backbone) whose pre-training is
  measured (configs/default.py DATASET_BUDGETS). A campaign that reaches the step before that skips it."""
  _, module, a = _step_args(step)
  gates = [g for g in STEPS if TUNES in g[3:] and g[0] != step[0]]
  if module == "experiments.table1":
    pairs = [(d, b) for d in a["datasets"].split(",") for b in a["backbones"].split(",")]
    methods = a["methods"].split(",")
    mi = any(m in ("til_mi", "til_mik") for m in methods)
    # BPR's grids (lr, L2: shared by the row) and the grids of the row's own methods: a BPR-only
    # row need not wait for the other methods' knob screens, whose fields BPR does not read
    gates = [g for g in gates if _step_args(g)[2].get("method") in ("bpr", *methods)]
  elif module == "experiments.grid" and a["method"] != "bpr":  # at BPR's tuned lr and L2
    pairs, mi = [(a["dataset"], a["backbone"])], a["method"] in ("til_mi", "til_mik")
    gates = [g for g in gates if _step_args(g)[2]["method"] == "bpr"]
  elif module in ("experiments.figures", "experiments.importance_study"):
    pairs = [(a["dataset"], a.get("backbone", "mf"))]
    mi = module == "experiments.figures" and a.get("fig") in ("3", "5")
    if module == "experiments.importance_study":   # its variants are BPR's and TIL-UI's
      gates = [g for g in gates if _step_args(g)[2].get("method") in ("bpr", "til_ui")]
  else:
    return []
  # the files as they are now (common.config_module): a campaign outlives their edits
  need = []
  for d, b in pairs:
    path = common.config_path(d, b)
    tuned = {os.path.basename(t) for t in getattr(common.config_module(path), "TUNED", None) or ()}
    if not tuned:
      need.append(f"{path} has no TUNED")
      continue
    for g in gates:
      _, _, ga = _step_args(g)
      out = os.path.basename(ga["out"])
      if (ga["dataset"], ga["backbone"]) == (d, b) and out not in tuned:
        need.append(f"{path} TUNED does not name {out} ({g[0]})")
  budgets = common.config_module("configs/default.py").DATASET_BUDGETS.get("converged", {})
  # the pair's own measurement: a dataset-wide entry would hand one backbone's length to another
  return need + [f"DATASET_BUDGETS has no {d}/{b} pre-training" for d, b in pairs
                 if mi and "til.pretrain_epochs" not in budgets.get(f"{d}/{b}", {})]


def _step_args(step: tuple, runs: str = "") -> tuple[str, str, dict]:
  """(name, runner module, {flag: value}) of a step, its {runs} folder filled in."""
  name, module, args = step[:3]
  return name, module, {k[2:]: v for k, v in (x.format(runs=runs, results="").split("=", 1)
                                               for x in args if "=" in x)}


def command(step: tuple, runs: str, results: str) -> list[str]:
  name, module, args = step[:3]
  return ["python", "-m", module] + [a.format(runs=runs, results=results) for a in args]


def _run_step(i: int, step: tuple, a) -> int | None:
  """Runs one step (its runner's main, in this process); its exit code."""
  t0 = time.time()
  print(f"[step {i}/{len(STEPS)}] {step[0]}: {' '.join(command(step, a.runs, a.results)[2:])}",
        flush=True)
  waits = untuned(step)
  if waits:
    print(f"[step {i}/{len(STEPS)}] {step[0]}: waits for tuning ({'; '.join(waits)}); skipped",
          flush=True)
    return 1
  common.RERUN_STALE = a.rerun_stale or RERUN in step[3:]
  try:
    rc = importlib.import_module(step[1]).main(command(step, a.runs, a.results)[3:])
  except SystemExit as e:  # a runner's usage error (argparse): this step fails, the rest run
    rc = e.code if isinstance(e.code, int) else 2
  print(f"[step {i}/{len(STEPS)}] {step[0]}: exit {rc} after {time.time() - t0:.0f} s",
        flush=True)
  return rc


def parse_until(text: str, now: float | None = None) -> float:
  """time.time() of the next `HH:MM` (local time: today's, or tomorrow's once today's has
  passed) or of `YYYY-MM-DDTHH:MM`."""
  import datetime
  if "T" in text:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M").timestamp()
  hm = datetime.datetime.strptime(text, "%H:%M")
  now = time.time() if now is None else now
  day = datetime.datetime.fromtimestamp(now)
  at = day.replace(hour=hm.hour, minute=hm.minute, second=0, microsecond=0)
  return (at if at.timestamp() > now else at + datetime.timedelta(days=1)).timestamp()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--list", action="store_true", help="print the steps and their commands")
  p.add_argument("--from", dest="first", default=NAMES[0], choices=NAMES)
  p.add_argument("--to", dest="last", default=NAMES[-1], choices=NAMES)
  p.add_argument("--only", default="", help="NAME,NAME,...: these steps alone, in this order "
                 "(e.g. the longest cells first in a session; the tuning gates still hold)")
  p.add_argument("--runs", default="runs", help="the cells' base folder")
  p.add_argument("--results", default="results", help="where the grid CSVs go")
  p.add_argument("--rerun-stale", action="store_true",
                 help="rerun a cell whose config changed since it ran (e.g. a knob tuned in its "
                      "configs/*.py), after moving its folder to <root>/_stale/")
  p.add_argument("--until", default="", help="HH:MM (the next one: tomorrow's once today's has "
                 "passed) or YYYY-MM-DDTHH:MM: start no cell after it (a running cell finishes), "
                 "e.g. before the machine's session ends")
  p.add_argument("--end", default="", help="HH:MM or YYYY-MM-DDTHH:MM: when the machine's "
                 "session ends; nothing starts after it, and a cell starts only if its estimate "
                 "ends before it (common.estimate_seconds: the longest recorded cell of its kind, "
                 "or BPR's on its data times the method's ratio elsewhere, at this machine's "
                 "pace once a cell has finished on it, less what its own run did; "
                 f"x{common.END_MARGIN} + {common.START_SECONDS:.0f} s); a cell with no "
                 "estimate starts (as with --until). The campaign goes on to the cells that fit")
  a = p.parse_args(argv)
  times = {}
  for flag in ("until", "end"):
    try:
      times[flag] = parse_until(getattr(a, flag)) if getattr(a, flag) else None
    except ValueError:
      p.error(f"--{flag}: {getattr(a, flag)!r} is not HH:MM or YYYY-MM-DDTHH:MM")
  for flag, at in times.items():   # in the log: a past HH:MM is tomorrow's (a chained command
    if at is not None:              # that starts late runs a day longer than meant)
      text = getattr(a, flag)
      rolled = "T" not in text and time.localtime(at).tm_yday != time.localtime().tm_yday
      print(f"[{flag}] {time.strftime('%Y-%m-%d %H:%M', time.localtime(at))}"
            + (f" (--{flag}={text} has passed today: tomorrow's; give YYYY-MM-DDTHH:MM to "
               "mean today)" if rolled else ""), flush=True)
  until, end = times["until"], times["end"]
  if end is not None and (until is None or end < until):
    until = end  # nothing starts after the end either
  lo, hi = NAMES.index(a.first), NAMES.index(a.last)
  if lo > hi:
    p.error(f"--from {a.first} comes after --to {a.last}")
  picked = [n for n in a.only.split(",") if n]
  if picked and (a.first != NAMES[0] or a.last != NAMES[-1]):
    p.error("--only names the steps itself: leave out --from / --to")
  unknown = [n for n in picked if n not in NAMES]
  if unknown:
    p.error(f"--only: no step {', '.join(unknown)} (see --list)")
  numbered = ([(NAMES.index(n) + 1, STEPS[NAMES.index(n)]) for n in dict.fromkeys(picked)]
              if picked else [(i, s) for i, s in enumerate(STEPS, 1) if lo <= i - 1 <= hi])
  # finished cells are recorded in <results>/cells/ and come back from there into a new
  # checkout's empty runs folder (experiments.ledger)
  ledger.configure(a.runs, a.results)
  ledger.sync(a.runs)
  if a.list:
    for i, step in numbered:
      waits = untuned(step)
      print(f"{i:2d}. {step[0]}: {progress(step, a.runs)}"
            + (f" (waits for tuning: {'; '.join(waits)})" if waits else "")
            + f"\n    {' '.join(command(step, a.runs, a.results))}"
            + (" (reruns its stale cells)" if RERUN in step[3:] else ""))
    return 0
  failed, rerun = [], common.RERUN_STALE
  common.UNTIL, common.END = until, end
  try:
    for i, step in numbered:
      if until is not None and time.time() >= until:
        print(f"[until] campaign: past {time.strftime('%H:%M', time.localtime(until))}; step "
              f"{i} and those after it not started", flush=True)
        break
      rc = _run_step(i, step, a)
      if rc:
        failed.append(step[0])
  finally:
    common.UNTIL, common.END, common.RERUN_STALE = None, None, rerun
  if failed:
    print(f"campaign: {len(failed)} step(s) failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
