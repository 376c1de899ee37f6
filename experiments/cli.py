"""The command-line shell of the absl-flag commands (experiments.main, experiments.weight_drift).

`run(main, argv)` parses the flags (config overrides included) and runs `main(argv)`; bad input
ends with one line `error: ...` on stderr and exit code 2, non-finite training with exit code 3.
"""

import sys

from absl import flags

from til_jax.errors import InputError, NonFiniteError


def run(main, argv=None) -> None:
  argv = sys.argv if argv is None else argv
  try:
    try:
      flags.FLAGS(argv)
    except flags.Error as e:
      raise InputError(str(e).splitlines()[0]) from None
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      # ml_collections reports an unknown or mistyped override this way.
      bad = [a for a in argv[1:] if a.startswith("--config.")]
      raise InputError(f"bad config override among {' '.join(bad) or argv[1:]}: {e}") from None
    main(argv)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
