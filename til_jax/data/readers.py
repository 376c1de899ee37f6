"""Readers for interaction files. Every parse error is an `InputError("<file>:<line>: ...")`.

Formats (`read_interactions(path, fmt)`; `fmt="auto"` guesses from the file name, see
`detect_format`). Every file may be plain or gzip-compressed (told by its magic bytes).

  lightgcn     `user item item ...` per line (LightGCN / NGCF), integer ids.
  movielens    MovieLens u.data: `user<TAB>item[<TAB>rating[<TAB>timestamp]]`, no header,
               integer ids (every line has the field count of the first).
  movielens-1m the same with `::` separators (ratings.dat of ML-1M/10M).
  csv, tsv     `,` / TAB separated with a header line naming the columns (aliases below);
               string ids allowed; surrounding double quotes are stripped (no quoted separators).
  recbole      RecBole atomic `.inter`: TAB separated, header `name:type` (`user_id:token`,
               `item_id:token`, `rating:float`, `timestamp:float`); token ids may be strings.
  lastfm-2k    HetRec 2011 `user_artists.dat`: header `userID<TAB>artistID<TAB>weight`,
               integer ids, weight = play count.
  lastfm-360k  `usersha1-artmbid-artname-plays.tsv`: `user-sha1<TAB>artist-mbid<TAB>artist-name
               <TAB>plays`, no header, string ids; the item is the MusicBrainz id, or
               "name:<artist-name>" where the mbid is empty; rows with neither are skipped
               (counted in a warning).

Integer ids must be decimal ASCII, >= 0 and <= 2**31 - 1. String ids are returned as codes into
a sorted vocabulary (`Interactions.user_vocab` / `item_vocab`); a string-id column whose every
value is a canonical non-negative decimal (no leading zeros) is read as integers instead, so that
remapping orders them numerically. Blank lines are skipped everywhere. Errors name the first bad
line; nothing but `InputError` (bad data) or `ConfigError` (bad format name) is raised.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import re
import zlib
from collections.abc import Iterator

import numpy as np

from til_jax.errors import ConfigError, InputError

INT32_MAX = int(np.iinfo(np.int32).max)
FORMATS = ("lightgcn", "movielens", "movielens-1m", "csv", "tsv", "recbole", "lastfm-2k",
           "lightgcn-pytorch", "lastfm-360k")

_INT_TOK = re.compile(r"-?[0-9]+")
_INT_LINE = re.compile(r"[ \t]*[0-9]+(?:[ \t]+[0-9]+)*[ \t]*")
_CANON_UINT = re.compile(r"0|[1-9][0-9]{0,17}")

# header name (lowercase, RecBole type suffix removed) -> role, for csv / tsv / recbole
ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "user-sha1", "usersha1", "customer_id",
             "reviewerid", "reviewer_id"),
    "item": ("item", "item_id", "itemid", "iid", "movie_id", "movieid", "artist_id", "artistid",
             "artist-mbid", "business_id", "asin", "product_id", "productid", "track_id", "book_id"),
    "rating": ("rating", "ratings", "score", "stars", "overall"),
    "plays": ("weight", "plays", "count", "playcount", "play_count", "clicks"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "unix_timestamp"),
}
_ROLE_OF = {name: role for role, names in ALIASES.items() for name in names}


@dataclasses.dataclass(frozen=True)
class Interactions:
  """Raw interactions as read, one entry per data row, in file order.

  users, items: [n] int64. With integer ids in the file they are those ids; with string ids
  they are codes into `user_vocab` / `item_vocab` (sorted str arrays, so code order is the
  lexicographic order of the strings; this keeps 17M-row files compact).
  ratings / plays / timestamps: [n] float64, or None when the format has no such column.
  """

  users: np.ndarray
  items: np.ndarray
  ratings: np.ndarray | None = None
  plays: np.ndarray | None = None
  timestamps: np.ndarray | None = None
  source: str = ""
  user_vocab: np.ndarray | None = None
  item_vocab: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.users.shape[0])

  def user_values(self) -> np.ndarray:
    """[n] the original user ids (strings where the file has strings)."""
    return self.users if self.user_vocab is None else self.user_vocab[self.users]

  def item_values(self) -> np.ndarray:
    return self.items if self.item_vocab is None else self.item_vocab[self.items]

  def take(self, idx: np.ndarray) -> Interactions:
    """The rows `idx` (an index array or a bool mask); vocabularies are kept whole."""
    f = lambda a: None if a is None else a[idx]
    return dataclasses.replace(self, users=self.users[idx], items=self.items[idx],
                               ratings=f(self.ratings), plays=f(self.plays), timestamps=f(self.timestamps))

  @staticmethod
  def concat(parts: list[Interactions]) -> Interactions:
    """Rows of all parts in order; string vocabularies are merged (codes recomputed)."""
    if len(parts) == 1:
      return parts[0]

    def cat(name):
      vals = [getattr(p, name) for p in parts]
      return None if any(v is None for v in vals) else np.concatenate(vals)

    def ids(name):
      vocabs = [getattr(p, f"{name}_vocab") for p in parts]
      vals = [getattr(p, f"{name}s") for p in parts]
      if all(v is None for v in vocabs):
        return np.concatenate(vals), None
      strs = [v.astype(str) if voc is None else voc[v] for v, voc in zip(vals, vocabs, strict=True)]
      vocab, codes = np.unique(np.concatenate(strs), return_inverse=True)
      return codes.astype(np.int64).reshape(-1), vocab

    users, user_vocab = ids("user")
    items, item_vocab = ids("item")
    return Interactions(users, items, cat("ratings"), cat("plays"), cat("timestamps"),
                        ",".join(p.source for p in parts), user_vocab, item_vocab)


# ----------------------------------------------------------------------------- low level


def open_text(path: str):
  """Opens a plain or gzip text file (by magic bytes), raising InputError when missing."""
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise InputError(f"{path}: not a regular file")
  try:
    with open(path, "rb") as f:
      magic = f.read(2)
  except OSError as e:
    raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
  if magic == b"\x1f\x8b":
    return gzip.open(path, "rt", encoding="utf-8", errors="strict", newline="")
  return open(path, encoding="utf-8", errors="strict", newline="")


def iter_chunks(path: str) -> Iterator[tuple[int, list[str]]]:
  """Yields (line number of the first line, lines without their newlines) about 1 MiB at a
  time; wraps decode/gzip errors (with the exact line, found by a binary re-scan)."""
  lineno = 0
  try:
    with open_text(path) as f:
      while True:
        chunk = f.readlines(1 << 20)
        if not chunk:
          break
        yield lineno + 1, [line.rstrip("\r\n") for line in chunk]
        lineno += len(chunk)
  except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
    what = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else "unreadable"
    if isinstance(e, EOFError):
      what = "truncated compressed file"
    raise InputError(f"{path}:{_bad_line(path, lineno + 1)}: {what} ({type(e).__name__}: {e})") from None


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without its newline); errors as in `iter_chunks`."""
  for start, lines in iter_chunks(path):
    yield from enumerate(lines, start=start)


