"""results/cells/: a finished cell's record survives the loss of runs/ and is read, not retrained."""

import gzip
import json
import os
import shutil

import pytest

from experiments import common, ledger, table1


@pytest.fixture
def base(tmp_path, monkeypatch):
  """runs/ and results/ of a checkout, in tmp."""
  monkeypatch.setattr(ledger, "RUNS", ledger.RUNS)
  monkeypatch.setattr(ledger, "LEDGER", ledger.LEDGER)
  ledger.configure(str(tmp_path / "runs"), str(tmp_path / "results"))
  return tmp_path


def fake_cell(d, recall=0.25):
  """A finished cell's files, with what no record keeps (checkpoints, id maps, the log)."""
  os.makedirs(os.path.join(d, "checkpoints", "10"))
  for name, text in (("cell.json", '{"commit": "abc", "command": []}'), ("config.json", "{}"),
                     ("metrics.jsonl", '{"epoch": 1, "valid": {"recall@20": 0.2}}\n' * 50),
                     ("run.log", "log"), ("ids.npz", "ids"),
                     ("metrics.json", json.dumps({"valid": {"recall@20": recall}}))):
    with open(os.path.join(d, name), "w") as f:
      f.write(text)


def test_sync_records_finished_cells_and_brings_them_back(base):
  runs, rec = base / "runs", base / "results" / "cells"
  fake_cell(runs / "grid" / "a" / "seed0")
  os.makedirs(runs / "grid" / "a" / "seed1")  # started, not finished: no record
  assert ledger.sync(str(runs / "grid")) == (1, 0)
  got = sorted(os.listdir(rec / "grid" / "a" / "seed0"))
  assert got == ["cell.json", "config.json", "metrics.json", "metrics.jsonl.gz"]
  assert not (rec / "grid" / "a" / "seed1").exists()
  log = (runs / "grid" / "a" / "seed0" / "metrics.jsonl").read_bytes()
  packed = (rec / "grid" / "a" / "seed0" / "metrics.jsonl.gz").read_bytes()
  assert gzip.decompress(packed) == log and len(packed) < len(log) / 5
  # unchanged cells are not rewritten; the gzip is reproducible
  assert ledger.sync(str(runs / "grid")) == (0, 0)
  assert (rec / "grid" / "a" / "seed0" / "metrics.jsonl.gz").read_bytes() == packed
  # a new checkout: runs/ is gone, and the record brings the finished cell back
  shutil.rmtree(runs)
  assert ledger.sync(str(runs / "grid")) == (0, 1)
  back = runs / "grid" / "a" / "seed0"
  assert sorted(os.listdir(back)) == ["cell.json", "config.json", "metrics.json", "metrics.jsonl"]
  assert (back / "metrics.jsonl").read_bytes() == log
  assert common.valid_curve(str(back)) == [(1, 0.2)]
  # the whole runs folder at once (the campaign's sync), and nothing inside a cell is a cell
  shutil.rmtree(runs)
  assert ledger.sync(str(runs)) == (0, 1) and (back / "metrics.json").exists()
  os.makedirs(back / "checkpoints" / "10")
  (back / "checkpoints" / "10" / "metrics.json").write_text("{}")
  assert ledger.sync(str(runs)) == (0, 0)
  assert not (rec / "grid" / "a" / "seed0" / "checkpoints").exists()


def test_a_record_is_kept_against_other_results_unless_its_cell_just_finished(base, capsys):
  runs, rec = base / "runs", base / "results" / "cells"
  fake_cell(runs / "t" / "seed0", recall=0.25)
  assert ledger.save(str(runs / "t" / "seed0"))
  (runs / "t" / "seed0" / "metrics.json").write_text(json.dumps({"valid": {"recall@20": 0.3}}))
  assert ledger.sync(str(runs)) == (0, 0)   # another checkout's older cell: the record stays
  assert "[ledger] conflict" in capsys.readouterr().out
  assert json.loads((rec / "t" / "seed0" / "metrics.json").read_text())["valid"]["recall@20"] == 0.25
  assert ledger.save(str(runs / "t" / "seed0"), overwrite=True)   # run_cell, the cell just finished
  assert json.loads((rec / "t" / "seed0" / "metrics.json").read_text())["valid"]["recall@20"] == 0.3


