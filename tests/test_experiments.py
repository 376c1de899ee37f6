"""The experiment runners end to end on the synthetic dataset (tiny budget), and their statistics."""

import argparse
import csv
import json
import math
import os

import pytest

from configs import default
from experiments import common, figures, importance_study, table1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_t_distribution_matches_tables():
  # Two-sided critical values from standard t tables.
  for t, df in ((12.706, 1), (4.303, 2), (2.776, 4), (2.042, 30)):
    assert abs(common.t_sf2(t, df) - 0.05) < 5e-4
  assert abs(common.t_sf2(0.0, 5) - 1.0) < 1e-12
  t, p = common.paired_ttest([0.30, 0.32, 0.31], [0.28, 0.29, 0.30])
  d = [0.02, 0.03, 0.01]
  want_t = (sum(d) / 3) / (math.sqrt(sum((x - 0.02) ** 2 for x in d) / 2) / math.sqrt(3))
  assert abs(t - want_t) < 1e-9 and 0 < p < 0.2
  assert math.isnan(common.paired_ttest([1.0], [0.5])[1])


def test_auroc_with_ties():
  assert importance_study.auroc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
  assert importance_study.auroc([0.4, 0.3, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
  assert importance_study.auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5


T1_ARGS = ["--datasets=synthetic", "--backbones=mf", "--methods=bpr,tce,til_mi", "--seeds=0",
           "--budget=tiny"]


@pytest.fixture(scope="module")
def table1_root(tmp_path_factory):
  """A tiny Table 1 (synthetic MF: bpr, tce, til_mi), shared by the table and figure tests."""
  root = str(tmp_path_factory.mktemp("table1") / "t1")
  assert table1.main(T1_ARGS + [f"--root={root}"]) == 0
  return root


def test_table1_runner_is_restartable_and_reports(table1_root, capsys, tmp_path):
  root = table1_root
  args = T1_ARGS + [f"--root={root}"]
  rows = read_csv(os.path.join(root, "table1.csv"))
  assert {r["method"] for r in rows} == {"bpr", "tce", "til_mi"}
  assert all(r["budget"] == "tiny" for r in rows)
  md = open(os.path.join(root, "table1.md")).read()
  assert "synthetic x mf" in md and "budget: tiny" in md
  assert "til_mi vs BPR" in md and "til_mi vs the best other baseline (tce)" in md
  # tiny = 2 epochs: every cell stopped at its maximum, and the report says so
  assert all(r["stop"] == "max_epochs" for r in rows) and "(not converged: 1/1)" in md
  assert {"best_epoch", "epochs", "stop", "valid_recall@20", "test_recall@20", "test_ndcg@20",
          "train_seconds", "commit", "best_phase"} <= set(rows[0])
  # the phase of each best checkpoint (tiny: TIL-MI pre-trains for 1 of its 2 epochs), marked in
  # the table when it is pre-training; a cell written before metrics.json named it gets it from
  # its log
  by = {r["method"]: r for r in rows}
  cell = os.path.join(root, "synthetic_mf", "til_mi", "seed0")
  log = [json.loads(x) for x in open(os.path.join(cell, "metrics.jsonl"))]
  assert by["til_mi"]["best_phase"] == next(
      x["phase"] for x in log if x["epoch"] == int(by["til_mi"]["best_epoch"]))
  assert by["bpr"]["best_phase"] == "main"
  assert ("best in pre-training, i.e. BPR: 1/1" in md) == (by["til_mi"]["best_phase"] == "pretrain")
  rows_now = table1.collect(root, "tiny")
  for r in rows_now:
    r["best_phase"] = "pretrain" if r["method"] == "til_mi" else r["best_phase"]
  marked = table1.report(argparse.Namespace(budget="tiny", argv=[], root=str(tmp_path),
                                             csv=""), rows_now)
  line = next(x for x in marked.splitlines() if x.startswith("| recall@20"))
  assert line.count("best in pre-training, i.e. BPR: 1/1") == 1   # TIL-MI's column alone
  m = json.load(open(os.path.join(cell, "metrics.json")))
  legacy = {k: v for k, v in m.items() if k != "best_phase"}
  assert common.best_phase(cell, legacy) == m["best_phase"]
  assert common.best_phase(cell, {**legacy, "best_epoch": 99}) == ""
  # A second call reads the finished cells instead of training again.
  capsys.readouterr()
  assert table1.main(args) == 0
  assert "[run]" not in capsys.readouterr().out


def test_figure_runners(tmp_path, table1_root):
  root, t1 = str(tmp_path / "figs"), table1_root
  common_args = ["--dataset=synthetic", "--budget=tiny", f"--root={root}", f"--table1-root={t1}"]
  assert figures.main(["--fig=3", "--methods=bpr", "--noises=both"] + common_args) == 0
  rows = read_csv(os.path.join(root, "fig3.csv"))
  assert [(r["method"], r["noise"]) for r in rows] == [("bpr", "both")]
  assert os.listdir(os.path.join(root, "fig3", "synthetic_mf")) == ["both"]
  with pytest.raises(SystemExit):
    figures.parse(["--fig=3", "--noises=pos,clean"])
  # K 8 is the synthetic config's own: that point is the Table 1 cell, not a new run
  assert figures.main(["--fig=5", "--clusters=2,8"] + common_args) == 0
  assert os.listdir(os.path.join(root, "fig5", "synthetic_mf")) == ["K2"]
  assert {int(r["clusters"]) for r in read_csv(os.path.join(root, "fig5.csv"))} == {2, 8}
  assert figures.main(["--fig=7"] + common_args) == 0
  assert {r["method"] for r in read_csv(os.path.join(root, "fig7.csv"))} == {"til_ui", "til_mik", "til_mi"}
  assert figures.main(["--fig=6", "--methods=bpr,til_mi"] + common_args) == 0
  rows = read_csv(os.path.join(root, "fig6.csv"))
  assert {r["method"] for r in rows} == {"bpr", "til_mi"}
  metrics = json.load(open(os.path.join(t1, "synthetic_mf", "bpr", "seed0", "metrics.json")))
  assert metrics["budget"] == "tiny"


def test_importance_clean_stage_reads_bpr_from_the_table1_cells(tmp_path, table1_root):
  """--table1-root: the clean stage's bpr (and til_ui) are the Table 1 cells, and the stage root
  remembers the folder for the report's later calls."""
  root = str(tmp_path / "imp")
  args = ["--stage=report", "--dataset=synthetic", "--budget=tiny", f"--root={root}"]
  assert importance_study.main(args) == 0
  assert read_csv(os.path.join(root, "clean.csv")) == []
  # (the figure test adds til_ui to the shared Table 1 when it runs first)
  want = {v for v in ("bpr", "til_ui") if os.path.isdir(os.path.join(table1_root, "synthetic_mf", v))}
  assert "bpr" in want
  for extra in ([f"--table1-root={table1_root}"], []):
    assert importance_study.main(args + extra) == 0
    rows = read_csv(os.path.join(root, "clean.csv"))
    assert {(r["variant"], r["seed"]) for r in rows} == {(v, "0") for v in want}, extra


def test_importance_study_synthetic_stage(tmp_path):
  root = str(tmp_path / "imp")
  assert importance_study.main(["--stage=synthetic", "--budget=tiny", "--small-epochs=2",
                                "--small-variants=bpr,mean", f"--root={root}"]) == 0
  rows = read_csv(os.path.join(root, "synthetic.csv"))
  assert [r["variant"] for r in rows] == ["bpr", "mean"]
  assert 0.0 <= float(rows[1]["auroc"]) <= 1.0
  assert "AUROC" in open(os.path.join(root, "importance.md")).read()
  # The report alone, from the CSVs (BPR rows have no AUROC column values).
  assert importance_study.main(["--stage=report", "--budget=tiny", f"--root={root}"]) == 0


def test_a_finished_cell_is_not_reused_for_other_settings(tmp_path, capsys):
  root = str(tmp_path / "t1" / "synthetic_mf")  # a Table 1 group folder (table1.collect)
  config = common.config_path("synthetic", "mf")
  first = common.run_cell(root, "bpr/seed0", config, {"method": "bpr", "seed": 0}, "tiny")
  assert first is not None
  assert common.run_cell(root, "bpr/seed0", config, {"method": "bpr", "seed": 0}, "tiny") == first
  assert common.run_cell(root, "bpr/seed0", config, {"method": "bpr", "seed": 1}, "tiny") is None
  assert "[stale] bpr/seed0: trained with seed=0 (asked 1)" in capsys.readouterr().out
  # The whole config counts, not only the command line: the same fields from another file are
  # the same cell, and an edited config file (here the L2) makes the finished cell stale.
  # A field of a config section BPR does not read (the baselines') leaves it the same cell.
  for name, body, reused in (("same", "", True), ("baselines", "  c.baselines.drop_rate = 0.3\n", True),
                             ("edited", "  c.optim.l2 = 0.5\n", False)):
    path = tmp_path / f"{name}.py"
    path.write_text("from configs.synthetic_mf import get_config as base\n\n\n"
                    f"def get_config(arg=None):\n  c = base(arg)\n{body}  return c\n")
    got = common.run_cell(root, "bpr/seed0", str(path), {"method": "bpr", "seed": 0}, "tiny")
    assert (got == first) if reused else got is None, name
  assert "[stale] bpr/seed0: trained with optim.l2=" in capsys.readouterr().out
  # The collectors' check, from the command in cell.json: as if the cell's own config file had
  # been edited since it ran (here: its command pointed at the edited file).
  workdir = os.path.join(root, "bpr", "seed0")
  assert common.stale_cell(workdir) == ""
  assert [r["seed"] for r in table1.collect(str(tmp_path / "t1"))] == [0]
  cell_json = os.path.join(workdir, "cell.json")
  saved = json.load(open(cell_json))
  cmd = [a if not a.startswith("--config=") else f"--config={tmp_path / 'edited.py'}:tiny"
         for a in saved["command"]]
  with open(cell_json, "w") as f:
    json.dump({**saved, "command": cmd}, f)
  assert common.stale_cell(workdir).startswith("optim.l2=0.0001 (asked 0.5)")
  assert table1.collect(str(tmp_path / "t1")) == []  # left out of the reports
  assert "[stale] synthetic_mf/bpr/seed0: trained with optim.l2=" in capsys.readouterr().out
  # --rerun-stale: the stale folder is kept under _stale/ and the cell runs again.
  common.RERUN_STALE = True
  try:
    again = common.run_cell(root, "bpr/seed0", str(tmp_path / "edited.py"),
                            {"method": "bpr", "seed": 0}, "tiny")
  finally:
    common.RERUN_STALE = False
  assert again is not None and again != first
  kept = os.listdir(os.path.join(root, "_stale", "bpr"))
  assert len(kept) == 1 and kept[0].startswith("seed0-")
  assert json.load(open(os.path.join(root, "_stale", "bpr", kept[0], "metrics.json"))) == first


def test_an_old_cell_command_is_judged_in_todays_form():
  """Cells of earlier sessions pinned their budget's fields on the command line; the collectors
  judge them by the command today's runners write (FILE:budget + the method's overrides), so a
  budget field changed since (a dataset's own pre-training) makes them stale."""
  old = ["--config=configs/lastfm_mf.py", "--config.train.epochs=3000", "--config.train.patience=100",
         "--config.eval.every=5", "--config.til.pretrain_epochs=100", "--config.method=til_mi",
         "--config.seed=0", "--config.budget=converged"]
  now = ["--config=configs/lastfm_mf.py:converged", "--config.method=til_mi", "--config.seed=0"]
  assert common.current_form(old) == now
  assert common.current_form(now) == now
  # a budget field at another value than the budget's was the cell's own override: it stays
  own = old[:2] + ["--config.train.patience=30"] + old[3:]
  assert common.current_form(own) == now[:1] + ["--config.train.patience=30"] + now[1:]
  assert common.cell_fields(old)["til.pretrain_epochs"] == 100
  assert common.cell_fields(now)["til.pretrain_epochs"] == default.budget_fields(
      "converged", "lastfm", "mf").get("til.pretrain_epochs")


def test_unknown_variant_is_a_usage_error():
  with pytest.raises(SystemExit) as e:
    importance_study.parse(["--small-variants=nope"])
  assert e.value.code == 2


def test_round2_importance_variants_build(tmp_path):
  """Every variant of the second importance study (#18) is a valid config that builds."""
  from configs.default import set_fields
  from experiments import importance_study
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.train import loop
  d = write_split(str(tmp_path / "d"))
  for v in importance_study.ROUND2:
    method, over = importance_study.VARIANTS[v]
    c = tiny_config(d, method=method)
    set_fields(c, over)
    loop.build(c)
  assert set(importance_study.CONTROL) >= {"authors_code", "neg4_softmax", "neg16_softmax"}


def test_loss_scale_controls_read_their_reference_run(tmp_path):
  """bpr_scaled / bpr_authors_scaled take c from the w_mean records of their reference cell
  (same stage, same seed): mean w, and B * (mean w + 1) for the authors' summed objective."""
  import json
  root = str(tmp_path)
  assert importance_study.measured_scale(root, "bpr_scaled", 0) is None   # not finished yet
  for ref, ws in (("til_ui", [0.5, 0.7, 0.9]), ("authors_code", [1.0, 2.0])):
    d = tmp_path / ref / "seed0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text("{}")
    (d / "config.json").write_text(json.dumps({"config": {"train": {"batch_size": 100}}}))
    (d / "metrics.jsonl").write_text("\n".join(
        [json.dumps({"epoch": 0, "valid": {}})] + [json.dumps({"w_mean": w}) for w in ws]))
  assert importance_study.measured_scale(root, "bpr_scaled", 0) == pytest.approx(0.7)
  assert importance_study.measured_scale(root, "bpr_authors_scaled", 0) == pytest.approx(250.0)
  assert importance_study.measured_scale(root, "bpr_scaled", 1) is None   # another seed
  assert importance_study.measured_scale(str(tmp_path.parent), "bpr_scaled", 0,
                                         prefix=tmp_path.name) == pytest.approx(0.7)  # noise/<kind>
  assert importance_study.ordered(["bpr_scaled", "bpr", "til_ui"]) == ["bpr", "til_ui", "bpr_scaled"]
  # With --table1-root the reference is the Table 1 cell (<group>/til_ui/seed0), not the stage's.
  group = tmp_path.parent / "t1" / "lastfm_mf"
  assert importance_study.measured_scale(str(group / "none"), "bpr_scaled", 0,
                                         table1_group=str(group)) is None
  (group / "til_ui").mkdir(parents=True)
  os.replace(tmp_path / "til_ui" / "seed0", group / "til_ui" / "seed0")
  assert importance_study.measured_scale(str(group / "none"), "bpr_scaled", 0,
                                         table1_group=str(group)) == pytest.approx(0.7)
  assert importance_study.home(root, "", "bpr", str(group)) == str(group / "bpr")
  assert importance_study.home(root, "", "bpr_scaled", str(group)) == os.path.join(root, "bpr_scaled")
  assert importance_study.home(root, "pos", "bpr", str(group)) == os.path.join(root, "pos", "bpr")


def test_importance_report_pairs_each_variant_with_bpr_and_its_control(tmp_path):
  """The clean table's relative differences and p-values and the noise table's drops, by hand:
  pairs by seed (a control missing a seed is compared on the common ones), the direction of each
  comparison, and the AUROC columns."""
  import argparse
  a = argparse.Namespace(root=str(tmp_path), dataset="lastfm", budget="tiny", argv=[])

  def r(v, seed, test, noise="none", **kw):
    return {"variant": v, "method": importance_study.VARIANTS[v][0], "seed": seed, "noise": noise,
            "valid_recall@20": test, "test_recall@20": test, "test_ndcg@20": test / 2,
            "stop": "patience", **kw}
  clean = [r("bpr", 0, 0.20), r("bpr", 1, 0.22), r("bpr", 2, 0.30),
           r("til_ui", 0, 0.21), r("til_ui", 1, 0.24), r("til_ui", 2, 0.30),
           r("bpr_scaled", 0, 0.25), r("bpr_scaled", 1, 0.19)]      # no seed 2
  noise = [r("bpr", 0, 0.10, "pos"), r("bpr", 1, 0.154, "pos"),
           r("til_ui", 0, 0.168, "pos", auroc_best=0.6, auroc_last=0.7),
           r("til_ui", 1, 0.192, "pos", auroc_best=0.8, auroc_last=0.9),
           r("til_ui", 3, 0.2, "pos", auroc_best=0.5, auroc_last=0.5)]   # no clean seed 3
  text = importance_study.summarise(a, clean, noise, {})

  def cells(prefix):
    line = next(x for x in text.splitlines() if x.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")]
  til = cells("| til_ui |")
  assert til[2] == "3 (3)"
  assert til[6] == f"{100 * (0.75 / 0.72 - 1):+.2f}%"                 # vs bpr, seeds 0-2
  _, p = common.paired_ttest([0.21, 0.24, 0.30], [0.20, 0.22, 0.30])
  assert til[7] == f"{p:.3g}"
  assert til[8] == "bpr_scaled" and til[9] == f"{100 * (0.45 / 0.44 - 1):+.2f}%"  # seeds 0, 1
  assert cells("| bpr_scaled |")[6] == f"{100 * (0.44 / 0.42 - 1):+.2f}%"
  # drops: bpr 0.5, 0.3; til_ui 0.2, 0.2 -> (0.4 vs 0.8) 50% smaller than bpr's
  pos = cells("| pos | til_ui |")
  assert pos[2] == "3" and pos[4] == "20.00 ± 0.00" and pos[5] == "+50.0%"
  assert pos[7] == "0.63 ± 0.15" and pos[8] == "0.70 ± 0.20"   # seed 3 has AUROC, no drop
  assert cells("| pos | bpr |")[4] == "40.00 ± 14.14"


def test_noise_rows_take_the_auroc_of_the_best_epoch(tmp_path):
  """collect_noise: the AUROC logged at the best epoch (the last evaluation at or before it)
  and at the last evaluation, from the cell's metrics.jsonl."""
  import argparse
  import json
  a = argparse.Namespace(root=str(tmp_path), dataset="lastfm", budget="tiny", argv=[])
  d = tmp_path / "noise" / "pos" / "til_ui" / "seed0"
  d.mkdir(parents=True)
  (d / "metrics.json").write_text(json.dumps({
      "budget": "tiny", "method": "til_ui", "best_epoch": 10, "epochs": 20, "stop": "patience",
      "train_seconds": 1.0, "valid": {"recall@20": 0.1}, "test": {"recall@20": 0.1, "ndcg@20": 0.05}}))
  (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in (
      {"epoch": 5, "weight_auroc": 0.55}, {"epoch": 7, "loss": 0.3}, {"epoch": 10, "weight_auroc": 0.61},
      {"epoch": 15, "weight_auroc": 0.7}, {"epoch": 20, "weight_auroc": 0.72})))
  (row,) = importance_study.collect_noise(a)
  assert row["auroc_best"] == 0.61 and row["auroc_last"] == 0.72


def test_report_regenerates_from_finished_cells_and_trains_nothing(tmp_path, monkeypatch,
                                                                    capsys):
  """experiments.report: Table 1, Figure 7 and the importance tables from fake finished cells;
  an unfinished cell is left out, not run."""
  import json

  from experiments import report

  def cell(d, test, method):
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "budget": "converged", "best_epoch": 50, "epochs": 150, "stop": "patience",
        "method": method, "train_seconds": 1.0, "valid": {"recall@20": test, "ndcg@20": test / 2},
        "test": {"recall@20": test, "ndcg@20": test / 2}}))
  t1 = tmp_path / "t1"
  for seed, (b, u) in enumerate(((0.20, 0.22), (0.21, 0.22))):
    cell(t1 / "lastfm_mf" / "bpr" / f"seed{seed}", b, "bpr")
    cell(t1 / "lastfm_mf" / "til_ui" / f"seed{seed}", u, "til_ui")
    cell(tmp_path / "imp" / "lastfm" / "clean" / "bpr" / f"seed{seed}", b, "bpr")
  (t1 / "lastfm_mf" / "til_mi" / "seed0").mkdir(parents=True)   # started, not finished
  monkeypatch.setattr(common.subprocess, "call", lambda *a, **k: pytest.fail("trained a cell"))
  res = tmp_path / "results"
  assert report.main([f"--table1-root={t1}", f"--figures-root={tmp_path / 'fig'}",
                      f"--importance-root={tmp_path / 'imp'}", f"--results={res}", "--seeds=0,1"]) == 0
  rows = (res / "table1_converged.csv").read_text().splitlines()
  assert len(rows) == 1 + 4 and "20.50 ± 0.71" in (res / "table1_converged.md").read_text()
  # its command names the CSV in results/, not the staging folder it was written to
  assert f"--csv={res / 'table1_converged.csv'}`" in (res / "table1_converged.md").read_text()
  fig7 = (res / "converged_lastfm_mf" / "fig7.csv").read_text().splitlines()
  assert len(fig7) == 1 + 2   # til_ui's two seeds; til_mi unfinished, til_mik absent
  assert "| bpr | bpr | 2 (2) |" in (res / "importance_converged_lastfm.md").read_text()
  # a checkout that lacks a cell (its folder and record gone) does not shrink the tables
  import shutil
  shutil.rmtree(t1 / "lastfm_mf" / "til_ui" / "seed1")
  table = (res / "table1_converged.csv").read_text()
  args = [f"--table1-root={t1}", f"--figures-root={tmp_path / 'fig'}",
          f"--importance-root={tmp_path / 'imp'}", f"--results={res}", "--seeds=0,1"]
  # ... and does not hold back a table that gained a cell (the importance study's)
  cell(tmp_path / "imp" / "lastfm" / "clean" / "til_ui" / "seed0", 0.23, "til_ui")
  md = (res / "table1_converged.md").read_text()
  assert report.main(args) == 2
  err = capsys.readouterr().err
  assert "table1_converged.csv: 4 rows there, 3" in err and "converged_lastfm_mf/fig7.csv" in err
  assert (res / "table1_converged.csv").read_text() == table
  assert (res / "table1_converged.md").read_text() == md   # kept with its CSV
  assert len((res / "converged_lastfm_mf" / "fig7.csv").read_text().splitlines()) == 1 + 2
  assert "| til_ui | til_ui | 1 (1) |" in (res / "importance_converged_lastfm.md").read_text()
  assert len((res / "importance_converged_lastfm_clean.csv").read_text().splitlines()) == 1 + 3
  assert [p.name for p in res.iterdir() if p.name.startswith(".report-")] == []
  assert report.main(args + ["--allow-fewer"]) == 0
  assert len((res / "table1_converged.csv").read_text().splitlines()) == 1 + 3


