"""Faults: SIGTERM, corrupt or incomplete checkpoints, bad data through the CLI."""

import json
import os
import shutil
import signal
import time

import pytest

from til_jax.train import loop

from .fixtures import write_split
from .test_train import _cli, _cli_args, tiny_config


def _wait_for_checkpoint(work, p, at_least=1, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and p.poll() is None:
    ck = work / "checkpoints"
    steps = [int(x) for x in os.listdir(ck) if x.isdigit()] if ck.exists() else []
    if steps and max(steps) >= at_least:
      return
    time.sleep(0.05)


def test_sigterm_saves_and_exits_then_resumes_identically(tmp_path):
  data = write_split(str(tmp_path / "data"), n_users=60, n_items=45)
  ref = loop.train_and_evaluate(tiny_config(data, "til_ui", epochs=10), str(tmp_path / "ref"))
  work = tmp_path / "w"
  args = _cli_args(data, work, 10, "til_ui")
  args = [a for a in args if "checkpoint.every" not in a] + ["--config.checkpoint.every=100",
                                                             "--config.eval.ks=(5,10)"]
  p = _cli(args)
  _wait_for_checkpoint(work, p, 1)  # the first evaluation (epoch 2) saves the best checkpoint
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=300)
  if p.returncode == 0:
    pytest.skip("the run finished before the signal arrived")
  assert p.returncode == 128 + signal.SIGTERM, err[-1500:]
  assert "SIGTERM" in err and "resume" in err
  p = _cli(args)
  out, err = p.communicate(timeout=300)
  assert p.returncode == 0, err[-1500:]
  res = json.load(open(work / "metrics.json"))
  assert res["valid"] == ref["valid"] and res["test"] == ref["test"]


@pytest.mark.parametrize("damage", ["truncate", "missing_item"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, damage, caplog):
  data = write_split(str(tmp_path / "data"))
  ref = loop.train_and_evaluate(tiny_config(data, "til_mi", epochs=6), str(tmp_path / "ref"))
  work = str(tmp_path / "w")
  loop.train_and_evaluate(tiny_config(data, "til_mi", epochs=4), work)
  latest = os.path.join(work, "checkpoints", "4")
  assert os.path.isdir(latest) and os.path.isdir(os.path.join(work, "checkpoints", "3"))
  if damage == "truncate":
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(latest, "state")) for f in fs]
    for f in files:
      with open(f, "r+b") as fh:
        fh.truncate(max(0, os.path.getsize(f) // 3))
  else:
    shutil.rmtree(os.path.join(latest, "state"))
  with caplog.at_level("WARNING"):
    res = loop.train_and_evaluate(tiny_config(data, "til_mi", epochs=6), work)
  warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert warned and "checkpoints/4" in warned[0] and "\n" not in warned[0]
  assert res["epochs"] == 6
  assert res["valid"] == ref["valid"] and res["test"] == ref["test"]


@pytest.mark.parametrize("content,where", [
    ("0 1 2\n1 x 3\n", "train.txt:2"),
    ("0 1 2\n-1 3\n", "train.txt:2"),
    ("", "train.txt"),
])
def test_bad_data_file_is_one_line_error_exit_2(tmp_path, content, where):
  data = write_split(str(tmp_path / "data"))
  with open(os.path.join(data, "train.txt"), "w") as f:
    f.write(content)
  p = _cli(_cli_args(data, tmp_path / "w", 2))
  out, err = p.communicate(timeout=120)
  last = err.strip().splitlines()[-1]
  assert p.returncode == 2 and last.startswith("error:") and where in last, err[-800:]
  assert "Traceback" not in err


def test_split_folder_with_missing_file(tmp_path):
  data = write_split(str(tmp_path / "data"))
  os.remove(os.path.join(data, "valid.txt"))
  p = _cli(_cli_args(data, tmp_path / "w", 2))
  out, err = p.communicate(timeout=120)
  last = err.strip().splitlines()[-1]
  assert p.returncode == 2 and "valid" in last and last.startswith("error:")