def test_only_cells_under_the_runs_folder_are_recorded(base):
  fake_cell(base / "elsewhere" / "seed0")
  assert ledger.record_of(str(base / "elsewhere" / "seed0")) is None
  assert ledger.record_of(str(base / "runs")) is None
  assert not ledger.save(str(base / "elsewhere" / "seed0"))
  assert ledger.sync(str(base / "elsewhere")) == (0, 0)
  assert not (base / "results").exists()


def test_a_record_without_metrics_is_not_a_finished_cell_and_a_started_run_is_kept(base):
  runs, rec = base / "runs", base / "results" / "cells"
  os.makedirs(rec / "t" / "seed0")
  (rec / "t" / "seed0" / "config.json").write_text("{}")  # a record cut short before metrics.json
  assert not ledger.restore(str(runs / "t" / "seed0"))
  assert not (runs / "t" / "seed0").exists()
  os.makedirs(rec / "t" / "seed2")   # metrics but no config (nothing could check its identity)
  (rec / "t" / "seed2" / "metrics.json").write_text("{}")
  assert not ledger.restore(str(runs / "t" / "seed2"))
  assert ledger.finished_records() == []
  # a run started in this checkout (config.json, no metrics.json) resumes: the record stays out
  fake_cell(rec / "t" / "seed1")
  os.makedirs(runs / "t" / "seed1")
  (runs / "t" / "seed1" / "config.json").write_text('{"mine": 1}')
  assert not ledger.restore(str(runs / "t" / "seed1"))
  assert (runs / "t" / "seed1" / "config.json").read_text() == '{"mine": 1}'
  assert not (runs / "t" / "seed1" / "metrics.json").exists()


def test_a_retired_cell_takes_its_record_with_it(base):
  runs, rec = base / "runs", base / "results" / "cells"
  fake_cell(runs / "t" / "bpr" / "seed0")
  assert ledger.save(str(runs / "t" / "bpr" / "seed0"))
  kept = runs / "t" / "_stale" / "bpr" / "seed0-1"
  os.makedirs(kept.parent)
  os.replace(runs / "t" / "bpr" / "seed0", kept)
  ledger.retire(str(runs / "t" / "bpr" / "seed0"), str(kept))
  assert not (rec / "t" / "bpr" / "seed0").exists()
  assert (rec / "t" / "_stale" / "bpr" / "seed0-1" / "metrics.json").exists()


