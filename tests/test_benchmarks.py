"""The benchmark harness runs end to end on a tiny synthetic dataset."""

import json
import sys

import numpy as np
import pytest

from benchmarks import run


def test_quick_suite_writes_every_key(tmp_path):
  out = tmp_path / "q.json"
  assert run.main(["--suite=quick", f"--out={out}"]) == 0
  r = json.loads(out.read_text())
  for key in ("bpr_mf_step_ms", "til_ui_mf_step_ms", "til_mi_mf_step_ms", "eval_valid_s",
              "bpr_mf_epoch_s", "lightgcn_epoch_s", "bpr_mf_epoch_sparse_adam_s",
              "bpr_mf_step_large_adam_ms", "bpr_mf_step_large_sparse_adam_ms",
              "til_ui_mf_step_sparse_adam_ms",
              "ratios", "machine",
              "records", "load_average_start", "load_average_end"):
    assert key in r, key
  for rec in r["records"]:
    assert {"name", "median_ms", "p10_ms", "p90_ms", "peak_rss_mb"} <= set(rec)
    assert rec["p10_ms"] <= rec["median_ms"] <= rec["p90_ms"]
  assert r["ratios"]["til_ui/bpr_mf_step"] > 0 and r["machine"]["cores"] >= 1


def test_random_dataset_has_the_requested_shape():
  ds = run.random_dataset(50, 40, 600)
  assert (ds.n_users, ds.n_items) == (50, 40)
  assert ds.train.nnz > ds.valid.nnz > 0


PEERS = ["--suite=peers", "--data=synthetic", "--bpr-epochs=2", "--lightgcn-epochs=1", "--implicit-iters=2",
         "--peers-python="]


def test_peers_suite_on_synthetic(tmp_path):
  for mod in ("torch", "recbole", "implicit"):
    pytest.importorskip(mod)
  out = tmp_path / "p.json"
  assert run.main([*PEERS, f"--out={out}"]) == 0
  r = json.loads(out.read_text())
  for key in ("recbole_bpr_epoch_s", "recbole_bpr_eval_s", "recbole_lightgcn_epoch_s",
              "recbole_lightgcn_eval_s", "implicit_bpr_epoch_s", "machine", "versions"):
    assert r[key], key
  assert len(r["records"]) == 5
  for rec in r["records"]:
    assert "error" not in rec and {"name", "median_ms", "p10_ms", "p90_ms", "peak_rss_mb"} <= set(rec)
  trained = [rec for rec in r["records"] if rec["name"].endswith("_epoch")]
  assert len(trained) == 3 and all(0 <= rec["recall@20"] <= 1 for rec in trained)
  for rec in trained[:2]:  # our evaluator on RecBole's embeddings agrees with RecBole's own
    assert rec["recall@20"] == pytest.approx(rec["recbole_recall@20"], abs=1e-3)
    assert rec["ndcg@20"] == pytest.approx(rec["recbole_ndcg@20"], abs=1e-3)


def hide(monkeypatch, package):
  """As if `package` were not installed (in this process it may already be imported)."""
  for name in [m for m in sys.modules if m == package or m.startswith(package + ".")] + [package]:
    monkeypatch.setitem(sys.modules, name, None)


def test_a_missing_peer_gives_an_error_record(tmp_path, monkeypatch):
  from benchmarks import peers
  hide(monkeypatch, "recbole")
  fake = {"name": "implicit_bpr_epoch", "median_ms": 1.0, "p10_ms": 1.0, "p90_ms": 1.0, "peak_rss_mb": 1.0}
  monkeypatch.setattr(peers, "run_implicit", lambda *a: [fake])
  out = tmp_path / "p.json"
  assert run.main([*PEERS, f"--out={out}"]) == 0  # one peer ran
  r = json.loads(out.read_text())
  errors = {rec["name"]: rec["error"] for rec in r["records"] if "error" in rec}
  assert set(errors) == {"recbole_bpr", "recbole_lightgcn"} and "not importable" in errors["recbole_bpr"]
  assert r["implicit_bpr_epoch_s"] == 1e-3 and "error" not in r
  monkeypatch.undo()
  hide(monkeypatch, "recbole")
  hide(monkeypatch, "implicit")
  assert run.main([*PEERS, f"--out={out}"]) == 2  # none ran: still a JSON report
  r = json.loads(out.read_text())
  assert "no peer ran" in r["error"] and all("error" in rec for rec in r["records"])


def test_step_profile_runs_on_synthetic(tmp_path):
  from benchmarks import profile_step
  out = tmp_path / "p.json"
  assert profile_step.main(["--data=synthetic", "--steps=2", "--optims=sparse_adam",
                            f"--out={out}"]) == 0
  r = json.loads(out.read_text())
  for optim in ("sparse_adam",):   # the row path (the dense one is the simpler)
    assert {"step", "kernels", "grad", "update"} <= set(r[f"bpr_{optim}"])
    assert {"step", "kernels", "state", "hyper", "grad", "update"} <= set(r[f"til_ui_{optim}"])
    assert r[f"til_ui_{optim}"]["kernels"] > r[f"bpr_{optim}"]["kernels"] > 0


def test_row_share_counts_neighbours():
  from benchmarks import row_share
  users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
  s = row_share.shares(users, items, 3, 3, np.array([0]), np.array([0]), np.array([0]))
  # MF: user 0 and item 0; LightGCN also user 0's items {0, 1} and item 0's users {0}
  assert (s["mf_users"], s["mf_items"]) == (1 / 3, 1 / 3)
  assert (s["lightgcn_users"], s["lightgcn_items"]) == (1 / 3, 2 / 3)
