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


@pytest.fixture(scope="module")
def til_mi_runs(tmp_path_factory):
  """A 6-epoch TIL-MI reference and a 4-epoch run of the same config, shared by the damages."""
  tmp = tmp_path_factory.mktemp("corrupt")
  data = write_split(str(tmp / "data"))
  ref = loop.train_and_evaluate(tiny_config(data, "til_mi", epochs=6), str(tmp / "ref"))
  loop.train_and_evaluate(tiny_config(data, "til_mi", epochs=4), str(tmp / "four"))
  return data, ref, str(tmp / "four")


@pytest.mark.parametrize("damage", ["truncate", "missing_item"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, til_mi_runs, damage, caplog):
  data, ref, four = til_mi_runs
  work = str(tmp_path / "w")
  shutil.copytree(four, work)
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


def test_a_workdir_from_before_a_field_existed_resumes(tmp_path):
  """A config.json written before a field was added (its identity lacks the key) resumes when
  the new config holds the field's BEFORE_FIELD value, and is refused when it does not."""
  import json

  from tests.fixtures import write_split
  from tests.test_train import tiny_config
  from til_jax.errors import ConfigError
  from til_jax.train import config_check, loop
  c = tiny_config(write_split(str(tmp_path / "d")), epochs=2)
  work = tmp_path / "w"
  loop.train_and_evaluate(c, str(work))
  saved = json.loads((work / "config.json").read_text())
  for k in config_check.BEFORE_FIELD:
    saved["identity"].pop(k, None)
  (work / "config.json").write_text(json.dumps(saved))
  c.train.epochs = 3
  assert loop.train_and_evaluate(c, str(work))["epochs"] == 3
  (work / "config.json").write_text(json.dumps(saved))
  c.train.epochs, c.train.negatives = 4, 2
  with pytest.raises(ConfigError, match="different config"):
    loop.train_and_evaluate(c, str(work))
