"""Train and evaluate one run: `python -m experiments.main --config=configs/gowalla_mf.py --workdir=DIR`.

Any config field is overridable: --config.method=til_ui --config.optim.lr=1e-3 ...
Bad input ends with one line `error: ...` on stderr and exit code 2.
"""

import logging
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli
from til_jax.errors import InputError

config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      stream=sys.stderr, force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save and restore at INFO
  # JAX reports at INFO each accelerator plugin it does not find (libtpu on every CPU machine)
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  from til_jax.train.loop import train_and_evaluate
  from til_jax.train.report import format_table
  cfg = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  if cfg is None:
    raise InputError("--config is required, e.g. --config=configs/gowalla_mf.py")
  if not workdir:
    raise InputError("--workdir is required")
  result = train_and_evaluate(cfg, workdir)
  print(format_table(result))


def run(argv=None):
  cli.run(main, argv)


if __name__ == "__main__":
  run()
