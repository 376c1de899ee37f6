"""TensorBoard event files of a run (workdir/tensorboard/), written with tensorboardX.

Per epoch: every training metric of the epoch record (loss, grad_norm, and for TIL outer_loss,
w_mean, w_std, hypergrad_norm) as `train/<name>`, epoch seconds as `time/epoch_seconds`, and
every evaluation as `valid/<metric>` (recall@20 as recall_20); at the end the best
checkpoint's `test/<metric>` at the last epoch run. A resumed run opens its writer with purge_step =
the first epoch it will redo, so TensorBoard drops whatever a killed process wrote past its last
checkpoint: no duplicate steps. Each writer's file name ends in a sequence number: tensorboardX names
files by the second they open and the host, so two invocations within one second would share (and
truncate) one file, and TensorBoard reads a folder's files in name order.
"""

from __future__ import annotations

import os
import shutil


def _tag(metric: str) -> str:
  return metric.replace("@", "_")  # TensorBoard tags take no "@": recall@20 -> recall_20


class Writer:
  def __init__(self, workdir: str, enabled: bool, first_epoch: int):
    self.dir = os.path.join(workdir, "tensorboard")
    self.writer = None
    if not enabled:
      return
    from tensorboardX import SummaryWriter
    if first_epoch == 1:  # a fresh run: nothing earlier to keep
      shutil.rmtree(self.dir, ignore_errors=True)
    os.makedirs(self.dir, exist_ok=True)
    n = sum(".tfevents." in f for f in os.listdir(self.dir))
    self.writer = SummaryWriter(logdir=self.dir, purge_step=first_epoch, flush_secs=30,
                                filename_suffix=f".{n:04d}")

  def epoch(self, record: dict) -> None:
    if self.writer is None:
      return
    step = int(record["epoch"])
    for k, v in record.items():
      if k in ("epoch", "phase", "valid", "eval_seconds"):
        continue
      if isinstance(v, (int, float)):
        self.writer.add_scalar("time/epoch_seconds" if k == "seconds" else f"train/{k}", v, step)
    for k, v in record.get("valid", {}).items():
      self.writer.add_scalar(f"valid/{_tag(k)}", v, step)

  def final(self, result: dict, epoch: int) -> None:
    """The best checkpoint's test metrics, at the epoch this invocation ended."""
    if self.writer is None:
      return
    for k, v in result["test"].items():
      self.writer.add_scalar(f"test/{_tag(k)}", v, epoch)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
