"""Top-k recommendations of a trained run, in the data's own ids:

  python -m experiments.recommend --workdir=runs/mine --k=20 --out=recs.csv [--users=ID,ID |
      --users-file=FILE] [--exclude-valid]

Writes `user,rank,item,score` (rank 1 = best) for every user or the given ones, from the best
checkpoint; each user's training items (and, with --exclude-valid, valid items) are never
recommended. Bad input ends with one line `error: ...` and exit code 2.
"""

import argparse
import logging
import sys

from til_jax.errors import InputError


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--k", type=int, default=20)
  p.add_argument("--out", required=True)
  p.add_argument("--users", default="", help="comma-separated original user ids (default: all)")
  p.add_argument("--users-file", default="", help="a file of original user ids, one per line")
  p.add_argument("--exclude-valid", action="store_true", help="also mask each user's valid items")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
  from til_jax.train.recommend import recommend, write_csv
  try:
    users = [u.strip() for u in a.users.split(",") if u.strip()] or None
    if a.users_file:
      try:
        with open(a.users_file) as f:
          users = (users or []) + [line.strip() for line in f if line.strip()]
      except OSError as e:
        raise InputError(f"{a.users_file}: cannot read ({e.strerror})") from None
    rows = recommend(a.workdir, a.k, users, a.exclude_valid)
    write_csv(rows, a.out)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{rows['user'].size} recommendations for {len(set(rows['user'].tolist()))} users -> {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
