"""TensorBoard event files: the training curves and evaluations, resumed runs without duplicate
steps, and the switch to turn them off."""

import glob
import os
import struct

from tensorboardX.proto import event_pb2

from til_jax.train import loop

from .fixtures import write_split
from .test_train import tiny_config


def scalars(logdir: str) -> dict[str, list[int]]:
  """tag -> steps, over every event file in order, applying TensorBoard's purge rule (a file that
  starts at purge step p drops the earlier files' events at steps >= p)."""
  out: dict[str, list[int]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos, first = 0, True
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12: pos + 12 + n])
      pos += 12 + n + 4
      if first and ev.file_version:
        out = {t: [s for s in st if s < ev.step] for t, st in out.items()} if ev.step else out
        first = False
        continue
      for v in ev.summary.value:
        out.setdefault(v.tag, []).append(int(ev.step))
  return out


def test_curves_and_evaluations_are_written_and_a_resume_appends(tmp_path):
  data = write_split(str(tmp_path / "d"))
  work = str(tmp_path / "w")
  loop.train_and_evaluate(tiny_config(data, "til_ui", epochs=2), work)
  loop.train_and_evaluate(tiny_config(data, "til_ui", epochs=4), work)   # resumes at epoch 3
  s = scalars(os.path.join(work, "tensorboard"))
  for tag in ("train/loss", "train/grad_norm", "train/outer_loss", "train/w_mean", "train/w_std",
              "train/hypergrad_norm", "time/epoch_seconds"):
    assert s[tag] == [1, 2, 3, 4], (tag, s.get(tag))
  assert s["valid/recall_10"] == [2, 4]       # eval.every = 2
  assert s["test/recall_10"] == [2, 4]          # the end of each of the two invocations
  loop.train_and_evaluate(tiny_config(data, "til_ui", epochs=4), work)   # finished: nothing new
  assert scalars(os.path.join(work, "tensorboard"))["test/recall_10"] == [2, 4]


def test_tensorboard_can_be_switched_off(tmp_path):
  c = tiny_config(write_split(str(tmp_path / "d")), epochs=1, **{"log.tensorboard": False})
  loop.train_and_evaluate(c, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "tensorboard")


def test_two_writers_within_one_second_keep_both_files(tmp_path, monkeypatch):
  # tensorboardX names a file by the second it opens: a resume within that second shared (and
  # truncated) the first invocation's file before the names carried a sequence number.
  import tensorboardX.event_file_writer as efw

  from til_jax.train.tensorboard import Writer
  monkeypatch.setattr(efw.time, "time", lambda: 1.7e9)
  work = str(tmp_path)
  for first, last in ((1, 2), (3, 4)):
    w = Writer(work, True, first)
    for e in range(first, last + 1):
      w.epoch({"epoch": e, "loss": 0.5})
    w.close()
  assert scalars(os.path.join(work, "tensorboard"))["train/loss"] == [1, 2, 3, 4]
