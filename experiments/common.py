"""What the experiment runners share: budgets, restartable cells, statistics, tables, plots.

A cell is one `python -m experiments.main` run in its own workdir. A cell whose workdir holds
metrics.json is done and is read, not rerun; an interrupted cell resumes from its checkpoint.
A finished cell under runs/ is also recorded in results/cells/ (experiments.ledger), so a new
checkout, which has no runs/, reads it back instead of training it again.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time

from configs import default
from experiments import ledger
from til_jax.train import config_check

BUDGETS = default.BUDGETS  # defined once, in configs/default.py


def group(dataset: str, backbone: str) -> str:
  """The folder of a (dataset, backbone) pair's cells in every runner: amazon-cd x mf ->
  amazon_cd_mf (as its config file, configs/amazon_cd_mf.py)."""
  return f"{dataset.replace('-', '_')}_{backbone}"


def config_path(dataset: str, backbone: str) -> str:
  """configs/<dataset>_<backbone>.py (dataset names with '-' use '_': amazon-cd, gowalla,
  lastfm, ml100k, synthetic)."""
  return os.path.join("configs", f"{group(dataset, backbone)}.py")


def cell_args(config: str, overrides: dict, budget: str) -> list[str]:
  """The config flags of a cell: the file with its budget (`path:budget`, so the budget fields of
  its dataset and backbone apply: configs/default.py DATASET_BUDGETS), then the overrides, which
  win."""
  return [f"--config={config}:{budget}"] + [f"--config.{k}={v}" for k, v in overrides.items()]


def cell_command(config: str, workdir: str, overrides: dict, budget: str) -> list[str]:
  args = cell_args(config, overrides, budget)
  return [sys.executable, "-m", "experiments.main", args[0], f"--workdir={workdir}", *args[1:]]


# Set by `experiments.campaign --rerun-stale`: a stale cell's folder is moved to
# <root>/_stale/<cell>-<time> (kept, never deleted) and the cell is run again.
RERUN_STALE = False
# Set by `experiments.campaign --until`: no cell starts (or resumes) after this time.time();
# a running cell finishes. A cell cut off by the end of a machine's session loses its folder.
UNTIL: float | None = None
# Set by `experiments.campaign --end`: the machine's session ends then. A cell starts only if
# its estimated time (estimate_seconds) ends before it; one with no estimate starts as --until
# would let it. A cell that does not fit is passed over and the next one is tried.
END: float | None = None
# The estimate's allowance: the guest varies 10-20% within a sitting. Between sessions it has
# differed up to 2x (BUILD_NOTES, sessions 9-11): the first cell of a sitting is timed by the
# longest record, the later ones at the pace the finished ones measured (sitting_pace).
END_MARGIN = 1.15
START_SECONDS = 120.0  # data loading and compilation, which no log times
FALLBACK_MARGIN = 1.5  # on an estimate carried over from other data by a method's ratio to BPR
# sitting_pace: the median of the last 3 finished cells' speed ratios, clipped (one cell run
# beside a test suite must not make the next estimate absurd).
PACE_CELLS = 3
PACE_RANGE = (0.4, 2.5)


def run_cell(root: str, cell: str, config: str, overrides: dict, budget: str,
             env: dict | None = None, train: bool = True) -> dict | None:
  """Runs (or reads) one cell; returns its metrics.json, or None if the run failed (or, with
  `train=False`, if the cell has not finished: a report of the finished cells runs none)."""
  workdir = os.path.join(root, cell)
  done = os.path.join(workdir, "metrics.json")
  ledger.restore(workdir)  # a cell finished in an earlier checkout (results/cells/)
  stale = stale_reason(workdir, config, overrides, budget)
  if stale and RERUN_STALE and train:
    if _past_until(cell) or _overruns_end(cell, workdir, config, overrides, budget, resumed=False):
      return None
    kept = os.path.join(root, "_stale", f"{cell}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    os.replace(workdir, kept)
    ledger.retire(workdir, kept)
    print(f"[stale] {cell}: trained with {stale}; moved to {kept}, rerun", flush=True)
  elif stale:
    print(f"[stale] {cell}: trained with {stale}; not reused (use another --root, or "
          "experiments.campaign --rerun-stale)", flush=True)
    return None
  if os.path.exists(done):
    ledger.save(workdir)  # (a cell finished before the record existed)
    with open(done) as f:
      return json.load(f)
  twin = twin_of(workdir, config, overrides, budget) if train else ""
  if twin:  # the same computation, finished for another runner (e.g. a grid's tuned point)
    ledger.copy_cell(twin, workdir, {"commit": cell_commit(twin), "twin_of": twin,
                                     "command": cell_command(config, workdir, overrides, budget)[1:]})
    print(f"[twin] {cell}: the same config finished as {twin}; read, not trained", flush=True)
    with open(done) as f:
      return json.load(f)
  if not train:
    print(f"[missing] {cell}: not finished; left out", flush=True)
    return None
  if _past_until(cell) or _overruns_end(cell, workdir, config, overrides, budget):
    return None
  os.makedirs(workdir, exist_ok=True)
  cmd = cell_command(config, workdir, overrides, budget)
  cell_json = os.path.join(workdir, "cell.json")
  if not os.path.exists(cell_json):  # the code that started the cell (a resumed one keeps it)
    write_text(cell_json, json.dumps({"commit": commit(), "command": cmd[1:]}, indent=2))
  t0 = time.time()
  print(f"[run] {cell}: {' '.join(cmd[1:])}", flush=True)
  with open(os.path.join(workdir, "run.log"), "a") as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
  if rc != 0 or not os.path.exists(done):
    print(f"[fail] {cell}: exit {rc}; see {workdir}/run.log", flush=True)
    return None
  ledger.save(workdir, overwrite=True)
  try:
    pace = record_pace(workdir)   # (its own record is left out of the reference)
  except (OSError, ValueError, AttributeError, TypeError) as e:   # a timing aid: never fatal
    print(f"[pace] {cell}: not recorded ({e})", flush=True)
    pace = None
  with open(done) as f:
    m = json.load(f)
  print((f"[pace] {cell}: {pace:.2f}x its kind's recorded seconds per epoch\n" if pace else "")
        + f"[done] {cell} in {time.time() - t0:.0f} s: test recall@20 "
        f"{m['test'].get('recall@20', float('nan')):.4f}", flush=True)
  return m


def _past_until(cell: str) -> bool:
  if UNTIL is None or time.time() < UNTIL:
    return False
  print(f"[until] {cell}: not started, past {time.strftime('%H:%M', time.localtime(UNTIL))}",
        flush=True)
  return True


def _overruns_end(cell: str, workdir: str, config: str, overrides: dict, budget: str,
                  resumed: bool = True) -> bool:
  """Whether `cell` would run past END (a line says so): END passed, or its estimate
  (estimate_seconds; `resumed=False`: as a fresh start) x END_MARGIN + START_SECONDS does."""
  if END is None:
    return False
  left = END - time.time()
  est = estimate_seconds(workdir, config, overrides, budget, resumed) if left > 0 else None
  need = est and est[0] * END_MARGIN + START_SECONDS
  if left > 0 and (need is None or need <= left):
    return False
  why = f"needs ~{need / 60:.0f} min ({est[1]})" if need else "past the end"
  print(f"[end] {cell}: not started, {why}, {max(left, 0) / 60:.0f} min left before "
        f"{time.strftime('%H:%M', time.localtime(END))}", flush=True)
  return True


def estimate_seconds(workdir: str, config: str, overrides: dict, budget: str,
                     resumed: bool = True) -> tuple[float, str] | None:
  """(seconds, how) a cell still needs, from the recorded finished cells (results/cells/;
  training plus evaluation, ledger.cell_seconds) of its kind (_kind): the longest of them. With
  none, the longest BPR cell of its data times the method's ratio to BPR (longest to longest) on
  the other data whose BPR seconds per epoch are nearest this data's, x FALLBACK_MARGIN (the
  ratio differs between datasets: a method's fixed work per step weighs more beside a small
  dataset's BPR step, and TIL-MI's BPR pre-training dilutes it). Once a cell has finished on
  this machine (sitting_pace), the longest cell's epochs are timed at its kind's median seconds
  per epoch x that pace instead: the guest's speed has differed 2x between sessions. Less, if
  `resumed` and the workdir holds an interrupted run, what it logged up to its latest checkpoint
  (where it resumes). None with neither estimate."""
  f = cell_fields(cell_args(config, overrides, budget))
  if f is None:
    return None
  data, method, rest = _kind(f, f["budget"], f["train.epochs"], f["train.patience"])
  kinds, pace, here = _records_by_kind(), sitting_pace(), _cells_timed_here()

  def full_time(kind):   # the kind's longest cell, at this machine's pace once it is known
    cells = kinds[kind]
    if pace is None:
      return max(t for _, t, _ in cells)
    # at the pace, against the records made elsewhere (the ones the pace was measured against);
    # a kind recorded only here is at this machine's speed already
    away = [c for c in cells if c[0] not in here]
    per_epoch = _upper_median([t / n for _, t, n in (away or cells)])
    return max(n for _, _, n in cells) * per_epoch * (pace if away else 1.0)

  if (data, method, rest) in kinds:
    full = full_time((data, method, rest))
    how = f"the longest of {len(kinds[(data, method, rest)])} recorded {method} cell(s)"
  else:
    others = [d for d, m, r in kinds
              if m == method and r == rest and d != data and (d, "bpr", r) in kinds]
    if (data, "bpr", rest) not in kinds or not others:
      return None
    # the ratio from the data nearest this one in BPR's seconds per epoch: a method's overhead
    # over BPR depends on the data's size (lastfm's TIL-MI, whose all-item KL dwarfs a tiny BPR
    # step, is 5-8x BPR; Gowalla's 3-4x), so the largest ratio anywhere overstated a new
    # dataset's cells 2-3x
    def bpr_epoch(d):   # as recorded (not paced: a ratio of two datasets' records); a tie
      return _upper_median([t / n for _, t, n in kinds[(d, "bpr", rest)]])   # -> record order
    other = min(others, key=lambda d: abs(math.log(bpr_epoch(d) / bpr_epoch(data))))
    ratio = full_time((other, method, rest)) / full_time((other, "bpr", rest))
    full = full_time((data, "bpr", rest)) * ratio * FALLBACK_MARGIN
    how = (f"this data's longest bpr cell x {ratio:.1f} ({method} on {other[0] or other[1]}) "
           f"x {FALLBACK_MARGIN}")
  if pace is not None:
    how += f", at this machine's pace x{pace:.2f}"
  done = _resumes_after(workdir) if resumed else 0.0
  return max(full - done, 0.0), how + (f", less {done / 60:.0f} min done" if done else "")


def sitting_pace() -> float | None:
  """This machine's speed against the records: the median of the last PACE_CELLS ratios of the
  cells <runs>/pace.json lists (record_pace: a cell's seconds per epoch here over its kind's
  other records'), clipped to PACE_RANGE; None before a cell has finished here. Each ratio is
  computed again from the cell's folder while it is there, so one listed under an older _kind
  (which lumped 16-negative variants with 1-negative cells: ratios of 5-8) counts as today's
  _kind sees it. runs/ is this machine's own scratch folder (a new checkout has none), so a
  pace never outlives the machine it measured."""
  listed = _pace_cells()
  kinds, here, ratios = None, None, []
  for c in reversed(listed):
    if len(ratios) == PACE_CELLS:
      break
    workdir = os.path.join(ledger.RUNS, c["cell"])
    ratio = c["ratio"]
    if os.path.exists(os.path.join(workdir, "config.json")):
      if kinds is None:
        kinds, here = _records_by_kind(), _cells_timed_here()
      ratio = _pace_ratio(workdir, kinds, here)
    if ratio is not None:
      ratios.append(ratio)
  if not ratios:
    return None
  return min(max(_upper_median(ratios), PACE_RANGE[0]), PACE_RANGE[1])


def record_pace(workdir: str) -> float | None:
  """After a cell finished here: its seconds per epoch over the median of the recorded cells of
  its kind made elsewhere (not this cell, nor any cell pace.json lists as finished here: a
  reference that held them would count this machine's speed twice), appended to
  <runs>/pace.json (sitting_pace); the ratio, or None (listed too, with no ratio) if it has no
  such record or no log."""
  if ledger.record_of(workdir) is None:   # a folder outside runs/ (a test's, an ad-hoc --root)
    return None
  ratio = _pace_ratio(workdir, _records_by_kind(), _cells_timed_here())
  cells = _pace_cells() + [{"cell": os.path.relpath(workdir, ledger.RUNS),
                            "ratio": None if ratio is None else round(ratio, 4),
                            "at": time.strftime("%Y-%m-%dT%H:%M:%S")}]
  write_text(os.path.join(ledger.RUNS, "pace.json"), json.dumps({"cells": cells}, indent=1))
  return ratio


def _pace_ratio(workdir: str, kinds: dict, here: set) -> float | None:
  """A cell folder's seconds per epoch over the upper median of its kind's records (`kinds`:
  _records_by_kind) other than its own and those in `here` (cells timed on this machine)."""
  rec = ledger.record_of(workdir)
  if rec is None:
    return None
  try:
    kind = _record_kind(workdir)
    mine = ledger.cell_seconds(workdir), ledger.cell_epochs(workdir)
  except (OSError, ValueError, AttributeError, TypeError):
    return None
  others = [t / n for r, t, n in kinds.get(kind, []) if r != rec and r not in here]
  return mine[0] / mine[1] / _upper_median(others) if others and mine[0] and mine[1] else None


def _pace_cells() -> list[dict]:
  """The cells <runs>/pace.json lists as finished on this machine ({"cell": path under runs/,
  "ratio": float or None, "at": time}); [] without a readable file (malformed entries dropped)."""
  try:
    with open(os.path.join(ledger.RUNS, "pace.json")) as f:
      listed = json.load(f)["cells"]
    return [{**c, "ratio": None if c.get("ratio") is None else float(c["ratio"])}
            for c in listed if isinstance(c, dict) and isinstance(c.get("cell"), str)]
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return []


def _cells_timed_here() -> set:
  """The records of the cells pace.json lists as finished on this machine."""
  return {ledger.record_of(os.path.join(ledger.RUNS, c["cell"])) for c in _pace_cells()}


def _upper_median(values: list[float]) -> float:
  """The median, the upper of the middle two for an even count (on the slow side as a
  per-epoch time)."""
  return sorted(values)[len(values) // 2]


def _resumes_after(workdir: str) -> float:
  """The logged seconds an interrupted run in `workdir` keeps when it resumes: those through
  its latest checkpoint (a run with none starts over)."""
  if not os.path.exists(os.path.join(workdir, "config.json")):
    return 0.0
  try:
    steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  except OSError:
    return 0.0
  return (ledger.cell_seconds(workdir, max(steps)) or 0.0) if steps else 0.0


def _records_by_kind() -> dict:
  """{_kind: [(record, cell_seconds, epochs logged)]} over the finished records (unreadable
  ones and ones with nothing logged are passed over)."""
  out: dict = {}
  for rec in ledger.finished_records():
    try:
      kind = _record_kind(rec)
    except (OSError, ValueError, AttributeError, TypeError):  # twin_of names an unreadable record
      continue
    if _cell_json(rec).get("twin_of"):   # a copy of another record's log: counted once, as that record
      continue
    t, n = ledger.cell_seconds(rec), ledger.cell_epochs(rec)
    if t and n:
      out.setdefault(kind, []).append((rec, t, n))
  return out


def _record_kind(folder: str) -> tuple:
  """The _kind of a cell folder or record, from its config.json."""
  saved = _saved_config(folder)
  run = saved.get("config", {})
  return _kind(saved.get("identity", {}), _at(run, "budget"), _at(run, "train.epochs"),
               _at(run, "train.patience"))


# Fields beside the method that change a cell's seconds per epoch several-fold: N negatives
# (a 16-negative variant is 5-8x a 1-negative cell's epoch), Adam's lookahead, the outer batch,
# the model's size and the batch size.
_KIND_FIELDS = ("model.name", "model.layers", "model.dim", "train.batch_size", "train.negatives",
                "til.lookahead", "til.outer_batch")


def _kind(identity: dict, budget, epochs, patience) -> tuple:
  """What a cell's running time depends on most: (data, method, (the _KIND_FIELDS, noise,
  budget, epochs, patience))."""
  return ((identity.get("data.name"), identity.get("data.path")), identity.get("method"),
          (*(identity.get(k) for k in _KIND_FIELDS), identity.get("data.noise"), budget, epochs,
           patience))


def twin_of(workdir: str, config: str, overrides: dict, budget: str) -> str:
  """A recorded finished cell (results/cells/...) that computed what this unstarted cell under
  runs/ would: the same whole-config identity and run length (stale_reason's test) and the same
  fields that shape its files beyond the metrics (_FILE_FIELDS), or ''. A cell is trained once
  whichever runner asks for it first. An unreadable record is passed over with a line."""
  mine = ledger.record_of(workdir)
  if mine is None or os.path.exists(os.path.join(workdir, "config.json")):
    return ""
  new = cell_fields(cell_args(config, overrides, budget))
  if new is None:
    return ""
  for rec in ledger.finished_records():
    if rec == mine:
      continue
    try:
      saved = _saved_config(rec)
      if _file_fields(saved.get("config", {})) == new["_files"] and not _differs(rec, new):
        return rec
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      print(f"[ledger] {rec}: unreadable record ({type(e).__name__}: {e}); passed over", flush=True)
  return ""


# Fields config_check.VOLATILE leaves out of a run's identity that still decide what a cell's
# files hold (the weights' AUROC lines in metrics.jsonl, an embeddings export): a twin matches them.
_FILE_FIELDS = ("eval.weight_auroc", "export_embeddings")


def _file_fields(config: dict) -> dict:
  return {k: _at(config, k) for k in _FILE_FIELDS}


def _at(config: dict, key: str):
  """The value of a dotted field (`optim.lr`) in a nested config dict, or None."""
  node = config
  for part in key.split("."):
    node = node.get(part) if isinstance(node, dict) else None
  return node


_SAVED: dict = {}


def _saved_config(workdir: str) -> dict:
  """A cell's config.json, parsed once per process while the file is unchanged (twin_of reads
  every record's for every unstarted cell)."""
  path = os.path.join(workdir, "config.json")
  st = os.stat(path)
  key = (st.st_mtime_ns, st.st_size)
  if _SAVED.get(path, (None,))[0] != key:
    with open(path) as f:
      _SAVED[path] = (key, json.load(f))
  return _SAVED[path][1]


def cell_commit(workdir: str) -> str:
  """The commit a cell was started at (cell.json), or ''."""
  return _cell_json(workdir).get("commit", "")


def _cell_json(folder: str) -> dict:
  """A cell folder's or record's cell.json (its command, commit, `twin_of`), or {}."""
  try:
    with open(os.path.join(folder, "cell.json")) as f:
      got = json.load(f)
  except (OSError, ValueError):
    return {}
  return got if isinstance(got, dict) else {}


def mismatches(workdir: str, fields: dict) -> str:
  """'' when the cell in `workdir` (if any) was configured with `fields`, else what differs."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return ""
  saved = _saved_config(workdir).get("config", {})
  diffs = []
  for k, v in fields.items():
    node = _at(saved, k)
    if node is None or isinstance(node, dict):
      continue  # a field the saved config does not have: nothing to compare
    same = (float(node) == float(v) if isinstance(node, (int, float)) and not isinstance(node, bool)
            and isinstance(v, (int, float)) else str(node) == str(v))
    if not same:
      diffs.append(f"{k}={node!r} (asked {v!r})")
  return ", ".join(diffs)


def stale_reason(workdir: str, config: str, overrides: dict, budget: str) -> str:
  """'' when the cell in `workdir` (if any) computes what `config` with `overrides` at `budget`
  computes now, else what differs: every field of the whole config that the cell's method
  reads (config_check.identity_diff; so an edited config file makes a finished cell stale too),
  and the budget with its epochs and patience."""
  if not os.path.exists(os.path.join(workdir, "config.json")):
    return ""
  new = cell_fields(cell_args(config, overrides, budget))
  if new is None:  # the command does not parse (the run reports that): the asked fields only
    return mismatches(workdir, {**BUDGETS[budget], **overrides, "budget": budget})
  return _differs(workdir, new)


def stale_cell(workdir: str) -> str:
  """'' when the finished cell in `workdir` still computes what the command it was started
  with (cell.json) builds from today's config files, else what differs. For the collectors of
  finished cells, which do not know a cell's overrides: a config file edited since the cell ran
  (e.g. a knob tuned) leaves it out of the reports until it is rerun."""
  path = os.path.join(workdir, "cell.json")
  if not (os.path.exists(path) and os.path.exists(os.path.join(workdir, "config.json"))):
    return ""
  with open(path) as f:
    cmd = json.load(f).get("command", [])
  new = cell_fields(current_form([a for a in cmd if a.startswith("--config")]))
  if new is None:  # e.g. its config file is gone: it cannot be shown to be current
    return "a command that no longer parses (see [unchecked])"
  return _differs(workdir, new)


def current_form(config_args: list[str]) -> list[str]:
  """A cell's config flags as today's runners write them (cell_args). Cells of earlier sessions
  named the plain file and set their budget's fields one by one (`--config.budget=converged
  --config.til.pretrain_epochs=100 ...`), which pins values the budget now sets otherwise (a
  dataset and backbone's own pre-training: configs/default.py DATASET_BUDGETS); the runners ask for
  `FILE:budget` with the method's own overrides, and so does this."""
  files = [a for a in config_args if a.startswith("--config=")]
  budget = next((a.split("=", 1)[1] for a in config_args if a.startswith("--config.budget=")), "")
  if len(files) != 1 or ":" in files[0] or budget not in BUDGETS:
    return config_args

  def pinned(flag: str) -> bool:  # the budget's own value; another value was the cell's override
    k, _, v = flag[len("--config."):].partition("=")
    return k == "budget" or (k in BUDGETS[budget] and str(BUDGETS[budget][k]) == v)
  return [f"{files[0]}:{budget}"] + [a for a in config_args if not a.startswith("--config=")
                                     and not pinned(a)]


def finished_seeds(folder: str, label: str, budget: str | None = None) -> list[tuple[int, dict]]:
  """(seed, metrics.json) of every finished seed<k> cell in `folder` trained with `budget`
  (any if None), leaving out stale ones (stale_cell) with a `[stale] <label>/seed<k>` line."""
  out = []
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    path = os.path.join(folder, name, "metrics.json")
    if not (name.startswith("seed") and os.path.exists(path)):
      continue
    with open(path) as f:
      m = json.load(f)
    stale = stale_cell(os.path.join(folder, name))
    if stale:
      print(f"[stale] {label}/{name}: trained with {stale}; left out", flush=True)
    elif budget is None or m.get("budget") == budget:
      out.append((int(name[4:]), m))
  return out


def valid_curve(workdir: str, metric: str = "recall@20") -> list[tuple[int, float]]:
  """(epoch, valid metric) of a run's evaluations, in epoch order, from its metrics.jsonl (the
  last record of an epoch counts: a resumed run appends the epochs after its checkpoint)."""
  by_epoch = {}
  for r in log_records(workdir):
    if "valid" in r and metric in r["valid"]:
      by_epoch[int(r["epoch"])] = float(r["valid"][metric])
  return sorted(by_epoch.items())


def log_records(workdir: str) -> list[dict]:
  """The records of a cell's metrics.jsonl, or of metrics.jsonl.gz in its record under
  results/cells/ (ledger.read_log); [] without either."""
  return [json.loads(line) for line in (ledger.read_log(workdir) or b"").splitlines()
          if line.strip()]


def best_phase(workdir: str, m: dict) -> str:
  """The training phase of a finished cell's best checkpoint ("pretrain": TIL-MI still plain
  BPR; "main"): metrics.json's best_phase, or for a cell written before that field, the phase
  its log recorded at the best epoch (at its last epoch if no evaluation improved; '' if the
  log does not say)."""
  if "best_phase" in m:
    return m["best_phase"]
  records = [r for r in log_records(workdir) if "phase" in r]
  best = int(m.get("best_epoch") or 0)
  at = [r for r in records if int(r.get("epoch", -1)) == best] if best else records[-1:]
  return at[-1]["phase"] if at else ""


def epochs_to_fraction(workdir: str, fraction: float, metric: str = "recall@20") -> int | None:
  """The first evaluated epoch whose valid metric reaches `fraction` of the run's best (None
  without evaluations): how long BPR takes to bring its embeddings near their best, which sets
  TIL-MI's pre-training on each dataset and backbone (configs/default.py DATASET_BUDGETS)."""
  curve = valid_curve(workdir, metric)
  if not curve:
    return None
  top = max(v for _, v in curve)
  return next(e for e, v in curve if v >= fraction * top)


def _differs(workdir: str, new: dict) -> str:
  saved = _saved_config(workdir)
  new = {k: v for k, v in new.items() if k != "_files"}
  old = config_check.completed(saved.get("identity", {}), new)
  diff = config_check.identity_diff(old, {k: v for k, v in new.items() if k not in _RUN_LENGTH})
  for k in _RUN_LENGTH:
    node = _at(saved.get("config", {}), k)
    if node is not None and node != new[k]:
      old[k] = node
      diff.append(k)
  return ", ".join(f"{k}={old.get(k)!r} (asked {new.get(k)!r})" for k in diff[:4]) + (
      f" and {len(diff) - 4} more" if len(diff) > 4 else "")


def _configs_stamp() -> tuple:
  """(file, mtime) of every configs/*.py: the parse cache is valid while none changed."""
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  try:
    return tuple(sorted((f, os.stat(os.path.join(here, f)).st_mtime_ns)
                        for f in os.listdir(here) if f.endswith(".py")))
  except OSError:
    return ()


# What config_check.identity leaves out (a run may be extended or its patience changed) but a
# cell of a budget fixes.
_RUN_LENGTH = ("budget", "train.epochs", "train.patience")
_FIELDS: dict = {}
_STAMP: tuple | None = None  # _configs_stamp() of the parses in _FIELDS


def fresh_configs() -> None:
  """Makes the next import of configs.* read the files as they are now: a long campaign
  outlives edits of configs/*.py, and a module imported once (configs.base, configs.default, a
  config another imports) would not be read again. Clears the parse cache with them."""
  global _STAMP
  stamp = _configs_stamp()
  if stamp != _STAMP:
    if _STAMP is not None:
      for name in [m for m in sys.modules if m == "configs" or m.startswith("configs.")]:
        del sys.modules[name]
    _FIELDS.clear()
    _STAMP = stamp


def config_module(path: str):
  """The module of a config file (configs/<name>.py) as the file is now (fresh_configs)."""
  import importlib
  fresh_configs()
  return importlib.import_module(os.path.splitext(os.path.normpath(path))[0].replace(os.sep, "."))


def cell_fields(config_args: list[str]) -> dict | None:
  """The identity (config_check.identity) and run length of the config that the flags
  `config_args` (--config=FILE[:budget] --config.k=v ...) build, parsed as experiments.main
  parses them; None if they do not parse."""
  argv = ["cell", *config_args]
  fresh_configs()
  key = tuple(argv)
  if key not in _FIELDS:
    from absl import flags
    from ml_collections import config_flags
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                    sys_argv=argv)  # (else it reads the overrides in sys.argv)
    try:
      fv(argv)
      c = fv.config
      _FIELDS[key] = {**config_check.identity(c), "budget": c.budget,
                      "train.epochs": c.train.epochs, "train.patience": c.train.patience,
                      "_files": _file_fields(json.loads(c.to_json_best_effort()))}
    except Exception as e:  # noqa: BLE001 - an unparsable command is the run's error to report
      print(f"[unchecked] {argv[1]}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}", flush=True)
      _FIELDS[key] = None
  return _FIELDS[key]


def machine() -> str:
  cpu = platform.processor() or "cpu"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{cpu}, {os.cpu_count()} cores"


def commit() -> str:
  try:
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                   stderr=subprocess.DEVNULL).strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


# ---------------------------------------------------------------------------------- statistics

def mean_std(xs: list[float]) -> tuple[float, float]:
  n = len(xs)
  if n == 0:
    return float("nan"), float("nan")
  m = sum(xs) / n
  return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0)


def t_sf2(t: float, df: int) -> float:
  """Two-sided p-value of Student's t: P(|T| >= |t|), by the regularised incomplete beta
  function I_x(df/2, 1/2) with x = df / (df + t^2) (continued fraction, Numerical Recipes 6.4)."""
  if not math.isfinite(t):
    return 0.0 if math.isinf(t) else float("nan")
  x = df / (df + t * t)
  return _betainc(df / 2.0, 0.5, x)


def _betainc(a: float, b: float, x: float) -> float:
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
  front = math.exp(lbeta + a * math.log(x) + b * math.log(1.0 - x))
  if x > (a + 1.0) / (a + b + 2.0):
    return 1.0 - _betainc(b, a, 1.0 - x)
  # Lentz's continued fraction.
  tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 300):
    for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
      d = 1.0 + num * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + num / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < 1e-14:
      break
  return front * h / a


def paired_ttest(a: list[float], b: list[float]) -> tuple[float, float]:
  """Paired t-test of a vs b (same seeds): (t, two-sided p). NaN when fewer than 2 pairs."""
  d = [x - y for x, y in zip(a, b)]
  n = len(d)
  if n < 2:
    return float("nan"), float("nan")
  m, s = mean_std(d)
  if s == 0.0:
    return (math.copysign(math.inf, m) if m else float("nan")), (0.0 if m else float("nan"))
  t = m / (s / math.sqrt(n))
  return t, t_sf2(t, n - 1)


# ------------------------------------------------------------------------------- files, plots

def write_csv(path: str, rows: list[dict]) -> None:
  """Atomic CSV write (header from the union of keys, in first-seen order)."""
  keys: list[str] = []
  for r in rows:
    keys += [k for k in r if k not in keys]
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def markdown_table(header: list[str], rows: list[list]) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(out) + "\n"


def pyplot():
  """matplotlib.pyplot with a file backend, or None when the `plots` extra is not installed."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
  except ImportError:
    print("matplotlib not installed (pip install -e '.[plots]'): CSV only, no PNG", flush=True)
    return None


def header_lines(budget: str, command: str) -> str:
  per = default.DATASET_BUDGETS.get(budget)
  return (f"- command: `{command}`\n- budget: {budget} {json.dumps(BUDGETS[budget])}"
          + (f", per dataset / backbone {json.dumps(per)}" if per else "") + "\n"
          f"- commit: {commit()}; machine: {machine()}; date: {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
