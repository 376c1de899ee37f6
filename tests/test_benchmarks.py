"""The benchmark harness runs end to end on a tiny synthetic dataset."""

import json

from benchmarks import run


def test_quick_suite_writes_every_key(tmp_path):
  out = tmp_path / "q.json"
  assert run.main(["--suite=quick", f"--out={out}"]) == 0
  r = json.loads(out.read_text())
  for key in ("bpr_mf_step_ms", "til_ui_mf_step_ms", "til_mi_mf_step_ms", "eval_gowalla_s",
              "bpr_mf_epoch_s", "lightgcn_epoch_s", "ratios", "machine", "records"):
    assert key in r, key
  for rec in r["records"]:
    assert {"name", "median_ms", "p10_ms", "p90_ms", "peak_rss_mb"} <= set(rec)
    assert rec["p10_ms"] <= rec["median_ms"] <= rec["p90_ms"]
  assert r["ratios"]["til_ui/bpr_mf_step"] > 0 and r["machine"]["cores"] >= 1


def test_random_dataset_has_the_requested_shape():
  ds = run.random_dataset(50, 40, 600)
  assert (ds.n_users, ds.n_items) == (50, 40)
  assert ds.train.nnz > ds.valid.nnz > 0
