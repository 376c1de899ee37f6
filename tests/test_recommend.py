"""Recommendations in the data's own ids: the README's "Use your own data" commands on a csv
with non-contiguous ids, and the refusals."""

import csv
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--config.train.epochs=3", "--config.eval.every=1", "--config.model.dim=8",
        "--config.train.batch_size=128"]


def write_csv(path: str, seed: int = 0) -> set:
  """Users 1000 + 13 u, items "i" + str(500 + 7 j); returns the (user, item) pairs rated >= 4."""
  rng = np.random.default_rng(seed)
  pos = set()
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["user", "item", "rating", "timestamp"])
    for u in range(40):
      for j in rng.choice(60, size=15, replace=False):
        r = int(rng.integers(1, 6)) if j % 4 else 5
        uid, iid = 1000 + 13 * u, f"i{500 + 7 * int(j)}"
        w.writerow([uid, iid, r, int(rng.integers(0, 10**6))])
        if r >= 4:
          pos.add((str(uid), iid))
  return pos


def readme_commands(tmp) -> list[list[str]]:
  """The README's commands, run from the repository root, with its file names under `tmp`."""
  text = open(os.path.join(ROOT, "README.md")).read()
  block = re.search(r"## Use your own data.*?```bash\n(.*?)```", text, re.S).group(1)
  names = {"my_data.csv": tmp / "my_data.csv", "runs/mine": tmp / "runs" / "mine",
           "recs.csv": tmp / "recs.csv"}
  out = []
  for line in block.splitlines():
    if line.startswith("python "):
      for a, b in names.items():
        line = line.replace(a, str(b))
      out.append(shlex.split(line.split("#")[0]))
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("own")
  pos = write_csv(str(tmp / "my_data.csv"))
  train_cmd, rec_cmd = readme_commands(tmp)
  env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
  p = subprocess.run([sys.executable, *train_cmd[1:], *FAST], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  assert not [line for line in p.stderr.splitlines() if "tpu" in line.lower()]  # a quiet start
  head = p.stderr.splitlines()[:5]  # the run names its data, sizes, model, budget and devices
  assert any(all(w in line for w in ("my_data", "users", "backbone mf", "budget quick", "devices"))
             for line in head), head
  from tests.test_tensorboard import scalars  # what `tensorboard --logdir` shows
  curves = scalars(str(tmp / "runs" / "mine" / "tensorboard"))
  assert curves["train/loss"] == [1, 2, 3] and curves["valid/recall_20"] == [1, 2, 3]
  return tmp, pos, rec_cmd, env


def test_recommendations_are_in_the_users_ids_and_skip_training_items(trained):
  tmp, pos, rec_cmd, env = trained
  p = subprocess.run([sys.executable, *rec_cmd[1:]], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp / "recs.csv")))
  users = {u for u, _ in pos}
  assert {r["user"] for r in rows} <= users and len({r["user"] for r in rows}) >= 35
  assert all(r["item"].startswith("i") for r in rows)
  ids = np.load(tmp / "runs" / "mine" / "ids.npz")
  tu, ti = _train_pairs(tmp)
  train = set(zip(ids["user_ids"][tu].astype(str).tolist(), ids["item_ids"][ti].astype(str).tolist()))
  assert train and train <= pos
  assert not {(r["user"], r["item"]) for r in rows} & train   # never a training item
  by_user = {}
  for r in rows:
    by_user.setdefault(r["user"], []).append((int(r["rank"]), float(r["score"])))
  for ranks in by_user.values():
    assert [x[0] for x in ranks] == list(range(1, len(ranks) + 1))
    assert all(a[1] >= b[1] for a, b in zip(ranks, ranks[1:]))   # best first


def _train_pairs(tmp):
  import json

  import ml_collections

  from til_jax.data.registry import load_dataset
  cfg = json.load(open(tmp / "runs" / "mine" / "config.json"))["config"]
  data = ml_collections.ConfigDict(cfg["data"])
  data.cache_dir = str(tmp / "cache2")
  return load_dataset(data).train.to_pairs()


def test_some_users_and_unknown_ids(trained):
  tmp, pos, rec_cmd, env = trained
  some = sorted({u for u, _ in pos})[:2]
  base = [sys.executable, "-m", "experiments.recommend", f"--workdir={tmp / 'runs' / 'mine'}",
          "--k=5"]
  p = subprocess.run(base + [f"--out={tmp / 'some.csv'}", f"--users={','.join(some)}"], cwd=ROOT,
                     env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp / "some.csv")))
  assert {r["user"] for r in rows} == set(some) and len(rows) == 10
  p = subprocess.run(base + [f"--out={tmp / 'bad.csv'}", "--users=1000,424242,nobody"], cwd=ROOT,
                     env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 2
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: unknown user id(s): 424242, nobody")
  assert not os.path.exists(tmp / "bad.csv")