def test_a_finished_cell_is_read_back_on_a_new_checkout_not_trained(base, monkeypatch, capsys):
  """A real tiny cell: recorded when it finishes; with runs/ gone, run_cell and the Table 1
  collector read it from the record, its identity is still checked, nothing trains."""
  root = str(base / "runs" / "t1" / "synthetic_mf")
  config = common.config_path("synthetic", "mf")
  first = common.run_cell(root, "bpr/seed0", config, {"method": "bpr", "seed": 0}, "tiny")
  assert first is not None
  rec = base / "results" / "cells" / "t1" / "synthetic_mf" / "bpr" / "seed0"
  assert json.loads((rec / "metrics.json").read_text()) == first
  # its record times the next cell of its kind (campaign --end) from the files a run writes
  est = common.estimate_seconds(os.path.join(root, "bpr", "seed9"), config,
                                {"method": "bpr", "seed": 9}, "tiny")
  assert est is not None and est[0] == ledger.cell_seconds(str(rec)) > 0
  curve = common.valid_curve(os.path.join(root, "bpr", "seed0"))
  before = table1.collect(str(base / "runs" / "t1"))
  shutil.rmtree(base / "runs")
  monkeypatch.setattr(common.subprocess, "call", lambda *a, **k: pytest.fail("trained a cell"))
  assert common.run_cell(root, "bpr/seed0", config, {"method": "bpr", "seed": 0}, "tiny") == first
  assert common.valid_curve(os.path.join(root, "bpr", "seed0")) == curve and curve
  # other settings are still another cell
  assert common.run_cell(root, "bpr/seed0", config, {"method": "bpr", "seed": 1}, "tiny") is None
  assert "[stale] bpr/seed0: trained with seed=0 (asked 1)" in capsys.readouterr().out
  # another runner asking for the same computation (a grid point at the config's own lr) reads
  # the recorded cell, its twin; another lr or seed is not the same computation
  lr = common.cell_fields(common.cell_args(config, {}, "tiny"))["optim.lr"]
  groot = str(base / "runs" / "grid" / "synthetic_mf" / "bpr")
  assert common.twin_of(os.path.join(groot, "x", "seed0"), config,
                        {"optim.lr": lr * 2, "method": "bpr", "seed": 0}, "tiny") == ""
  assert common.twin_of(os.path.join(groot, "x", "seed0"), config,
                        {"optim.lr": lr, "method": "bpr", "seed": 1}, "tiny") == ""
  got = common.run_cell(groot, "x/seed0", config, {"optim.lr": lr, "method": "bpr", "seed": 0}, "tiny")
  assert got == first and "[twin] x/seed0: the same config finished as" in capsys.readouterr().out
  copy = json.loads(open(os.path.join(groot, "x", "seed0", "cell.json")).read())
  assert copy["twin_of"] == str(rec) and f"--config.optim.lr={lr}" in copy["command"]
  assert (base / "results" / "cells" / "grid" / "synthetic_mf" / "bpr" / "x" / "seed0"
          / "metrics.json").exists()
  assert common.stale_cell(os.path.join(groot, "x", "seed0")) == ""
  # not a twin: another method, noisy data, another budget, a field that shapes the files
  other = os.path.join(groot, "y", "seed0")
  for over, budget in (({"method": "tce"}, "tiny"), ({"data.noise": "pos"}, "tiny"),
                       ({}, "cpu"), ({"eval.weight_auroc": False}, "tiny")):
    assert common.twin_of(other, config, {"method": "bpr", "seed": 0, **over}, budget) == "", over
  # an unreadable record is passed over, not fatal
  bad = base / "results" / "cells" / "zz" / "seed0"
  fake_cell(bad)
  (bad / "config.json").write_text("<<<<<<< merge conflict")
  assert common.twin_of(other, config, {"method": "tce", "seed": 0}, "tiny") == ""
  assert "unreadable record" in capsys.readouterr().out
  shutil.rmtree(base / "runs")
  assert table1.main(["--datasets=synthetic", "--backbones=mf", "--methods=bpr", "--seeds=0",
                      "--budget=tiny", f"--root={base / 'runs' / 't1'}", "--report-only"]) == 0
  assert table1.collect(str(base / "runs" / "t1")) == before and len(before) == 1


def timed_records(base):
  """Recorded cells with timed logs under results/cells/g/: synthetic bpr 600 s and 400 s (13
  epochs each); lastfm bpr 100 s and til_ui 350 s (3.5x bpr); gowalla bpr 500 s and til_ui 1200 s
  (2.4x bpr; its BPR epoch is the nearest to synthetic's); amazon-cd bpr 20 s and til_ui 40 s
  (2.0x, the smallest ratio, and the farthest); an ml-100k bpr cell that logged
  nothing and one whose log is cut: neither times anything. Returns the helpers that wrote them:
  config_json(folder, seed, method, data) and log(seconds an epoch, epochs)."""
  config = common.config_path("synthetic", "mf")

  def config_json(d, seed, method="bpr", data="synthetic"):   # the fields the estimates read
    ident = dict(common.cell_fields(common.cell_args(config, {"method": method, "seed": seed}, "tiny")))
    del ident["_files"]
    run = {"budget": ident.pop("budget"),
           "train": {"epochs": ident.pop("train.epochs"), "patience": ident.pop("train.patience")}}
    os.makedirs(d)
    (d / "config.json").write_text(json.dumps({"identity": {**ident, "data.name": data}, "config": run}))

  def log(secs, epochs=13):   # each epoch secs, every other one evaluated (secs): 20 * secs
    return "".join(json.dumps({"epoch": e, "seconds": secs, **({"eval_seconds": secs} if e % 2 else {})})
                   + "\n" for e in range(1, epochs + 1))

  for cell, text, method, data in (("bpr/seed0", log(30.0), "bpr", "synthetic"),
                                   ("bpr/seed1", log(20.0) + log(20.0, 3), "bpr", "synthetic"),
                                   ("lastfm/bpr", log(5.0), "bpr", "lastfm"),
                                   ("lastfm/til_ui", log(17.5), "til_ui", "lastfm"),
                                   ("gowalla/bpr", log(25.0), "bpr", "gowalla"),
                                   ("gowalla/til_ui", log(60.0), "til_ui", "gowalla"),
                                   ("amazon/bpr", log(1.0), "bpr", "amazon-cd"),
                                   ("amazon/til_ui", log(2.0), "til_ui", "amazon-cd"),
                                   ("ml/bpr", '{"epoch": 1, "seconds": null}\n', "bpr", "ml-100k"),
                                   ("ml/til_ui", None, "til_ui", "ml-100k")):
    d = base / "results" / "cells" / "g" / cell
    config_json(d, 0, method, data)
    (d / "cell.json").write_text('{"commit": "abc", "command": []}')
    packed = gzip.compress(log(1.0).encode() if text is None else text.encode())
    (d / "metrics.jsonl.gz").write_bytes(packed[:-9] if text is None else packed)
    (d / "metrics.json").write_text("{}")
  return config_json, log


