"""The committed record of finished cells: results/cells/ mirrors every finished cell's small files.

A cell's folder under runs/ holds its checkpoints and id maps (derived from the data: never
committed) beside four small files that say what it ran and what it scored: cell.json (the
command and commit), config.json (the whole config), metrics.json (the final metrics) and
metrics.jsonl (every evaluation). runs/ is a scratch folder that a new checkout does not have;
results/cells/<path under runs>/ keeps those four files of every finished cell, so a finished
cell is never trained twice and every table can be regenerated on a fresh checkout:

  save(workdir)      after a cell finishes (common.run_cell): its record is written
  restore(workdir)   before a cell is looked for: a recorded cell comes back to runs/ as
                     finished (metrics.json), without checkpoints, which nothing reads once it is
  sync(*roots)       both ways, for every cell under the roots (each runner at its start)

and common.run_cell reads a cell whose whole config a recorded cell already computed (a twin,
common.twin_of: a grid's tuned point is Table 1's seed-0 cell) instead of training it again.

Only cells under RUNS have a record (`configure`, from experiments.campaign --runs/--results);
folders elsewhere (a test's tmp dir, an ad-hoc --root) are left as they are.
"""

from __future__ import annotations

import gzip
import os

# (file in a cell folder, its name in the record); metrics.json last: it marks a cell done. The
# log is kept gzipped: one line an epoch, 133 kB a cell on average over the first 34 recorded
# (up to 270 kB), 31 kB gzipped (4.3x less).
RECORD = (("cell.json", "cell.json"), ("config.json", "config.json"),
          ("metrics.jsonl", "metrics.jsonl.gz"), ("metrics.json", "metrics.json"))
RUNS = "runs"
LEDGER = os.path.join("results", "cells")


def configure(runs: str, results: str) -> None:
  """The runs folder whose cells are recorded, and the results folder that holds the record."""
  global RUNS, LEDGER
  RUNS, LEDGER = runs, os.path.join(results, "cells")


def record_of(workdir: str) -> str | None:
  """The record folder of a cell folder under RUNS, or None for a folder elsewhere."""
  rel = os.path.relpath(os.path.abspath(workdir), os.path.abspath(RUNS))
  if rel == "." or rel == os.pardir or rel.startswith(os.pardir + os.sep):
    return None
  return os.path.join(LEDGER, rel)


def _read(path: str) -> bytes | None:
  """A file's content, un-gzipped if its name ends .gz; None if it does not exist."""
  if not os.path.exists(path):
    return None
  with open(path, "rb") as f:
    data = f.read()
  return gzip.decompress(data) if path.endswith(".gz") else data


def _write(path: str, data: bytes) -> None:
  """Atomically (a temp file of its own, so two writers never share one), gzipped
  (reproducibly: no name or time in the header) if the name ends .gz."""
  import tempfile
  if path.endswith(".gz"):
    data = gzip.compress(data, compresslevel=9, mtime=0)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _copy(src_dir: str, dst_dir: str, to_record: bool) -> bool:
  """The record's files from src_dir into dst_dir (those that differ), metrics.json last;
  True if any was written."""
  wrote = False
  for cell_name, record_name in RECORD:
    src, dst = ((cell_name, record_name) if to_record else (record_name, cell_name))
    data = _read(os.path.join(src_dir, src))
    if data is not None and data != _read(os.path.join(dst_dir, dst)):
      os.makedirs(dst_dir, exist_ok=True)
      _write(os.path.join(dst_dir, dst), data)
      wrote = True
  return wrote


def save(workdir: str, overwrite: bool = False) -> bool:
  """Records a finished cell (one with metrics.json); True if its record changed. A record of
  other results at the same path is kept (with a `[ledger] conflict` line) unless `overwrite`:
  only the run that just finished the cell (common.run_cell) replaces it."""
  rec = record_of(workdir)
  if rec is None or not os.path.exists(os.path.join(workdir, "metrics.json")):
    return False
  if (not overwrite and finished(rec)
      and _read(os.path.join(rec, "metrics.json")) != _read(os.path.join(workdir, "metrics.json"))):
    print(f"[ledger] conflict: {workdir} and its record {rec} hold other results; the record is "
          "kept (move one away to choose)", flush=True)
    return False
  return _copy(workdir, rec, to_record=True)


def finished(rec: str) -> bool:
  """Whether a record folder holds a whole finished cell: the command, the config (which every
  identity check reads) and the final metrics."""
  return all(os.path.exists(os.path.join(rec, n)) for n in ("cell.json", "config.json", "metrics.json"))