def test_report_counts_a_curve_by_its_curves_not_its_points(tmp_path):
  """report._rows: a curve table (an `epoch` column, e.g. fig6) loses an entry only when a curve
  goes, not when a rerun cell stopped earlier and logged fewer epochs."""
  from experiments import report
  curve, plain = tmp_path / "fig6.csv", tmp_path / "t.csv"
  curve.write_text("method,epoch,train_seconds,valid_recall@20\nbpr,5,1,0.1\nbpr,10,2,0.2\n"
                   "til_mi,5,1,0.1\n")
  plain.write_text("method,seed\nbpr,0\nbpr,1\n\n")
  assert report._rows(str(curve)) == 2 and report._rows(str(plain)) == 2
  curve.write_text("method,epoch,train_seconds,valid_recall@20\nbpr,5,1,0.1\ntil_mi,5,1,0.1\n")
  assert report._rows(str(curve)) == 2


def test_til_ui_default_is_the_paper_mode(tmp_path):
  """The round-2 `til_ui` variant (and Table 1's til_ui) stands for `paper`: for TIL-UI the two
  configs train to the same numbers (they differ only in the clustering loss's fields)."""
  from configs.default import set_fields
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.train import loop
  d = write_split(str(tmp_path / "d"))
  import json

  def run(v):  # the per-epoch training records (loss, weights' mean and spread), no timings
    method, over = importance_study.VARIANTS[v]
    c = tiny_config(d, method=method, epochs=2)
    set_fields(c, over)
    loop.train_and_evaluate(c, str(tmp_path / v))
    recs = [json.loads(line) for line in open(tmp_path / v / "metrics.jsonl")]
    return [{k: x for k, x in r.items() if not k.endswith("seconds")} for r in recs]
  til_ui = run("til_ui")
  assert til_ui and all("w_mean" in r for r in til_ui)
  assert til_ui == run("paper")
  assert til_ui != run("softmax")   # the records do tell variants apart