def test_end_starts_only_the_cells_whose_recorded_time_fits(base, monkeypatch, capsys):
  """--end (common.END): a cell is estimated by the longest recorded finished cell of its kind
  (training + evaluation seconds of its log, an epoch logged twice counted once), or by this
  data's BPR cell times the method's ratio to BPR on the other data nearest in BPR's seconds per
  epoch x FALLBACK_MARGIN, less what its
  own interrupted run keeps; one that would overrun (x END_MARGIN + START_SECONDS) is passed
  over, one that fits or has no estimate starts; a stale cell is not retired for a rerun that
  cannot fit; unreadable or empty records are passed over."""
  config = common.config_path("synthetic", "mf")
  runs = base / "runs" / "g"
  monkeypatch.setattr(common, "END_MARGIN", 1.15)
  monkeypatch.setattr(common, "START_SECONDS", 120.0)
  monkeypatch.setattr(common, "FALLBACK_MARGIN", 1.5)
  config_json, log = timed_records(base)
  recs = base / "results" / "cells" / "g"
  assert ledger.cell_seconds(str(recs / "bpr" / "seed1")) == pytest.approx(400.0)  # 1-3 twice
  assert ledger.cell_seconds(str(recs / "bpr" / "seed1"), upto=2) == pytest.approx(60.0)
  assert ledger.cell_seconds(str(recs / "ml" / "bpr")) == 0.0
  assert ledger.cell_seconds(str(recs / "ml" / "til_ui")) is None
  est = common.estimate_seconds(str(runs / "bpr" / "seed2"), config, {"method": "bpr", "seed": 2}, "tiny")
  assert est[0] == pytest.approx(600.0) and "longest of 2 recorded bpr" in est[1]
  # a method first run on this data: BPR's time here x its ratio to BPR on the data whose BPR
  # epoch is nearest (gowalla's 500/13 s against synthetic's 600/13; lastfm's 100/13, with the
  # larger ratio 3.5, and amazon-cd's 20/13, with the smaller 2.0 and listed last, are farther)
  # x 1.5
  est = common.estimate_seconds(str(runs / "til_ui" / "seed0"), config, {"method": "til_ui"}, "tiny")
  assert est[0] == pytest.approx(600.0 * 2.4 * 1.5) and "(til_ui on gowalla) x 1.5" in est[1]
  # no estimate: a method recorded nowhere, another budget or run length, noisy data, data
  # with no (timed) BPR cell
  for over, budget in (({"method": "til_mi"}, "tiny"), ({}, "cpu"), ({"train.patience": 9}, "tiny"),
                       ({"data.noise": "pos"}, "tiny"), ({"data.name": "ml-100k"}, "tiny")):
    assert common.estimate_seconds(str(runs / "x"), config, {"method": "bpr", **over}, budget) is None
  # an interrupted run of its own keeps what it logged through its latest checkpoint
  mine = runs / "bpr" / "seed3"
  config_json(mine, 3)
  (mine / "metrics.jsonl").write_text(log(50.0, 3) + '{"epoch": 4, "secon')
  assert common.estimate_seconds(str(mine), config, {"method": "bpr", "seed": 3}, "tiny")[0] == 600.0
  os.makedirs(mine / "checkpoints" / "2")  # resumes after epoch 2: 150 s of it kept
  assert common.estimate_seconds(str(mine), config, {"method": "bpr", "seed": 3}, "tiny")[0] == (
      pytest.approx(450.0))
  trained = []
  monkeypatch.setattr(common.subprocess, "call", lambda cmd, **k: trained.append(cmd) or 1)
  monkeypatch.setattr(common, "END", common.time.time() + 720)   # 12 min
  for cell, method, seed in (("bpr/seed2", "bpr", 2), ("til_ui/seed0", "til_ui", 0)):
    assert common.run_cell(str(runs), cell, config, {"method": method, "seed": seed}, "tiny") is None
  out = capsys.readouterr().out
  assert "[end] bpr/seed2: not started, needs ~14 min" in out and not trained   # 600 x 1.15 + 120
  assert "[end] til_ui/seed0: not started, needs ~43 min" in out   # 2160 x 1.15 + 120
  # a stale finished cell that --rerun-stale would retrain: not retired if the rerun cannot fit
  stale = runs / "bpr" / "seed5"
  config_json(stale, 0)
  (stale / "metrics.json").write_text("{}")
  monkeypatch.setattr(common, "RERUN_STALE", True)
  assert common.run_cell(str(runs), "bpr/seed5", config, {"method": "bpr", "seed": 5}, "tiny") is None
  assert "[end] bpr/seed5: not started" in capsys.readouterr().out
  assert (stale / "metrics.json").exists() and not (runs / "_stale").exists()
  monkeypatch.setattr(common, "RERUN_STALE", False)
  common.run_cell(str(runs), "bpr/seed3", config, {"method": "bpr", "seed": 3}, "tiny")
  common.run_cell(str(runs), "til_mi/seed0", config, {"method": "til_mi", "seed": 0}, "tiny")
  assert len(trained) == 2   # the resumed one fits (450 x 1.15 + 120 < 720 s); no estimate: starts
  monkeypatch.setattr(common, "END", common.time.time() + 3600)   # a fresh cell that fits starts
  common.run_cell(str(runs), "bpr/seed4", config, {"method": "bpr", "seed": 4}, "tiny")
  assert len(trained) == 3
  monkeypatch.setattr(common, "END", common.time.time() - 1)   # past the end: nothing starts
  assert common.run_cell(str(runs), "til_mi/seed1", config, {"method": "til_mi", "seed": 1}, "tiny") is None
  assert "not started, past the end" in capsys.readouterr().out and len(trained) == 3