def restore(workdir: str) -> bool:
  """Brings a recorded cell back into a workdir that has no run of its own (no config.json: an
  interrupted run is left to resume); True if it did."""
  rec = record_of(workdir)
  if rec is None or not finished(rec) or os.path.exists(os.path.join(workdir, "config.json")):
    return False
  return _copy(rec, workdir, to_record=False)


def cell_seconds(folder: str, upto: int | None = None) -> float | None:
  """The seconds of training and evaluation a cell folder or record logged (its metrics.jsonl:
  each epoch's `seconds` and `eval_seconds`; an epoch logged twice, as a resumed run repeats the
  epochs after its last checkpoint, counts once, its last line), through epoch `upto` if given;
  None without a log or if it cannot be read. Compilation and start-up are not logged."""
  epochs = _epoch_seconds(folder)
  return None if epochs is None else sum(t for e, t in epochs.items() if upto is None or e <= upto)


def cell_epochs(folder: str) -> int | None:
  """How many epochs a cell folder or record logged (each once; as cell_seconds counts them)."""
  epochs = _epoch_seconds(folder)
  return None if epochs is None else len(epochs)


def log_path(folder: str) -> str | None:
  """A cell folder's metrics.jsonl, or its record's metrics.jsonl.gz; None without either."""
  for name in ("metrics.jsonl", "metrics.jsonl.gz"):
    path = os.path.join(folder, name)
    if os.path.exists(path):
      return path
  return None


def read_log(folder: str) -> bytes | None:
  """The content of a cell folder's or record's log (log_path), un-gzipped; None without one."""
  path = log_path(folder)
  return None if path is None else _read(path)


def _epoch_seconds(folder: str) -> dict | None:
  """{epoch: training + evaluation seconds} from a cell's log (cell_seconds), or None."""
  import json
  import zlib
  path = log_path(folder)
  if path is None:
    return None
  try:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _SECONDS:
      epochs = {}
      for line in _read(path).splitlines():
        try:
          row = json.loads(line)
          epochs[int(row["epoch"])] = (float(row.get("seconds") or 0.0)
                                       + float(row.get("eval_seconds") or 0.0))
        except (ValueError, KeyError, TypeError):  # a line cut by a kill, or not an epoch's
          continue
      _SECONDS[key] = epochs
  except (OSError, EOFError, zlib.error):  # a log cut short (gzip) or gone meanwhile
    return None
  return _SECONDS[key]


_SECONDS: dict = {}  # {(log, mtime, size): {epoch: seconds}}: `campaign --list` asks for every cell


def retire(workdir: str, kept: str) -> None:
  """A stale cell's folder moved to `kept` (common.run_cell --rerun-stale): its record moves
  with it, so the rerun starts with no record and the old one stays readable."""
  rec, dst = record_of(workdir), record_of(kept)
  if rec and dst and os.path.isdir(rec):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(rec, dst)


def finished_records() -> list[str]:
  """The record folders of every finished cell (not the retired ones under _stale/), sorted."""
  return sorted(rec for rec in (os.path.join(LEDGER, rel) for rel in _cells_under(LEDGER))
                if finished(rec))


def copy_cell(record: str, workdir: str, cell_json: dict) -> None:
  """A recorded finished cell into an unstarted workdir, with a cell.json of its own (the
  command that asked for it); recorded under its own path too."""
  import json
  _copy(record, workdir, to_record=False)
  _write(os.path.join(workdir, "cell.json"), json.dumps(cell_json, indent=2).encode())
  save(workdir)


_SKIP = ("checkpoints", "best", "tensorboard", "embeddings", "_stale")


def _cells_under(base: str) -> list[str]:
  """Every folder under `base` (relative to it) that holds a metrics.json; not inside a cell
  (its checkpoints, ...) nor under _stale/ (retired cells stay where they are)."""
  out = []
  for here, dirs, files in os.walk(base):
    if "metrics.json" in files or "config.json" in files:
      dirs[:] = []  # a cell folder: nothing below it is another cell
      if "metrics.json" in files:
        out.append(os.path.relpath(here, base))
    else:
      dirs[:] = [d for d in dirs if d not in _SKIP]
  return out


def sync(*roots: str) -> tuple[int, int]:
  """Records the finished cells under each root and restores the recorded ones missing there;
  (saved, restored). Prints one line when anything moved."""
  saved = restored = 0
  for root in roots:
    if not root:
      continue
    same = os.path.abspath(root) == os.path.abspath(RUNS)
    rec = LEDGER if same else record_of(root)
    if rec is None:
      continue
    for rel in _cells_under(rec):
      restored += restore(os.path.normpath(os.path.join(root, rel)))
    for rel in _cells_under(root):
      saved += save(os.path.normpath(os.path.join(root, rel)))
  if saved or restored:
    print(f"[ledger] {saved} cell(s) recorded, {restored} restored from {LEDGER}", flush=True)
  return saved, restored