def test_point_report_pairs_each_method_with_bpr_and_its_table1_cells(tmp_path):
  """experiments.report --points: the Table 1 methods at another grid point. Hand-computed: the
  differences 0.01, 0.02, 0.03 give t = 0.02 / (0.01 / sqrt 3) with 2 df, whose two-sided p is
  1 - t / sqrt(t^2 + 2) = 1 - sqrt(12 / 14)."""
  from experiments import report

  def cell(path, test, budget="converged"):
    os.makedirs(path)
    with open(os.path.join(path, "metrics.json"), "w") as f:
      json.dump({"budget": budget, "best_epoch": 50, "epochs": 150, "stop": "patience",
                 "valid": {"recall@20": test - 0.01, "ndcg@20": 0.1},
                 "test": {"recall@20": test, "ndcg@20": test / 2}, "train_seconds": 1.0}, f)
  grid_root, t1 = str(tmp_path / "g"), str(tmp_path / "t1")
  for s, (b, t) in enumerate(((0.20, 0.21), (0.22, 0.24), (0.24, 0.27))):
    cell(os.path.join(grid_root, "lastfm_mf", "bpr", "l20.015", f"seed{s}"), b)
    cell(os.path.join(grid_root, "lastfm_mf", "til_ui", "l20.015", f"seed{s}"), t)
    # its Table 1 cells: below by 0.02 on every seed
    cell(os.path.join(t1, "lastfm_mf", "til_ui", f"seed{s}"), t - 0.02)
  cell(os.path.join(grid_root, "lastfm_mf", "bpr", "l20.015", "seed9"), 0.9, budget="tiny")
  # the value as typed (1.5e-2) names the folder the grid wrote (l20.015)
  rows, text = report.point_report(grid_root, t1, "lastfm_mf", "optim.l2", "1.5e-2",
                                   ["bpr", "til_ui", "pris"])
  assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for m in ("bpr", "til_ui")
                                                      for s in range(3)]  # not the tiny seed 9
  p = 1 - math.sqrt(12 / 14)
  til = [c.strip() for c in next(line for line in text.splitlines()
                                 if line.startswith("| til_ui")).split("|")]
  assert til[-3] == f"+{100 * (0.72 / 0.66 - 1):.1f}% (p = {p:.2g})"  # vs BPR at the point
  own = til[-2]  # vs its Table 1 cells: the same +0.02 on every seed, so p ~ 0
  assert own.startswith(f"+{100 * (0.72 / 0.66 - 1):.1f}% (p = ") and float(own.split("p = ")[1][:-1]) < 1e-6
  assert "| bpr | 3 | 21.00 ± 2.00 | 22.00 ± 2.00 |" in text