def _bad_line(path: str, default: int) -> int:
  """The 1-based line where decoding (UTF-8 or gzip) first fails, by a binary re-scan."""
  n = 0
  try:
    with open(path, "rb") as raw:
      gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
      for n, bline in enumerate(f, start=1):  # noqa: B007 - n is used after the loop
        bline.decode("utf-8")
  except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error, OSError):
    return max(n, 1)
  return default


def _show(tok: str) -> str:
  return repr(tok) if len(tok) <= 40 else repr(tok[:40]) + "..."


def parse_id(tok: str, path: str, lineno: int, what: str) -> int:
  """A strict decimal id in [0, 2**31 - 1]."""
  if not _INT_TOK.fullmatch(tok):
    hint = " (a header line? this format has none)" if lineno == 1 and what == "user id" else ""
    raise InputError(f"{path}:{lineno}: {what} {_show(tok)} is not an integer{hint}")
  v = int(tok)
  if v < 0:
    raise InputError(f"{path}:{lineno}: {what} {_show(tok)[1:-1]} is negative")
  if v > INT32_MAX:
    raise InputError(f"{path}:{lineno}: {what} {_show(tok).replace(chr(39), '')} exceeds int32")
  return v


def _parse_float(tok: str, path: str, lineno: int, what: str) -> float:
  try:
    v = float(tok)
  except ValueError:
    hint = " (a header line? this format has none)" if lineno == 1 else ""
    raise InputError(f"{path}:{lineno}: {what} {_show(tok)} is not a number{hint}") from None
  if not np.isfinite(v):
    raise InputError(f"{path}:{lineno}: {what} {_show(tok)} is not finite")
  return v


