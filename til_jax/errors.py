"""User-facing errors: bad input files and bad config values.

The CLI turns an `InputError` into one line `error: ...` on stderr and exit code 2, so every
message must name the file (and line) or the config field that is wrong.
"""


class InputError(Exception):
  """Bad user input (a data file, a config field). The message is shown to the user as is."""


class ConfigError(InputError):
  """A config field has a bad value; the message names the field and what is allowed."""


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient."""