def test_a_dataset_budget_applies_to_its_configs_and_an_override_wins(monkeypatch):
  """configs/default.py DATASET_BUDGETS: a budget's per-dataset fields reach the cells of that
  dataset through `path:budget`, not the other datasets', and a cell's own override wins."""
  from configs import default
  monkeypatch.setitem(default.DATASET_BUDGETS, "converged", {"synthetic": {"til.pretrain_epochs": 7}})
  monkeypatch.setattr(common, "_FIELDS", {})
  synthetic, lastfm = common.config_path("synthetic", "mf"), common.config_path("lastfm", "mf")
  assert common.cell_args(synthetic, {"seed": 1}, "converged") == [
      f"--config={synthetic}:converged", "--config.seed=1"]
  def fields(config, overrides, budget):
    return common.cell_fields(common.cell_args(config, overrides, budget))
  got = fields(synthetic, {"method": "til_mi"}, "converged")
  assert got["til.pretrain_epochs"] == 7 and got["train.epochs"] == 3000 and got["budget"] == "converged"
  assert fields(lastfm, {}, "converged")["til.pretrain_epochs"] == \
      default.BUDGETS["converged"]["til.pretrain_epochs"]
  assert fields(synthetic, {"til.pretrain_epochs": 3}, "converged")["til.pretrain_epochs"] == 3
  assert fields(synthetic, {"til.pretrain_epochs": 3}, "tiny")["til.pretrain_epochs"] == 3
  assert "per dataset" in common.header_lines("converged", "x")