# ----------------------------------------------------------------------------- LightGCN


def read_user_lines(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a LightGCN-format file. Returns (users [n] int64, items [n] int64) in file order.

  Blank lines are skipped; a line with a user and no items is allowed (the user simply has
  no interactions in this file).
  """
  heads: list[str] = []
  counts: list[int] = []
  toks_all: list[str] = []
  any_line = False
  for lineno, line in iter_lines(path):
    if not line.strip():
      continue
    any_line = True
    if not _INT_LINE.fullmatch(line):
      _diagnose_int_line(line, path, lineno)
    toks = line.split()
    heads.append(toks[0])
    counts.append(len(toks) - 1)
    toks_all.extend(toks[1:])
  if not any_line:
    raise InputError(f"{path}: file is empty")
  # every token is [0-9]+ here; only the int32 bound is left to check (per line for the message)
  users = _digits_to_int(heads)
  items = _digits_to_int(toks_all)
  if users.max() > INT32_MAX or (items.size and items.max() > INT32_MAX):
    for lineno, line in iter_lines(path):
      if line.strip():
        toks = line.split()
        parse_id(toks[0], path, lineno, "user id")
        for t in toks[1:]:
          parse_id(t, path, lineno, "item id")
  return np.repeat(users, counts), items


def _digits_to_int(toks: list[str]) -> np.ndarray:
  """[0-9]+ tokens -> int64, values above int64 clipped to 2**63 - 1 (caught by the int32 check)."""
  try:
    return np.array(toks, dtype=np.int64)
  except OverflowError:
    return np.array([min(int(t), 2**63 - 1) for t in toks], dtype=np.int64)


def _diagnose_int_line(line: str, path: str, lineno: int) -> None:
  toks = line.split() or [line]
  parse_id(toks[0], path, lineno, "user id")
  for t in toks[1:]:
    parse_id(t, path, lineno, "item id")
  raise InputError(f"{path}:{lineno}: malformed line (only spaces or tabs may separate ids)")


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


# ----------------------------------------------------------------------------- delimited


@dataclasses.dataclass(frozen=True)
class _Col:
  role: str   # user | item | rating | plays | timestamp | skip | name (lastfm-360k artist name)
  kind: str   # int | str | str? (may be empty) | float


class _Vocab:
  """Incremental string -> code map; `finish` sorts it (or turns all-integer vocabularies into
  the integers themselves)."""

  def __init__(self):
    self.index: dict[str, int] = {}

  def encode(self, toks: list[str]) -> np.ndarray:
    idx = self.index
    return np.fromiter((idx.setdefault(t, len(idx)) for t in toks), np.int64, len(toks))

  def finish(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    vocab = np.array(list(self.index), dtype=str)
    as_int = _maybe_int(vocab)
    if as_int.dtype.kind == "i":
      return as_int[codes], None
    order = np.argsort(vocab, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[codes], vocab[order]


_CHUNK = 1 << 19  # rows converted to arrays at a time (bounds the memory of Python strings)


def _read_delimited(path: str, sep: str, cols: list[_Col] | None, header: str,
                    expected_header: tuple[str, ...] | None = None,
                    allowed_counts: tuple[int, ...] | None = None) -> Interactions:
  """Generic delimited reader.

  header: "none" (cols given; or, with allowed_counts, the first line fixes how many of `cols`
  are present), "names" (csv/tsv: roles from the header names), "recbole" (`name:type`
  fields), "exact" (the header must equal `expected_header`, then `cols` apply).
  Rows are converted in chunks; string columns are coded through a vocabulary.
  """
  seps = "TAB" if sep == "\t" else repr(sep)
  rows: list[list[str]] = []
  linenos: list[int] = []
  out: dict[str, list[np.ndarray]] = {}
  vocabs: dict[str, _Vocab] = {}
  n_fields = None
  got_header = header == "none"
  any_line = False
  n_rows = 0
  skipped: list[int] = []

  def flush():
    for c, col in zip(cols, zip(*rows, strict=True), strict=True):
      if c.role in ("skip", "name"):
        continue
      what = {"user": "user id", "item": "item id"}.get(c.role, c.role)
      if c.kind == "int":
        arr = _int_column([t.strip() for t in col], linenos, path, what)
      elif c.kind == "float":
        arr = _float_column([t.strip() for t in col], linenos, path, what)
        if c.role == "plays" and np.any(arr < 0):
          k = int(np.flatnonzero(arr < 0)[0])
          raise InputError(f"{path}:{linenos[k]}: play count {col[k].strip()} is negative")
      else:
        toks = [t.strip().strip('"') for t in col]
        if c.kind == "str" and not all(toks):
          raise InputError(f"{path}:{linenos[toks.index('')]}: {what} is empty")
        arr = vocabs.setdefault(c.role, _Vocab()).encode(toks)
      out.setdefault(c.role, []).append(arr)

  for start, lines in iter_chunks(path):
    nums: list[int] | range = range(start, start + len(lines))
    if not all(line.strip() for line in lines):  # blank lines are skipped
      keep = [k for k, line in enumerate(lines) if line.strip()]
      nums, lines = [nums[k] for k in keep], [lines[k] for k in keep]
    if not lines:
      continue
    any_line = True
    if not got_header:
      cols = _header_cols(lines[0].split(sep), header, path, nums[0], sep, expected_header, cols)
      n_fields = len(lines[0].split(sep))
      got_header = True
      nums, lines = nums[1:], lines[1:]
      if not lines:
        continue
    if n_fields is None:  # headerless: the first line decides
      n = len(lines[0].split(sep))
      if allowed_counts is not None and n not in allowed_counts:
        raise InputError(f"{path}:{nums[0]}: expected {_counts_text(allowed_counts)} fields separated "
                         f"by {seps}, found {n} (wrong delimiter?)")
      n_fields = n if allowed_counts is not None else len(cols)
      cols = cols[:n_fields]
      name_at = next((k for k, c in enumerate(cols) if c.role == "name"), None)
      item_at = next(k for k, c in enumerate(cols) if c.role == "item")
    fields = [line.split(sep) for line in lines]
    if any(len(f) != n_fields for f in fields):
      k = next(k for k, f in enumerate(fields) if len(f) != n_fields)
      nf = len(fields[k])
      raise InputError(f"{path}:{nums[k]}: expected {n_fields} fields separated by {seps}, "
                       f"found {nf}" + (" (wrong delimiter?)" if nf == 1 else ""))
    nums = list(nums)
    if header == "none" and name_at is not None:  # lastfm-360k: the name stands in for an mbid
      no_mbid = [k for k, f in enumerate(fields) if not f[item_at] or f[item_at].isspace()]
      drop = set()
      for k in no_mbid:
        name = fields[k][name_at].strip()
        if name:
          fields[k][item_at] = "name:" + name
        else:
          drop.add(k)
          skipped.append(nums[k])
      if drop:
        fields = [f for k, f in enumerate(fields) if k not in drop]
        nums = [n for k, n in enumerate(nums) if k not in drop]
    rows.extend(fields)
    linenos.extend(nums)
    if len(rows) >= _CHUNK:
      flush()
      n_rows += len(rows)
      rows, linenos = [], []
  if not any_line:
    raise InputError(f"{path}: file is empty")
  if rows:
    flush()
    n_rows += len(rows)
  if skipped:  # rows naming no artist at all cannot be used
    logging.warning("%s: skipped %d rows with neither an artist mbid nor a name (first: line %d)",
                    path, len(skipped), skipped[0])
  if not n_rows:
    raise InputError(f"{path}: no interactions" + (" after the header" if header != "none" else ""))
  arrays = {k: np.concatenate(v) for k, v in out.items()}
  vocab = {}
  for role in ("user", "item"):
    if role in vocabs:
      arrays[role], vocab[role] = vocabs[role].finish(arrays[role])
  return Interactions(arrays["user"], arrays["item"], arrays.get("rating"), arrays.get("plays"),
                      arrays.get("timestamp"), path, vocab.get("user"), vocab.get("item"))


def _counts_text(counts: tuple[int, ...]) -> str:
  return f"{min(counts)} to {max(counts)}" if len(counts) > 1 else str(counts[0])


def _header_cols(fields, header, path, lineno, sep, expected, cols):
  seps = "TAB" if sep == "\t" else repr(sep)
  names = [f.strip().strip('"') for f in fields]
  if header == "exact":
    if tuple(n.lower() for n in names) != tuple(e.lower() for e in expected):
      want = f"<{seps}>".join(expected)
      raise InputError(f"{path}:{lineno}: expected the header {want!r}, found {line_of(names, seps)!r}"
                       + (" (wrong delimiter?)" if len(fields) == 1 else ""))
    return cols
  if len(fields) == 1:
    raise InputError(f"{path}:{lineno}: the header has a single field {names[0][:60]!r}; expected "
                     f"columns separated by {seps} (wrong delimiter?)")
  out: list[_Col] = []
  seen = set()
  for n in names:
    base, typ = n, None
    if header == "recbole":
      if ":" not in n:
        raise InputError(f"{path}:{lineno}: not a RecBole atomic header: field {n!r} is not "
                         "'name:type' (e.g. user_id:token)")
      base, typ = n.rsplit(":", 1)
      if typ not in ("token", "token_seq", "float", "float_seq"):
        raise InputError(f"{path}:{lineno}: RecBole field {n!r} has unknown type {typ!r}")
    role = _ROLE_OF.get(base.strip().lower(), "skip")
    if role in seen:
      role = "skip"  # the first matching column wins
    if role != "skip":
      seen.add(role)
    kind = "str" if role in ("user", "item") else "float"
    out.append(_Col(role, kind))
  for need in ("user", "item"):
    if need not in seen:
      raise InputError(f"{path}:{lineno}: the header {names!r} has no {need} column (one of "
                       f"{', '.join(ALIASES[need][:6])}, ...; does the file have a header?)")
  return out


def line_of(names: list[str], seps: str) -> str:
  return f"<{seps}>".join(n[:40] for n in names)[:120]


def _int_column(toks: list[str], linenos: list[int], path: str, what: str) -> np.ndarray:
  joined = "".join(toks)
  if joined.isascii() and joined.isdigit() and all(toks):
    arr = _digits_to_int(toks)
    if arr.max(initial=0) <= INT32_MAX:
      return arr
  for t, ln in zip(toks, linenos, strict=True):
    parse_id(t, path, ln, what)
  raise AssertionError("unreachable")


def _float_column(toks: list[str], linenos: list[int], path: str, what: str) -> np.ndarray:
  try:
    arr = np.array(toks, dtype=np.float64)
    if np.all(np.isfinite(arr)) and "_" not in "".join(toks):
      return arr
  except ValueError:
    pass
  for t, ln in zip(toks, linenos, strict=True):
    if "_" in t:
      raise InputError(f"{path}:{ln}: {what} {_show(t)} is not a number")
    _parse_float(t, path, ln, what)
  raise AssertionError("unreachable")


def _maybe_int(arr: np.ndarray) -> np.ndarray:
  """String ids that are all canonical non-negative decimals become int64 (numeric order)."""
  if arr.size and arr.dtype.kind == "U" and all(_CANON_UINT.fullmatch(t) for t in arr.tolist()):
    return arr.astype(np.int64)
  return arr


# ----------------------------------------------------------------------------- per format


def read_lightgcn(path: str) -> Interactions:
  users, items = read_user_lines(path)
  return Interactions(users, items, source=path)


def read_movielens(path: str, sep: str = "\t") -> Interactions:
  cols = [_Col("user", "int"), _Col("item", "int"), _Col("rating", "float"), _Col("timestamp", "float")]
  return _read_delimited(path, sep, cols, "none", allowed_counts=(2, 3, 4))


def read_csv(path: str, sep: str = ",") -> Interactions:
  return _read_delimited(path, sep, None, "names")


def read_recbole(path: str) -> Interactions:
  return _read_delimited(path, "\t", None, "recbole")


def read_lastfm_2k(path: str) -> Interactions:
  cols = [_Col("user", "int"), _Col("item", "int"), _Col("plays", "float")]
  return _read_delimited(path, "\t", cols, "exact", expected_header=("userID", "artistID", "weight"))


def read_lightgcn_pytorch(path: str) -> Interactions:
  """LightGCN-PyTorch's Last.fm files (data1.txt, test1.txt): `user<TAB>item<TAB>weight`, no
  header, 1-based ids (remapped like any other), the weight a float (scientific notation too)."""
  cols = [_Col("user", "int"), _Col("item", "int"), _Col("plays", "float")]
  return _read_delimited(path, "\t", cols, "none")


def read_lastfm_360k(path: str) -> Interactions:
  cols = [_Col("user", "str"), _Col("item", "str?"), _Col("name", "str?"), _Col("plays", "float")]
  return _read_delimited(path, "\t", cols, "none")


READERS = {
    "lightgcn": read_lightgcn,
    "movielens": read_movielens,
    "movielens-1m": lambda p: read_movielens(p, "::"),
    "csv": read_csv,
    "tsv": lambda p: read_csv(p, "\t"),
    "recbole": read_recbole,
    "lastfm-2k": read_lastfm_2k,
    "lightgcn-pytorch": read_lightgcn_pytorch,
    "lastfm-360k": read_lastfm_360k,
}


def detect_format(path: str) -> str:
  """The format from the file name (a trailing .gz is ignored); ConfigError if unknown."""
  base = os.path.basename(path).lower()
  if base.endswith(".gz"):
    base = base[:-3]
  if base == "u.data" or base.startswith("u.data") or base.endswith(".data"):
    return "movielens"
  if base == "ratings.dat":
    return "movielens-1m"
  if base == "user_artists.dat":
    return "lastfm-2k"
  if base.startswith("usersha1-artmbid"):
    return "lastfm-360k"
  for ext, fmt in ((".inter", "recbole"), (".csv", "csv"), (".tsv", "tsv"), (".txt", "lightgcn")):
    if base.endswith(ext):
      return fmt
  raise ConfigError(f"config.data.format: cannot tell the format of {path} from its name; set one of "
                    f"{', '.join(FORMATS)}")


def read_interactions(path: str, fmt: str = "auto") -> Interactions:
  """Reads one interaction file in format `fmt` (see the module docstring)."""
  if fmt in ("auto", "", None):
    fmt = detect_format(path)
  if fmt not in READERS:
    raise ConfigError(f"config.data.format: unknown format {fmt!r}; known: auto, {', '.join(FORMATS)}")
  return READERS[fmt](path)
