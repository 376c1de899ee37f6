"""Readers for interaction files. Every parse error names the file and the line.

Formats:
  * LightGCN/NGCF text: `user item item ...` per line, plain or .gz (`read_user_lines`);
    a pre-split folder holds train/valid/test files of that format (`read_split_dir`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator

import numpy as np

from til_jax.errors import InputError

INT32_MAX = np.iinfo(np.int32).max


def open_text(path: str):
  """Opens a plain or gzip text file (by magic bytes), raising InputError when missing."""
  if not os.path.isfile(path):
    raise InputError(f"{path}: no such file")
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic == b"\x1f\x8b":
    return gzip.open(path, "rt", encoding="utf-8", errors="strict", newline="")
  return open(path, encoding="utf-8", errors="strict", newline="")


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without newline); wraps decode/gzip errors."""
  lineno = 0
  try:
    with open_text(path) as f:
      for lineno, line in enumerate(f, start=1):
        yield lineno, line.rstrip("\r\n")
  except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f"{path}:{lineno + 1}: unreadable ({type(e).__name__}: {e})") from None


def parse_id(tok: str, path: str, lineno: int, what: str) -> int:
  try:
    v = int(tok)
  except ValueError:
    raise InputError(f"{path}:{lineno}: {what} {tok!r} is not an integer") from None
  if v < 0:
    raise InputError(f"{path}:{lineno}: {what} {v} is negative")
  if v > INT32_MAX:
    raise InputError(f"{path}:{lineno}: {what} {v} exceeds int32")
  return v


def read_user_lines(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a LightGCN-format file. Returns (users [n] int64, items [n] int64).

  Blank lines are skipped; a line with a user and no items is allowed (the user simply has
  no interactions in this file).
  """
  users: list[np.ndarray] = []
  items: list[np.ndarray] = []
  any_line = False
  for lineno, line in iter_lines(path):
    toks = line.split()
    if not toks:
      continue
    any_line = True
    u = parse_id(toks[0], path, lineno, "user id")
    try:
      its = np.array(toks[1:], dtype=np.int64)
    except (ValueError, OverflowError):
      bad = next(t for t in toks[1:] if not _is_int(t))
      raise InputError(f"{path}:{lineno}: item id {bad!r} is not an integer") from None
    if its.size:
      if its.min() < 0:
        raise InputError(f"{path}:{lineno}: item id {int(its.min())} is negative")
      if its.max() > INT32_MAX:
        raise InputError(f"{path}:{lineno}: item id {int(its.max())} exceeds int32")
    users.append(np.full(its.size, u, dtype=np.int64))
    items.append(its)
  if not any_line:
    raise InputError(f"{path}: file is empty")
  return np.concatenate(users), np.concatenate(items)


def _is_int(t: str) -> bool:
  try:
    int(t)
    return True
  except ValueError:
    return False


def find_split_file(folder: str, name: str) -> str:
  """`folder/name.txt` or `folder/name.txt.gz`; InputError naming both when neither exists."""
  for cand in (f"{name}.txt", f"{name}.txt.gz"):
    p = os.path.join(folder, cand)
    if os.path.isfile(p):
      return p
  raise InputError(f"{folder}: split folder has no {name}.txt or {name}.txt.gz")


def read_split_dir(folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads `train`, `valid`, `test` (.txt or .txt.gz) from a pre-split folder."""
  if not os.path.isdir(folder):
    raise InputError(f"{folder}: no such split folder")
  return {part: read_user_lines(find_split_file(folder, part))
          for part in ("train", "valid", "test")}