def test_a_backbone_entry_of_a_dataset_budget_wins_over_the_dataset_entry(monkeypatch):
  """DATASET_BUDGETS "<dataset>/<backbone>": that backbone's own pre-training, over the
  dataset's, through the config files too (configs/base.make sets data and model first)."""
  from configs import default
  monkeypatch.setitem(default.DATASET_BUDGETS, "converged", {
      "lastfm": {"til.pretrain_epochs": 7, "eval.every": 3}, "lastfm/neumf": {"til.pretrain_epochs": 5}})
  assert default.budget_fields("converged", "lastfm", "mf")["til.pretrain_epochs"] == 7
  got = default.budget_fields("converged", "lastfm", "neumf")
  assert got["til.pretrain_epochs"] == 5 and got["eval.every"] == 3
  assert default.budget_fields("converged", "gowalla", "neumf")["til.pretrain_epochs"] == \
      default.BUDGETS["converged"]["til.pretrain_epochs"]
  neumf = common.config_module(common.config_path("lastfm", "neumf")).get_config("converged")
  assert neumf.til.pretrain_epochs == 5 and neumf.model.name == "neumf"


def test_every_tuned_pair_has_its_own_pretraining():
  """The shipped DATASET_BUDGETS: each tuned (dataset, backbone) (a configs/*.py with TUNED) has
  its own TIL-MI pre-training, the epoch at which its tuned BPR cell (seed 0) reaches 94% of its
  best valid Recall@20: the epoch_94pct of that cell's row in the grid CSVs its TUNED names, or
  (LightGCN's grid predates the column) from the row's recorded BPR cell's log."""
  import glob

  from configs import default
  from experiments import grid
  per = default.DATASET_BUDGETS["converged"]
  checked, tuned = {}, []
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*_*.py"))):
    mod = common.config_module(os.path.relpath(path, ROOT))
    if not getattr(mod, "TUNED", None):
      continue
    c = mod.get_config("converged")
    d, b = c.data.name, c.model.name
    tuned.append((d, b))
    want = per[f"{d}/{b}"]["til.pretrain_epochs"]
    assert c.til.pretrain_epochs == want, (d, b)
    for grid_csv in mod.TUNED:
      for r in read_csv(os.path.join(ROOT, grid_csv)):
        if (r.get("epoch_94pct") and r["seed"] == "0" and float(r.get("optim.lr", -1)) == c.optim.lr
            and float(r.get("optim.l2", -1)) == c.optim.l2):
          assert int(r["epoch_94pct"]) == want, (d, b, grid_csv)
          checked[(d, b)] = grid_csv
    cell = os.path.join(ROOT, "results", "cells", "table1_converged", common.group(d, b), "bpr", "seed0")
    if (d, b) not in checked and os.path.isdir(cell):   # the record: metrics.jsonl.gz
      assert common.epochs_to_fraction(cell, grid.PRETRAIN_PCT / 100) == want, (d, b, cell)
      checked[(d, b)] = cell
  assert set(checked) == set(tuned) and ("lastfm", "lightgcn") in checked, (tuned, checked)


