"""Peer libraries on our split: `python -m benchmarks.run --suite=peers --out=FILE.json`.

Setup (once): `bash benchmarks/peers_env.sh` builds `.venv-peers` (CPU torch 2.13.0, recbole 1.2.1,
implicit, and this package editable), so that til-jax itself never depends on torch. run.py
re-runs itself under `.venv-peers/bin/python` when the current interpreter lacks a peer
(`--peers-python=` turns that off).

What is measured, on the Gowalla split-811-seed0 of $TIL_DATA_DIR (`--data=synthetic`: the tiny
synthetic dataset), with batch 5000, embedding size 64, one uniform negative, Adam lr 1e-3:
- RecBole BPR and LightGCN (n_layers=1, reg_weight 1e-4): our split written as atomic files
  (benchmark_filename train/valid/test, no filtering); seconds per `Trainer._train_epoch`
  (negative sampling included) over `--bpr-epochs` / `--lightgcn-epochs` epochs, seconds per
  RecBole full-ranking evaluation of valid (`Trainer.evaluate`, 256 users per batch), whose
  Recall@20 / NDCG@20 are kept as `recbole_recall@20` / `recbole_ndcg@20` beside ours;
- implicit's CPU BPR (factors=63, i.e. 64 columns with its item bias; lr 0.01, reg 0.01, its own
  SGD, no batches): seconds per iteration over `--implicit-iters` iterations.
recall@20 / ndcg@20 are computed by our Evaluator (dot_score_fn) on the peer's final user / item
representations mapped back to our ids.

`--peers=` picks some of recbole_bpr, recbole_lightgcn, implicit_bpr (default: all). Each gives
one training record and (RecBole) one evaluation record in run.py's format (name, median_ms,
p10_ms, p90_ms, n, peak_rss_mb, plus the extra fields), or a record with an `error` field when it
cannot be imported or fails; the others still run, and the exit code is 0 when one of them ran.
Cost on Gowalla (2 cores, loaded): RecBole BPR ~50 s an epoch (its Python negative sampler
dominates) and ~30 s an evaluation, plus ~10 s to build its dataset; keep epochs small.
RecBole's deprecation warnings (pandas 3, torch 2.13) are silenced.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from benchmarks.timing import stats
from til_jax.data.dataset import Dataset
from til_jax.evaluation import Evaluator, dot_score_fn

MODULES = ("torch", "recbole", "implicit")
BATCH, DIM, LR = 5000, 64, 1e-3


def available() -> bool:
  return all(importlib.util.find_spec(m) is not None for m in MODULES)


def our_metrics(evaluator: Evaluator, user_repr, item_repr) -> dict:
  m = evaluator(dot_score_fn, (jnp.asarray(user_repr, jnp.float32), jnp.asarray(item_repr, jnp.float32)))
  return {"recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"]}


def import_recbole():
  """recbole 1.2.1 on numpy 2 / recent scipy: restores the names it still uses, then imports."""
  for old, new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
    if not hasattr(np, old):
      setattr(np, old, getattr(np, new))
  import scipy.sparse as sp
  if not hasattr(sp.dok_matrix, "_update"):  # LightGCN.get_norm_adj_mat
    sp.dok_matrix._update = lambda self, d: self._dict.update(d)
  import recbole.config
  import recbole.data
  import recbole.utils
  return recbole


def write_atomic(ds: Dataset, folder: str, name: str) -> None:
  os.makedirs(os.path.join(folder, name))
  for part in ("train", "valid", "test"):
    u, i = getattr(ds, part).to_pairs()
    with open(os.path.join(folder, name, f"{name}.{part}.inter"), "w") as f:
      f.write("user_id:token\titem_id:token\n")
      f.write("".join(f"{a}\t{b}\n" for a, b in zip(u.tolist(), i.tolist())))


def to_ours(emb: np.ndarray, tokens: np.ndarray, n: int) -> np.ndarray:
  """RecBole rows (row r: our id tokens[r]; row 0 is its padding) as [n, d] in our ids."""
  out = np.zeros((n, emb.shape[1]), np.float32)
  out[tokens[1:].astype(np.int64)] = emb[1:]
  return out


def run_recbole(model_name: str, ds: Dataset, evaluator: Evaluator, epochs: int) -> list[dict]:
  recbole = import_recbole()
  import torch
  key = f"recbole_{model_name.lower()}"
  with (tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp),  # its logs and checkpoints
        warnings.catch_warnings()):
    warnings.simplefilter("ignore")  # deprecations of pandas 3 / torch 2.13 in RecBole 1.2.1
    write_atomic(ds, tmp, "peers")
    cfg = {"data_path": tmp, "checkpoint_dir": os.path.join(tmp, "saved"), "use_gpu": False,
           "show_progress": False, "log_wandb": False, "state": "WARNING", "seed": 0,
           "benchmark_filename": ["train", "valid", "test"], "load_col": {"inter": ["user_id", "item_id"]},
           "filter_inter_by_user_or_item": False, "user_inter_num_interval": "[0,inf)",
           "item_inter_num_interval": "[0,inf)", "embedding_size": DIM, "train_batch_size": BATCH,
           "learner": "adam", "learning_rate": LR, "weight_decay": 0.0, "epochs": epochs,
           "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                     "dynamic": False, "candidate_num": 0},
           "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
           "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "NDCG@20",
           "eval_batch_size": 256 * (ds.n_items + 1), "n_layers": 1, "reg_weight": 1e-4}
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config also reads --key=value from argv
    try:
      config = recbole.config.Config(model=model_name, dataset="peers", config_dict=cfg)
    finally:
      sys.argv = argv
    recbole.utils.init_seed(config["seed"], config["reproducibility"])
    t0 = time.perf_counter()
    rb_ds = recbole.data.create_dataset(config)
    train_data, valid_data, _ = recbole.data.data_preparation(config, rb_ds)
    model = recbole.utils.get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = recbole.utils.get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    setup_s = time.perf_counter() - t0
    times = []
    for e in range(epochs):
      t0 = time.perf_counter()
      loss = trainer._train_epoch(train_data, e)
      times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    theirs = trainer.evaluate(valid_data, load_best_model=False)
    eval_s = [time.perf_counter() - t0]
    with torch.no_grad():
      model.eval()
      u, i = model.forward() if model_name == "LightGCN" else (model.user_embedding.weight,
                                                               model.item_embedding.weight)
      u, i = u.numpy(), i.numpy()
  user_repr = to_ours(u, rb_ds.field2id_token["user_id"], ds.n_users)
  item_repr = to_ours(i, rb_ds.field2id_token["item_id"], ds.n_items)
  train = {**stats(f"{key}_epoch", times), "epochs": epochs, "setup_s": setup_s,
           "final_loss": float(np.sum(loss)), **our_metrics(evaluator, user_repr, item_repr),
           "recbole_recall@20": float(theirs["recall@20"]), "recbole_ndcg@20": float(theirs["ndcg@20"])}
  return [train, stats(f"{key}_eval_valid_full_ranking", eval_s)]


def run_implicit(ds: Dataset, evaluator: Evaluator, iters: int) -> list[dict]:
  import scipy.sparse as sp
  from implicit.cpu.bpr import BayesianPersonalizedRanking
  tr = ds.train
  user_items = sp.csr_matrix((np.ones(tr.nnz, np.float32), tr.indices, tr.indptr),
                             shape=(ds.n_users, ds.n_items))
  model = BayesianPersonalizedRanking(factors=DIM - 1, learning_rate=0.01, regularization=0.01,
                                      iterations=iters, random_state=0)
  marks = [time.perf_counter()]
  model.fit(user_items, show_progress=False, callback=lambda *_: marks.append(time.perf_counter()))
  times = np.diff(marks).tolist()  # the first one includes fit's setup
  return [{**stats("implicit_bpr_epoch", times), "epochs": iters, "columns": int(model.item_factors.shape[1]),
           **our_metrics(evaluator, model.user_factors, model.item_factors)}]


def run(ds: Dataset, bpr_epochs: int = 5, lightgcn_epochs: int = 2, implicit_iters: int = 5,
        only: Sequence[str] = ("recbole_bpr", "recbole_lightgcn", "implicit_bpr")) -> dict:
  """The peers named in `only` on `ds`: {"records": [...], top-level seconds..., "versions": {...}}."""
  evaluator = Evaluator(ds, "valid", ks=(20,))
  drivers = {"recbole_bpr": lambda: run_recbole("BPR", ds, evaluator, bpr_epochs),
             "recbole_lightgcn": lambda: run_recbole("LightGCN", ds, evaluator, lightgcn_epochs),
             "implicit_bpr": lambda: run_implicit(ds, evaluator, implicit_iters)}
  records, top = [], {"dataset": ds.summary(), "suite": "peers"}
  if set(only) - set(drivers):
    raise ValueError(f"unknown peers {sorted(set(only) - set(drivers))}; known: {sorted(drivers)}")
  for name in only:
    try:
      recs = drivers[name]()
    except ImportError as e:
      recs = [{"name": name, "error": f"not importable: {e}"}]
    except Exception as e:  # noqa: BLE001 - one peer failing must not stop the others
      traceback.print_exc()
      recs = [{"name": name, "error": f"{type(e).__name__}: {e}"}]
    for r in recs:
      print(r, file=sys.stderr, flush=True)
      if "median_ms" in r:
        top[r["name"].replace("_eval_valid_full_ranking", "_eval") + "_s"] = r["median_ms"] / 1e3
    records += recs
  top["versions"] = {m: getattr(sys.modules.get(m), "__version__", None) for m in MODULES}
  if not any("error" not in r for r in records):
    top["error"] = "no peer ran: " + "; ".join(r["error"] for r in records)
  return {**top, "records": records}
