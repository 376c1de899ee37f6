"""The one source of defaults for every run: every field, and the budgets. Dataset x backbone
configs import this and change a few fields; the library's settings (TIL's, the baselines', the
optimizers') are built from these fields and declare no defaults of their own.

Paper protocol (sec. 5.4): Adam, Xavier init, embedding 64, batch 5000, one negative per
positive, up to 3000 epochs with early stopping after 100 epochs without a better valid
Recall@20 (the `paper` budget, the default). `get_config("quick")` etc. select another budget.
"""

import ml_collections

# Budgets (`get_config(NAME)`, `--config=FILE:NAME`, the experiments' `--budget=NAME`), recorded
# in every metrics.json. paper: the paper's protocol (5.4); quick: a smoke run in minutes;
# cpu: what the 2-core CPU afforded per cell in the first experiments (10 epochs, not
# converged); converged: see below; tiny: tests.
BUDGETS = {
    "paper": {"train.epochs": 3000, "train.patience": 100, "eval.every": 10,
              "til.pretrain_epochs": 500},
    "quick": {"train.epochs": 100, "train.patience": 30, "eval.every": 10,
              "til.pretrain_epochs": 20},
    "cpu": {"train.epochs": 10, "train.patience": 10, "eval.every": 5, "til.pretrain_epochs": 3},
    # converged: the paper's protocol with evaluation every 5 epochs, so a cell stops by
    # patience (metrics.json "stop": "patience") well before its maximum; TIL-MI's pre-training
    # is stated in BUILD_NOTES.md ("converged budget") with the measurement behind it.
    "converged": {"train.epochs": 3000, "train.patience": 100, "eval.every": 5,
                  "til.pretrain_epochs": 100},
    "tiny": {"train.epochs": 2, "train.patience": 2, "eval.every": 1, "til.pretrain_epochs": 1,
             "checkpoint.every": 1},
}


# Budget fields that differ by dataset or by (dataset, backbone), applied over BUDGETS[name]:
# first the entry "<data.name>", then "<data.name>/<model.name>", which wins. TIL-MI's
# pre-training must bring BPR's embeddings close to converged before they are clustered, and
# that takes each dataset and backbone its own number of epochs (BUILD_NOTES.md, "converged
# budget"): the first epoch at which the pair's tuned BPR cell (seed 0) reaches 94% of its best
# valid Recall@20 (the grid CSVs' epoch_94pct column; experiments/grid.py). A backbone peaks at
# its own pace (on lastfm NeuMF by epoch 30, LightGCN at 710), so one dataset's figure, measured
# on MF, would stop NeuMF's TIL-MI by patience before its bilevel phase (BUILD_NOTES 2026-12-04).
# A pair without its entry gets the budget's own value; the campaign trains TIL-MI only on a
# pair with one (campaign.untuned).
DATASET_BUDGETS: dict[str, dict[str, dict]] = {"converged": {
    # BPR-MF at lr 1e-3, L2 1e-2 (configs/lastfm_mf.py): epoch 250 (results/grid_lastfm_mf_bpr.csv;
    # the row's three BPR seeds: 250 / 385 / 185)
    "lastfm/mf": {"til.pretrain_epochs": 250},
    # BPR-NeuMF at lr 1e-2, L2 1e-2: epoch 10 (results/grid_lastfm_neumf_bpr_edge.csv; best 30;
    # the row's seeds: 10 / 25 / 15)
    "lastfm/neumf": {"til.pretrain_epochs": 10},
    # BPR-LightGCN (1 layer) at lr 1e-3, L2 1e-3: epoch 300 (its Table 1 cell, seed 0, whose grid
    # predates the epoch_94pct column; best 710; the row's seeds: 300 / 285 / 235)
    "lastfm/lightgcn": {"til.pretrain_epochs": 300},
    # BPR-MGCCF (1 layer) at lr 1e-4, L2 1e-2: epoch 125 (results/grid_lastfm_mgccf_bpr_lr1e-4.csv;
    # best 295)
    "lastfm/mgccf": {"til.pretrain_epochs": 125},
    # BPR-MF at lr 1e-3, L2 1e-3 (configs/gowalla_mf.py): epoch 220
    # (results/grid_gowalla_mf_bpr_l2mid.csv)
    "gowalla/mf": {"til.pretrain_epochs": 220},
    # BPR-MF at lr 1e-3, L2 1e-2 (configs/amazon_cd_mf.py): epoch 260
    # (results/grid_amazon_cd_mf_bpr.csv)
    "amazon-cd/mf": {"til.pretrain_epochs": 260},
}}


def budget_fields(name: str, dataset: str, backbone: str) -> dict:
  """The fields budget `name` sets on a config of `dataset` (data.name) x `backbone`."""
  per = DATASET_BUDGETS.get(name, {})
  return {**BUDGETS[name], **per.get(dataset, {}), **per.get(f"{dataset}/{backbone}", {})}