def test_campaign_runs_its_steps_in_order_with_the_base_folders(monkeypatch, capsys):
  """experiments.campaign: the steps' names are unique, every grid parses, and a run calls each
  runner's main once, in order, with {runs} / {results} filled in; a failed step is reported."""
  import importlib

  from experiments import campaign, grid
  assert len(set(campaign.NAMES)) == len(campaign.NAMES)
  for name, module, args, *_ in campaign.STEPS:
    importlib.import_module(module)
    for a in args:
      if a.startswith("--grid=") or a.startswith("--fixed="):
        assert grid.parse_grid(a.split("=", 1)[1]), name
  calls = []
  for module in {s[1] for s in campaign.STEPS}:
    monkeypatch.setattr(importlib.import_module(module), "main",
                        lambda argv, m=module: calls.append((m, argv)) or (m == "experiments.table1"))
  first, last = "lastfm-mf-til-mi-kl-items", "lastfm-mf-til-ui-l2-fine"
  assert campaign.main([f"--from={first}", f"--to={last}", "--runs=/R", "--results=/S"]) == 1
  assert [m for m, _ in calls] == ["experiments.grid", "experiments.table1", "experiments.grid"]
  assert "--root=/R/grid" in calls[0][1] and "--out=/S/grid_lastfm_mf_til_mi_kl_items.csv" in calls[0][1]
  assert "--root=/R/table1_converged" in calls[1][1]
  assert "1 step(s) failed: lastfm-mf-table1" in capsys.readouterr().err
  assert campaign.main(["--list", f"--from={last}", f"--to={last}", "--runs=/R", "--results=/S"]) == 0
  assert "grid_l2fine" in capsys.readouterr().out
  # a step made to rerun the cells a config edit made stale (RERUN) runs with RERUN_STALE set,
  # the steps around it without
  from experiments import common
  monkeypatch.setattr(common, "RERUN_STALE", False)
  seen = []
  for module in {s[1] for s in campaign.STEPS}:
    monkeypatch.setattr(importlib.import_module(module), "main",
                        lambda argv: seen.append(common.RERUN_STALE) or 0)
  first, last = "lastfm-lightgcn-bpr-loss-scale", "gowalla-mf-bpr-grid"
  assert campaign.main([f"--from={first}", f"--to={last}", "--runs=/R", "--results=/S"]) == 0
  assert seen == [False, True, True, True, False] and common.RERUN_STALE is False
  last = "lastfm-lightgcn-table1-tuned"
  assert campaign.main(["--list", f"--from={last}", f"--to={last}", "--runs=/R", "--results=/S"]) == 0
  assert "(reruns its stale cells)" in capsys.readouterr().out


def test_config_parses_follow_edits_of_the_config_files(monkeypatch):
  """common.cell_fields re-imports configs.* when a file under configs/ changed (a campaign
  process outlives edits); while none changed the parses are cached."""
  import sys
  args = common.cell_args(common.config_path("lastfm", "mf"), {"seed": 3}, "tiny")
  first = common.cell_fields(args)
  module = sys.modules["configs.base"]
  assert common.cell_fields(args) is first and sys.modules["configs.base"] is module
  monkeypatch.setattr(common, "_configs_stamp", lambda: ("edited",))
  again = common.cell_fields(args)
  assert again == first and again is not first and sys.modules["configs.base"] is not module


def test_campaign_counts_the_finished_cells_of_each_step(tmp_path, monkeypatch):
  from experiments import campaign
  step = dict((s[0], s) for s in campaign.STEPS)
  runs = str(tmp_path)
  fine = campaign.cells(step["lastfm-mf-til-ui-l2-fine"], runs)
  assert fine == [os.path.join(runs, "grid_l2fine", "lastfm_mf", "til_ui", "l20.015", f"seed{s}")
                  for s in range(3)]
  t1 = campaign.cells(step["lastfm-lightgcn-table1"], runs)
  assert len(t1) == 12 and t1[0] == os.path.join(runs, "table1_converged", "lastfm_lightgcn",
                                                 "bpr", "seed0")
  fig3 = campaign.cells(step["lastfm-mf-fig3"], runs)
  assert len(fig3) == 45 and fig3[0] == os.path.join(runs, "figures_converged", "fig3", "lastfm_mf",
                                                     "pos", "bpr", "seed0")
  fig5 = campaign.cells(step["lastfm-mf-fig5"], runs)  # K 60 is the Table 1 cell
  assert len(fig5) == 12 and not any(os.sep + "K60" + os.sep in c for c in fig5)
  noisy = campaign.cells(step["lastfm-mf-importance-noisy-pos"], runs)
  assert noisy[0] == os.path.join(runs, "importance_converged", "lastfm", "noise", "pos", "bpr",
                                  "seed0")
  os.makedirs(fine[1])
  open(os.path.join(fine[1], "metrics.json"), "w").close()
  assert campaign.progress(step["lastfm-mf-til-ui-l2-fine"], runs) == (
      "1/3 cells finished (2 cell(s) with no estimate)")   # nothing recorded to time them by
  # the cells left, timed by common.estimate_seconds (tested in test_ledger.py)
  with monkeypatch.context() as m:
    m.setattr(common, "estimate_seconds", lambda w, *q: (1800.0, "") if w == fine[0] else None)
    assert campaign.progress(step["lastfm-mf-til-ui-l2-fine"], runs) == (
        "1/3 cells finished, ~30 min to train (1 cell(s) with no estimate)")
    m.setattr(common, "estimate_seconds", lambda w, *q: (5400.0, ""))
    assert campaign.progress(step["lastfm-mf-til-ui-l2-fine"], runs) == (
        "1/3 cells finished, ~3.0 h to train")
    m.setattr(common, "twin_of", lambda w, *q: "rec" if w == fine[0] else "")   # a twin: no training
    assert campaign.progress(step["lastfm-mf-til-ui-l2-fine"], runs) == (
        "1/3 cells finished, ~1.5 h to train")
  # a finished cell whose command no longer builds its saved config counts as stale
  with open(os.path.join(fine[1], "config.json"), "w") as f:
    json.dump({"identity": {"method": "til_ui"}, "config": {}}, f)
  with open(os.path.join(fine[1], "cell.json"), "w") as f:
    json.dump({"command": ["-m", "experiments.main", "--config=configs/lastfm_mf.py:converged"]}, f)
  assert campaign.progress(step["lastfm-mf-til-ui-l2-fine"], runs) == (
      "0/3 cells finished, 1 stale (--rerun-stale reruns them) (2 cell(s) with no estimate)")


