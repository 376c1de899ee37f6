"""Checkpoints through one small module over orbax.checkpoint.CheckpointManager.

Two managers under the workdir: `checkpoints/` (the latest `keep` saves, for resuming) and
`best/` (the best-valid state). Each save holds the whole TrainState (both optax states) and a
JSON record of the loop (epoch, best metric, patience counter, history). Restores go into an
abstract target built with jax.eval_shape, so shapes and dtypes are checked.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, workdir: str, keep: int = 2):
    self.corrupt_dir = os.path.abspath(os.path.join(workdir, "corrupt"))
    self.latest = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.best = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "best")),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def save(self, epoch: int, state, meta: dict, best: bool = False) -> None:
    """Saves `state` at `epoch`; with best=True also as the best-valid state.

    The best save is written (and finished) before the latest one: a kill between the two leaves
    a latest checkpoint that does not yet claim the new best, so a resumed run redoes the epoch
    and saves it again (the stale step is replaced, never mixed with an older best)."""
    def composite():
      return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    for manager, wanted in ((self.best, best), (self.latest, True)):
      if not wanted:
        continue
      if epoch in manager.all_steps():
        manager.delete(epoch)
      manager.save(epoch, args=composite(), force=True)
      manager.wait_until_finished()

  def _restore(self, manager, abstract_state):
    """The newest restorable step of `manager`, falling back to older ones when a save is
    incomplete or corrupt (reported in one line each). An unreadable save is moved aside to
    `workdir/corrupt/` (kept for inspection, never silently deleted) so the run can save that
    step again."""
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out.state, out.meta
      except Exception as e:  # noqa: BLE001 - any failure means this save is unusable
        logging.warning("checkpoint %s/%d is unreadable (%s: %s); moved to %s, trying an older one",
                        manager.directory, step, type(e).__name__,
                        (str(e).splitlines() or [""])[0][:200], self.corrupt_dir)
        os.makedirs(self.corrupt_dir, exist_ok=True)
        src = os.path.join(str(manager.directory), str(step))
        if os.path.exists(src):
          dst = os.path.join(self.corrupt_dir, f"{os.path.basename(str(manager.directory))}-{step}-"
                             f"{int(time.time())}")
          shutil.move(src, dst)
        manager.reload()
    return None, None

  def restore_latest(self, abstract_state):
    return self._restore(self.latest, abstract_state)

  def restore_best(self, abstract_state):
    return self._restore(self.best, abstract_state)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