def set_fields(c, overrides: dict) -> None:
  """Sets dotted fields in place: {"optim.lr": 1e-2} -> c.optim.lr = 1e-2."""
  for k, v in overrides.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v


def apply_budget(c, name: str) -> None:
  """Sets the fields of budget `name` (BUDGETS, then DATASET_BUDGETS for c.data.name and
  c.model.name) and records it in `c.budget`."""
  if name not in BUDGETS:
    raise ValueError(f"unknown budget {name!r}: {' | '.join(BUDGETS)}")
  set_fields(c, budget_fields(name, c.data.name, c.model.name))
  c.budget = name


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Every field with its default; `arg` names a budget (default: paper)."""
  c = defaults()
  apply_budget(c, arg or "paper")
  return c


def defaults() -> ml_collections.ConfigDict:
  """Every field with its default, before a budget is applied (configs.base.make applies the
  budget once data.name and model.name are the config's, so the budget's fields for that
  dataset and backbone match it)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # bpr | til_ui | til_mi | til_mik | aobpr | wbpr | pris | tce | rce | tce_bpr | rce_bpr, or a
  # method registered with til_jax.train.methods.register
  c.method = "bpr"
  c.budget = "paper"         # recorded in every result file (BUDGETS)
  c.export_embeddings = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "gowalla"    # gowalla | amazon-cd | lastfm | ml-100k | lastfm-2k | lastfm-360k | synthetic
  c.data.path = ""           # a pre-split folder (train/valid/test .txt[.gz]); overrides name
  c.data.root = ""           # looked in before $TIL_DATA_DIR and ~/.cache/til_jax
  c.data.split = "split-811-seed0"
  c.data.noise = "none"      # none | pos | neg | both  (robustness study, sec. 5.6.2)
  c.data.noise_rate = 0.5
  c.data.noise_seed = 0
  c.data.format = "auto"     # reader format when data.path is a single file
  c.data.cache_dir = ""      # "" = $XDG_CACHE_HOME/til_jax or ~/.cache/til_jax
  c.data.rating_threshold = 4.0  # explicit ratings >= this are positives
  c.data.keep_all_ratings = False  # ml-100k study: every rating is a positive, kept in extras
  c.data.kcore = 0           # iterative k-core (10 = paper); not applied to pre-split folders
  c.data.download = True     # fetch a missing named dataset (checked digests) into cache_dir

  c.model = ml_collections.ConfigDict()
  c.model.name = "mf"
  c.model.dim = 64

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"       # adam | sparse_adam | sgd: the model's optimizer (OPT_Theta)
  c.optim.lr = 1e-3
  c.optim.eps = 1e-8         # Adam's epsilon (optax default)
  c.optim.l2 = 1e-4          # on the batch's ego embedding rows, per triplet
  c.optim.weight_decay = 0.0  # coupled L2 on every parameter at every step (PyTorch Adam's
                              # weight_decay, as the authors' code: 1e-2); not with sparse_adam

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 5000
  c.train.epochs = 0         # epochs, patience, eval.every, til.pretrain_epochs: from the budget
  c.train.patience = 0
  c.train.negatives = 1      # N sampled negatives per positive (bpr, TIL; groups of N triplets)
  c.train.negative_pick = "all"  # all: mean BPR over the N | hardest: the highest-scored (DNS)
  c.train.loss_scale = 1.0   # plain BPR only: its loss times c (the control for TIL's weights)
  c.train.meta_to_train = False  # the control of til.outer_batch=valid: the meta part of valid
                                 # (til.meta_fraction, same split) joins the training data

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 0
  c.eval.ks = (20,)
  c.eval.metric = "recall@20"
  c.eval.chunk = 256
  c.eval.weight_auroc = True  # TIL on data with noise flags (data.noise, synthetic): log the
                              # AUROC of the weights, clean vs injected, at every evaluation
  c.eval.drop_cold_items = False  # True: drop held-out items without training interactions
                                  # (the old protocol; they are targets like any other by default)

  c.log = ml_collections.ConfigDict()
  c.log.tensorboard = True   # event files under <workdir>/tensorboard (tensorboardX)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 10
  c.checkpoint.keep = 2
  c.checkpoint.overwrite = False

  c.til = ml_collections.ConfigDict()
  c.til.mode = "default"     # default: the fields below | paper: exactly the paper | authors:
                             # the authors' code's choices (til/modes.py)
  c.til.alpha = 1.0          # Eq. 6 cluster-term scale (paper grid {1e-2, 1e-1, 1, 5, 10})
  c.til.gamma = 1e-4         # Eq. 11 clustering-loss weight (paper grid {1e-4 .. 1e-1})
  c.til.tau = 1.0            # Eq. 7 temperature
  c.til.n_clusters = 60      # K (paper 5.4)
  c.til.pretrain_epochs = 0  # plain BPR epochs before clustering starts (paper 5.4: 500)
  c.til.warmup_epochs = 0     # plain BPR epochs before any TIL method starts (all interests)
  c.til.refresh_every = 10   # hard memberships refreshed every N steps (paper 5.4)
  c.til.kmeans_iters = 5     # til_mik: Lloyd iterations per refresh
  c.til.eta_every = 0        # eta_u recomputed exactly every N steps; 0: once per epoch (fast)
  c.til.lr_look = 1e-3       # lookahead SGD step (Eq. 15)
  c.til.objective = "paper"  # paper: Eq. 12-15 | authors: the effective objective of the
                             # authors' code (til/bilevel.py authors_grads; til.mode=authors_code)
  c.til.gen_weight_decay = 0.0  # coupled L2 on Lambda (PyTorch Adam's weight_decay; authors 1e-1)
  c.til.loss_inputs = False  # the state also holds the triplet's BPR loss and its z-score
                             # among the user's running losses (Meta-Weight-Net style inputs)
  c.til.loss_decay = 0.9     # decay of those per-user running statistics, per batch of the user
  c.til.lookahead = "sgd"    # sgd: Eq. 15 at lr_look | optimizer: OPT_Theta's own next step
                             # (Adam's, its moments held) at optim.lr, as the real update
  c.til.gen_lr = 1e-3        # OPT_Lambda (Adam)
  c.til.gen_eps = 1e-8       # OPT_Lambda's Adam epsilon (optax's and PyTorch's default). The
                             # hypergradient of the mean losses (median norm 1e-11..4e-8) has
                             # entries of 1e-13..5e-10, below it: Adam then steps at about
                             # |g| / eps of gen_lr (BUILD_NOTES 2026-12-07); 1e-20 lets the
                             # generator step at gen_lr
  c.til.gen_l2 = 0.0
  c.til.outer_batch = "fresh"  # fresh | same | valid
  c.til.meta_fraction = 0.5  # outer_batch=valid: share of valid used for the outer loss
  c.til.activation = "sigmoid"
  c.til.weight_norm = "none"
  c.til.clip_max = 5.0
  c.til.temperature = 1.0
  c.til.reduction = "mean"
  c.til.kl_reduction = "mean"  # Eq. 9 KL summed (the paper) or averaged over items
  c.til.kl_items = "all"     # Eq. 9 over every item at every step (the paper) | batch: over the
                             # step's distinct items, T held between refreshes (as DEC trains)
  c.til.first_order = False
  c.til.row_lookahead = False  # the bilevel step on the rows the inner and outer batch touch
                               # (til_ui/til_mik on mf/neumf; same numbers as the dense step)
  c.til.freeze_epoch = 0      # > 0: after this many epochs the generator's weight of every
                             # training pair is frozen and training goes on as weighted BPR
                             # (not the paper's; til_jax/train/methods.py, issue #18). 0: off
  c.til.freeze_temper = 1.0  # the frozen weights ** this, then normalised to mean 1
  c.til.freeze_negatives = 4  # uniform negatives each pair's frozen weight is averaged over
  c.til.hypergrad = "autodiff"  # autodiff | jvp: two exact routes to Eq. 14 (til/bilevel.py)

  # Devices and hosts (til_jax.parallel): the batch is split over a 1-D "data" mesh; results
  # equal one device's within float32 rounding, so these fields may change on resume.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.backend = "shard_map"   # shard_map (jit(shard_map)) | pmap
  c.parallel.num_devices = 0         # devices per process; 0 = all (train.batch_size % total == 0)
  c.parallel.shard_embeddings = False  # split embedding rows (+ Adam moments) over the mesh
  c.parallel.coordinator = ""        # "host:port" of process 0 for several processes (or
  c.parallel.num_processes = 0       #   JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  c.parallel.process_id = -1         #   JAX_PROCESS_ID); "" = one process

  c.baselines = ml_collections.ConfigDict()
  c.baselines.drop_rate = 0.2          # T-CE / TCE-BPR max drop rate (official default)
  c.baselines.num_gradual = 30000      # optimiser steps to reach it (official default)
  c.baselines.beta = 0.25              # R-CE / RCE-BPR (paper grid; code default 0.2)
  c.baselines.wbpr_exponent = 1.0      # p(j) ~ pop_j^exponent
  c.baselines.aobpr_lambda = 0.05      # AOBPR lambda as a fraction of |I|
  c.baselines.pris_clusters = 100      # PRIS K (official default)
  c.baselines.pris_negatives = 5       # PRIS L negatives per positive (official default)
  c.baselines.pris_warmup_epochs = 1   # uniform sampling first, as the official code
  c.baselines.pris_kmeans_iters = 25
  return c