def test_campaign_skips_a_step_whose_config_is_not_tuned_yet(monkeypatch, capsys):
  """A Table 1 row (or figure, or importance study) runs only on a config that names the grids
  that tuned it (TUNED; an importance study: BPR's and TIL-UI's), and TIL-MI only where the
  dataset's pre-training is set. (ml100k is in no campaign: its config is never tuned.)"""
  import importlib

  from experiments import campaign
  step = dict((s[0], s) for s in campaign.STEPS)
  assert campaign.untuned(step["lastfm-mf-table1"]) == []
  assert campaign.untuned(step["lastfm-mf-bpr-grid"]) == []          # a grid tunes: never waits
  row = campaign._table1("ml100k-row", "ml100k", "mf", "bpr,til_mi")
  assert campaign.untuned(row) == ["configs/ml100k_mf.py has no TUNED",
                                   "DATASET_BUDGETS has no ml100k/mf pre-training"]
  assert campaign.untuned(campaign._table1("r", "ml100k", "mf", "bpr")) == [
      "configs/ml100k_mf.py has no TUNED"]
  assert campaign.untuned(campaign._importance("i", "ml100k", "clean", "bpr")) == [
      "configs/ml100k_mf.py has no TUNED"]
  # a grid of another method runs at BPR's tuned lr and L2: it waits too (TIL-MI also for the
  # pre-training); BPR's own grids never do
  assert campaign.untuned(campaign._grid("g", "ml100k", "mf", "pris", "baselines.pris_clusters=5")) == [
      "configs/ml100k_mf.py has no TUNED"]
  assert campaign.untuned(campaign._grid("g", "ml100k", "mf", "til_mi", "til.gamma=1e-2")) == [
      "configs/ml100k_mf.py has no TUNED", "DATASET_BUDGETS has no ml100k/mf pre-training"]
  assert campaign.untuned(campaign._grid("g", "ml100k", "mf", "bpr", "optim.lr=1e-3")) == []
  assert campaign.untuned(step["lastfm-mf-til-ui-grid"]) == []
  # a grid marked TUNES gates its pair: the row waits until TUNED names it; another method's
  # grid waits only for BPR's marked grids
  gates = [campaign._grid("lastfm-mf-bpr-x", "lastfm", "mf", "bpr", "optim.lr=1e-3", out="grid_x.csv",
                          tunes=True),
           campaign._grid("lastfm-mf-pris-y", "lastfm", "mf", "pris", "baselines.pris_clusters=5",
                          out="grid_y.csv", tunes=True)]
  monkeypatch.setattr(campaign, "STEPS", [*campaign.STEPS, *gates])
  assert campaign.untuned(step["lastfm-mf-table1"]) == [
      "configs/lastfm_mf.py TUNED does not name grid_x.csv (lastfm-mf-bpr-x)",
      "configs/lastfm_mf.py TUNED does not name grid_y.csv (lastfm-mf-pris-y)"]
  assert campaign.untuned(gates[1]) == [
      "configs/lastfm_mf.py TUNED does not name grid_x.csv (lastfm-mf-bpr-x)"]
  # a row of BPR alone waits for BPR's grids, not the other methods' screens
  assert campaign.untuned(campaign._table1("r", "lastfm", "mf", "bpr")) == [
      "configs/lastfm_mf.py TUNED does not name grid_x.csv (lastfm-mf-bpr-x)"]
  assert campaign.untuned(gates[0]) == []
  # an importance study (BPR's and TIL-UI's variants) waits for BPR's and TIL-UI's grids only
  til_ui = campaign._grid("lastfm-mf-til_ui-z", "lastfm", "mf", "til_ui", "til.gen_lr=1e-2",
                          out="grid_z.csv", tunes=True)
  monkeypatch.setattr(campaign, "STEPS", [*campaign.STEPS, til_ui])
  assert campaign.untuned(campaign._importance("i", "lastfm", "clean", "bpr,til_ui")) == [
      "configs/lastfm_mf.py TUNED does not name grid_x.csv (lastfm-mf-bpr-x)",
      "configs/lastfm_mf.py TUNED does not name grid_z.csv (lastfm-mf-til_ui-z)"]
  assert campaign.untuned(step["lastfm-lightgcn-table1"]) == []   # another pair
  steps = [step["lastfm-mf-bpr-grid"], row, step["lastfm-mf-fig3"]]
  monkeypatch.setattr(campaign, "STEPS", steps)
  monkeypatch.setattr(campaign, "NAMES", [s[0] for s in steps])
  calls = []
  for module in {s[1] for s in steps}:
    monkeypatch.setattr(importlib.import_module(module), "main", lambda argv: calls.append(argv) or 0)
  assert campaign.main(["--runs=/R", "--results=/S"]) == 1
  assert len(calls) == 2  # the grid and the figure; the row waits
  # --only: the named steps alone, in the order named; an unknown name is a usage error
  calls.clear()
  assert campaign.main(["--only=lastfm-mf-fig3,lastfm-mf-bpr-grid", "--runs=/R", "--results=/S"]) == 0
  assert [a[0] for a in calls] == ["--fig=3", "--dataset=lastfm"]
  for bad in (["--only=no-such-step"], ["--only=lastfm-mf-fig3", "--from=lastfm-mf-fig3"]):
    with pytest.raises(SystemExit) as e:
      campaign.main(bad + ["--runs=/R", "--results=/S"])
    assert e.value.code == 2
  assert "ml100k-row: waits for tuning (configs/ml100k_mf.py has no TUNED" in capsys.readouterr().out