def test_a_cell_finished_here_sets_the_machines_pace_for_the_estimates(base, monkeypatch, capsys):
  """record_pace: a cell that finished on this machine, at half its kind's recorded seconds per
  epoch, makes later estimates the longest cell's epochs x the median seconds per epoch x 0.5,
  the fallback's ratio included; the reference leaves out twins and this machine's own cells; the
  pace is the median of the last 3 ratios, clipped; a cell with no other record of its kind is
  listed with no ratio, one outside runs/ not at all; a new machine (no runs/) has no pace."""
  config = common.config_path("synthetic", "mf")
  monkeypatch.setattr(common, "FALLBACK_MARGIN", 1.5)
  config_json, log = timed_records(base)
  runs = base / "runs" / "g"
  assert common.sitting_pace() is None
  assert common.estimate_seconds(str(runs / "bpr" / "seed3"), config,
                                 {"method": "bpr", "seed": 3}, "tiny")[0] == pytest.approx(600.0)
  # a twin (a copy of bpr/seed1's record for another runner) is not a third record of the kind
  recs = base / "results" / "cells" / "g"
  shutil.copytree(recs / "bpr" / "seed1", recs / "bpr" / "twin")
  (recs / "bpr" / "twin" / "cell.json").write_text(json.dumps({"twin_of": str(recs / "bpr" / "seed1")}))
  # bpr/seed2 ran here: 13 epochs, 300 s; its kind's records: 400/13 and 600/13 s an epoch
  # (the median of two is the upper one), so 0.5
  mine = runs / "bpr" / "seed2"
  config_json(mine, 2)
  (mine / "metrics.jsonl").write_text(log(15.0))
  (mine / "cell.json").write_text('{"commit": "abc", "command": []}')
  (mine / "metrics.json").write_text("{}")
  assert common.record_pace(str(mine)) == pytest.approx(0.5)
  assert common.sitting_pace() == pytest.approx(0.5)
  # a ratio listed under an older _kind is computed again from the cell's folder
  pace_json = base / "runs" / "pace.json"
  listed = json.loads(pace_json.read_text())
  pace_json.write_text(json.dumps({"cells": [{**listed["cells"][0], "ratio": 8.0}]}))
  assert common.sitting_pace() == pytest.approx(0.5)
  pace_json.write_text(json.dumps(listed))
  assert ledger.save(str(mine))   # its record joins the kind, but not the pace's reference
  est = common.estimate_seconds(str(runs / "bpr" / "seed3"), config, {"method": "bpr", "seed": 3}, "tiny")
  assert est[0] == pytest.approx(13 * 600.0 / 13 * 0.5) and "pace x0.50" in est[1]
  again = runs / "bpr" / "seed6"   # the same speed again: still 0.5 (0.75 if seed2 counted)
  config_json(again, 6)
  (again / "metrics.jsonl").write_text(log(15.0))
  assert common.record_pace(str(again)) == pytest.approx(0.5)
  # the fallback: this data's BPR at the pace x til_ui's ratio on gowalla (also paced: 2.4) x 1.5
  est = common.estimate_seconds(str(runs / "til_ui" / "seed0"), config, {"method": "til_ui"}, "tiny")
  assert est[0] == pytest.approx(300.0 * 2.4 * 1.5)
  # no other record of its kind: no ratio; nor for a folder outside runs/
  lone = runs / "til_mi" / "seed0"
  config_json(lone, 0, "til_mi")
  (lone / "metrics.jsonl").write_text(log(1.0))
  assert common.record_pace(str(lone)) is None
  away = base / "elsewhere" / "bpr"
  config_json(away, 2)
  (away / "metrics.jsonl").write_text(log(15.0))
  assert common.record_pace(str(away)) is None
  listed = json.loads((base / "runs" / "pace.json").read_text())["cells"]
  assert [c["cell"] for c in listed] == ["g/bpr/seed2", "g/bpr/seed6", "g/til_mi/seed0"]
  assert listed[-1]["ratio"] is None and common.sitting_pace() == pytest.approx(0.5)
  # the median of the last three ratios, clipped to PACE_RANGE
  for secs in (600.0, 600.0):   # 20x the kind's seconds per epoch (a cell run beside a suite)
    other = runs / "bpr" / f"s{secs}-{len(os.listdir(runs / 'bpr'))}"
    config_json(other, 2)
    (other / "metrics.jsonl").write_text(log(secs))
    common.record_pace(str(other))
  assert common.sitting_pace() == common.PACE_RANGE[1]
  (base / "runs" / "pace.json").write_text("{not json")
  assert common.sitting_pace() is None


def test_the_kind_of_a_cell_tells_its_epoch_cost_apart():
  """_kind: N negatives, Adam's lookahead and the outer batch make cells of one method differ
  several-fold per epoch, so they are not one kind for the estimates and the pace."""
  base = {"data.name": "lastfm", "method": "til_ui", "model.name": "mf", "train.negatives": 1,
          "til.lookahead": "sgd", "til.outer_batch": "fresh"}
  k = common._kind(base, "converged", 3000, 100)
  assert common._kind(dict(base), "converged", 3000, 100) == k
  for field, value in (("train.negatives", 16), ("til.lookahead", "optimizer"),
                       ("til.outer_batch", "valid"), ("model.name", "neumf")):
    assert common._kind({**base, field: value}, "converged", 3000, 100) != k, field