def test_campaign_until_starts_no_cell_after_its_time(monkeypatch, capsys, tmp_path):
  """--until: HH:MM today or a full date; past it no step and no cell starts; bad text is a
  usage error."""
  import datetime
  import time

  from experiments import campaign
  now = datetime.datetime(2026, 12, 2, 3, 30).timestamp()
  assert campaign.parse_until("04:10", now) == datetime.datetime(2026, 12, 2, 4, 10).timestamp()
  assert campaign.parse_until("2026-12-03T01:05") == datetime.datetime(2026, 12, 3, 1, 5).timestamp()
  assert campaign.parse_until("01:00", now) == datetime.datetime(2026, 12, 3, 1, 0).timestamp()
  for bad in ("--until=4pm", "--end=9pm"):
    with pytest.raises(SystemExit) as e:
      campaign.main([bad, "--runs=/R", "--results=/S"])
    assert e.value.code == 2
  # a runner's cell, past the time: not started, nothing trained
  monkeypatch.setattr(common.subprocess, "call", lambda *a, **k: pytest.fail("trained a cell"))
  monkeypatch.setattr(common, "UNTIL", time.time() - 1)
  assert common.run_cell(str(tmp_path), "bpr/seed0", common.config_path("synthetic", "mf"),
                         {"method": "bpr", "seed": 0}, "tiny") is None
  assert "[until] bpr/seed0: not started" in capsys.readouterr().out
  assert not (tmp_path / "bpr" / "seed0" / "cell.json").exists()
  # the campaign past its time: no step runs, and the setting does not outlive it
  monkeypatch.setattr(common, "UNTIL", None)
  past = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 120))
  assert campaign.main([f"--until={past}", "--runs=/R", "--results=/S"]) == 0
  out = capsys.readouterr().out
  assert "[until] campaign: past" in out and common.UNTIL is None
  assert f"[until] {past.replace('T', ' ')}\n" in out      # the resolved time, in the log
  # a past HH:MM is tomorrow's, and the log says so
  earlier = time.strftime("%H:%M", time.localtime(time.time() - 120))
  if time.localtime(time.time() - 120).tm_yday == time.localtime().tm_yday:   # (not at midnight)
    assert campaign.main([f"--until={earlier}", "--list", "--only=lastfm-mf-bpr-grid",
                          f"--runs={tmp_path / 'r'}", f"--results={tmp_path / 's'}"]) == 0
    assert f"--until={earlier} has passed today: tomorrow's" in capsys.readouterr().out
  # --end past: the same, and it is not left set either
  assert campaign.main([f"--end={past}", "--runs=/R", "--results=/S"]) == 0
  assert "[until] campaign: past" in capsys.readouterr().out and common.END is None
  # --end ahead: the runners see it, and the earlier of --until and --end stops new cells
  import importlib
  seen = []
  monkeypatch.setattr(importlib.import_module("experiments.grid"), "main",
                      lambda argv: seen.append((common.UNTIL, common.END)) or 0)
  at = {h: time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + h * 3600)) for h in (1, 2)}
  first = campaign.STEPS[0][0]   # a grid
  for until, end in ((2, 1), (1, 2)):
    assert campaign.main([f"--only={first}", f"--until={at[until]}", f"--end={at[end]}",
                          "--runs=/R", "--results=/S"]) == 0
    assert seen.pop() == (campaign.parse_until(at[1]), campaign.parse_until(at[end]))
  assert (common.UNTIL, common.END) == (None, None)


def test_a_grid_with_no_finished_cell_leaves_its_csv_as_it_is(tmp_path):
  """results/grid_*.csv is committed: a grid run that finishes no cell in this checkout keeps it
  (and writes no header-only file where there was none)."""
  from experiments import grid
  out = tmp_path / "grid_x.csv"
  grid.write_grid_csv(str(out), [])
  assert not out.exists()
  out.write_text("optim.lr,seed\n0.001,0\n")
  grid.write_grid_csv(str(out), [])
  assert out.read_text() == "optim.lr,seed\n0.001,0\n"
  grid.write_grid_csv(str(out), [{"optim.lr": 0.01, "seed": 1}])
  assert read_csv(str(out)) == [{"optim.lr": "0.01", "seed": "1"}]


def test_weight_drift_scores_every_generator_with_every_model_state(tmp_path):
  """experiments.weight_drift: the diagonal entries are the AUROCs the two runs logged; an
  off-diagonal one is the early generator on the full run's latest state."""
  import jax
  import numpy as np

  from experiments import weight_drift
  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.evaluation import auroc
  from til_jax.train import loop
  data = write_split(str(tmp_path / "d"))
  cfg = tiny_config(data, "til_ui", epochs=1, **{"data.noise": "pos", "eval.every": 1,
                                                  "til.gen_eps": 1e-20, "til.gen_lr": 0.05})
  loop.train_and_evaluate(cfg, str(tmp_path / "early"))
  with cfg.unlocked():
    cfg.train.epochs = 3
  loop.train_and_evaluate(cfg, str(tmp_path / "full"))
  rows = weight_drift.cross_auroc(cfg, str(tmp_path / "early"), str(tmp_path / "full"))
  got = {(r["generator"], r["model"]): r for r in rows}
  assert len(got) == 9 and got[("early", "latest")]["model_epoch"] == 3
  logged = {run: [json.loads(x) for x in open(tmp_path / run / "metrics.jsonl")][-1]["weight_auroc"]
            for run in ("early", "full")}
  assert abs(got[("early", "early")]["auroc"] - logged["early"]) < 1e-4
  assert abs(got[("latest", "latest")]["auroc"] - logged["full"]) < 1e-4
  dataset, _, method, late, consts = loop.restore(cfg, str(tmp_path / "full"), "latest")
  early = loop.restore(cfg, str(tmp_path / "early"), "latest")[3]
  users, pos = dataset.train.to_pairs()
  neg = method.sampler.sample(users, np.random.default_rng(0))
  w = loop.triplet_weights(method, late.replace(gen_params=early.gen_params), consts, users, pos, neg)
  assert abs(got[("early", "latest")]["auroc"] - auroc(w, dataset.extras["clean"])) < 1e-4
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(early.gen_params),
                                                   jax.tree.leaves(late.gen_params)))
