"""Preprocessing raw interactions into a split `Dataset`, and the on-disk cache of the result.

Pipeline (`preprocess`), in this order:
  1. duplicates: one interaction per (user, item); the latest wins (largest timestamp, else the
     last in file order), so a re-rating replaces the earlier rating;
  2. rating threshold (explicit ratings only): rating >= `rating_threshold` is a positive; the
     others are dropped from the splits (kept aside in extras["low_rated"] for the case study)
     unless `keep_all_ratings`;
  3. iterative k-core on the positives: drop users and items with fewer than `kcore`
     interactions until none is left (0 or 1: no filter);
  4. id remapping to 0..n-1 in increasing original-id order (numeric for integer ids,
     lexicographic for strings); the original ids are kept in Dataset.user_ids / item_ids;
  5. per-user random split (`split_per_user`), the procedure of the staged split-811-seed0
     folders (re-splitting the raw Gowalla / Amazon-CD files with seed 0 reproduces them exactly);
  6. a `Dataset` with CSRs; valid/test interactions whose item never occurs in train are kept
     (logged) - the rule of `registry.from_split_pairs`.

Cache (`load_or_build`): `<cache_dir>/processed/<name>-<key>.npz`, key = SHA-256 of the source files'
SHA-256 sums, the preprocessing settings and CACHE_VERSION. Written atomically (temp file +
os.replace); a file that fails to load or whose content digest does not match is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from til_jax.data.dataset import CSR, Dataset
from til_jax.data.readers import Interactions
from til_jax.errors import ConfigError, InputError

CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Settings:
  """Preprocessing settings (every field is part of the cache key).

  rating_threshold: explicit ratings >= this are positives (ignored without a rating column).
  keep_all_ratings: every rated interaction is a positive (the threshold is not applied), for
    rating studies; the ratings stay in extras["rating"].
  kcore: iterative k-core on users and items (0 = none).
  ratios: (train, valid, test) fractions per user, summing to 1.
  seed: seed of the per-user split.
  """

  rating_threshold: float = 4.0
  keep_all_ratings: bool = False
  kcore: int = 0
  ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
  seed: int = 0

  def __post_init__(self):
    r = tuple(float(x) for x in self.ratios)
    if len(r) != 3 or min(r) < 0 or abs(sum(r) - 1.0) > 1e-6 or r[0] <= 0:
      raise ConfigError(f"config.data split ratios {self.ratios!r}: need 3 fractions >= 0 "
                        "(train > 0) summing to 1")
    if int(self.kcore) < 0:
      raise ConfigError(f"config.data.kcore: {self.kcore} is negative")
    object.__setattr__(self, "ratios", r)

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- steps


def dedupe_latest(inter: Interactions) -> np.ndarray:
  """Indices (sorted) of the rows to keep: one per (user, item), the latest by timestamp (ties
  and files without timestamps: the last in file order)."""
  n = len(inter)
  if n == 0:
    return np.zeros(0, np.int64)
  _, u = np.unique(inter.users, return_inverse=True)
  _, i = np.unique(inter.items, return_inverse=True)
  key = u.astype(np.int64) * (int(i.max()) + 1) + i
  order = np.arange(n)
  if inter.timestamps is not None:
    order = np.lexsort((order, inter.timestamps))  # by time, then file position
  # last occurrence of each key in `order`
  rev = order[::-1]
  _, first_in_rev = np.unique(key[rev], return_index=True)
  return np.sort(rev[first_in_rev])


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
  """[n] bool: the interactions that survive the iterative k-core filter (users and items with
  at least k interactions each). users, items: [n] integer codes >= 0."""
  keep = np.ones(users.shape[0], bool)
  if k <= 1:
    return keep
  nu, ni = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
  while True:
    cu = np.bincount(users[keep], minlength=nu)
    ci = np.bincount(items[keep], minlength=ni)
    new = keep & (cu[users] >= k) & (ci[items] >= k)
    if new.sum() == keep.sum():
      return new
    keep = new


def remap(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(codes [n] int32 in 0..m-1, originals [m]) with originals sorted (code = rank)."""
  originals, codes = np.unique(ids, return_inverse=True)
  return codes.astype(np.int32).reshape(-1), originals


def split_counts(n: int, ratios: Sequence[float]) -> tuple[int, int]:
  """(n_valid, n_test) for a user with n items: round(ratio * n) (Python rounding), at least 1
  each (when its ratio > 0) if n >= 3, capped so that train keeps at least one item; users
  with fewer than 3 items keep everything in train."""
  if n < 3:
    return 0, 0
  _, rv, rt = ratios
  n_test = max(1, round(rt * n)) if rt > 0 else 0
  n_valid = max(1, round(rv * n)) if rv > 0 else 0
  n_test = min(n_test, n - 1)
  n_valid = min(n_valid, n - 1 - n_test)
  return n_valid, n_test


def split_per_user(users: np.ndarray, items: np.ndarray, n_users: int, ratios: Sequence[float],
                   seed: int) -> np.ndarray:
  """Per-user random split. users, items: [n] internal ids, no duplicate pairs.

  Procedure (that of the staged split-811-seed0 folders): one `np.random.default_rng(seed)`;
  users in increasing id order; each user's items sorted by id, permuted with
  `rng.permutation`; the first n_test go to test, the next n_valid to valid, the rest to
  train (`split_counts`). Returns part [n] int8: 0 train, 1 valid, 2 test.
  """
  users = np.asarray(users, np.int64)
  items = np.asarray(items, np.int64)
  order = np.lexsort((items, users))
  counts = np.bincount(users, minlength=n_users)
  starts = np.concatenate([[0], np.cumsum(counts)])
  rng = np.random.default_rng(seed)
  part_sorted = np.zeros(users.size, np.int8)
  for u in np.flatnonzero(counts):
    n = int(counts[u])
    perm = rng.permutation(n)
    n_valid, n_test = split_counts(n, ratios)
    s = starts[u]
    part_sorted[s + perm[:n_test]] = 2
    part_sorted[s + perm[n_test:n_test + n_valid]] = 1
  part = np.empty_like(part_sorted)
  part[order] = part_sorted
  return part


def build_dataset(name: str, users: np.ndarray, items: np.ndarray, part: np.ndarray, n_users: int,
                  n_items: int, train_values: dict[str, np.ndarray] | None = None,
                  source: str = "", **kw) -> Dataset:
  """A Dataset from per-interaction arrays [n] (users, items, part 0/1/2) and per-interaction
  values [n] of which the train entries go into extras, aligned with train.to_pairs().
  Valid/test interactions with an item unseen in train are kept (counted in the log; the
  evaluation option `eval.drop_cold_items` drops them). `kw` go to Dataset (user_ids, item_ids,
  extras)."""
  users = np.asarray(users, np.int64)
  items = np.asarray(items, np.int64)
  tr = part == 0
  if not tr.any():
    raise InputError(f"{source or name}: no training interactions left after preprocessing")
  train = CSR.from_pairs(users[tr], items[tr], n_users, n_items)
  seen = np.zeros(n_items, bool)
  seen[train.indices] = True
  splits = {}
  for p, nm in ((1, "valid"), (2, "test")):
    m = part == p
    cold = m & ~seen[items]
    if cold.any():
      logging.info("%s: %d %s interactions have an item with no training interaction (kept as "
                   "targets)", source or name, int(cold.sum()), nm)
    splits[nm] = CSR.from_pairs(users[m], items[m], n_users, n_items)
  extras = dict(kw.pop("extras", {}))
  if train_values:
    tu, ti = users[tr], items[tr]
    order = np.argsort(tu * n_items + ti, kind="stable")
    if order.size != train.nnz:
      raise ValueError("build_dataset: duplicate train pairs; dedupe before attaching values")
    for k, v in train_values.items():
      extras[k] = np.asarray(v)[tr][order]
  return Dataset(name=name, n_users=int(n_users), n_items=int(n_items), train=train,
                 valid=splits["valid"], test=splits["test"], extras=extras, **kw)


def preprocess(inter: Interactions, name: str, settings: Settings) -> Dataset:
  """Raw interactions -> split Dataset (see the module docstring for the steps)."""
  src = inter.source
  if len(inter) == 0:
    raise InputError(f"{src}: no interactions")
  inter = inter.take(dedupe_latest(inter))
  low = None
  if inter.ratings is not None and not settings.keep_all_ratings:
    pos = inter.ratings >= settings.rating_threshold
    low = inter.take(~pos)
    inter = inter.take(pos)
    if len(inter) == 0:
      raise InputError(f"{src}: no rating >= {settings.rating_threshold} (config.data.rating_threshold)")
  uc, user_codes = remap(inter.users)  # codes: the file's ids, or codes into its vocabulary
  ic, item_codes = remap(inter.items)
  keep = kcore_mask(uc, ic, int(settings.kcore))
  if not keep.all():
    inter = inter.take(keep)
    if len(inter) == 0:
      raise InputError(f"{src}: nothing is left after the {settings.kcore}-core filter (config.data.kcore)")
    uc, user_codes = remap(inter.users)
    ic, item_codes = remap(inter.items)
  n_users, n_items = len(user_codes), len(item_codes)
  user_ids = user_codes if inter.user_vocab is None else inter.user_vocab[user_codes]
  item_ids = item_codes if inter.item_vocab is None else inter.item_vocab[item_codes]
  part = split_per_user(uc, ic, n_users, settings.ratios, settings.seed)
  values = {}
  if inter.ratings is not None:
    values["rating"] = inter.ratings.astype(np.float32)
  if inter.plays is not None:
    values["plays"] = inter.plays.astype(np.float32)
  if inter.timestamps is not None:
    values["timestamp"] = inter.timestamps.astype(np.float64)
  extras = {}
  if low is not None and len(low):
    lu = _lookup(user_codes, low.users)
    li = _lookup(item_codes, low.items)
    ok = (lu >= 0) & (li >= 0)
    lu, li, lr = lu[ok], li[ok], low.ratings[ok]
    extras["low_rated"] = CSR.from_pairs(lu, li, n_users, n_items)
    order = np.argsort(lu.astype(np.int64) * n_items + li, kind="stable")
    extras["low_rated_rating"] = lr[order].astype(np.float32)
  identity = lambda ids, n: ids.dtype.kind in "iu" and np.array_equal(ids, np.arange(n))
  return build_dataset(
      name, uc, ic, part, n_users, n_items, values, src, extras=extras,
      user_ids=None if identity(user_ids, n_users) else user_ids,
      item_ids=None if identity(item_ids, n_items) else item_ids)


def _lookup(originals: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """Internal codes of `ids` in the sorted `originals`, -1 where absent."""
  pos = np.searchsorted(originals, ids)
  pos = np.minimum(pos, len(originals) - 1)
  return np.where(originals[pos] == ids, pos, -1).astype(np.int64)


# ----------------------------------------------------------------------------- cache


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "til_jax")


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while b := f.read(chunk):
      h.update(b)
  return h.hexdigest()


def cache_key(sources: Sequence[str], settings: dict) -> str:
  """SHA-256 over the sources' content checksums, the settings and CACHE_VERSION."""
  payload = {"version": CACHE_VERSION, "settings": settings,
             "sources": [file_sha256(p) for p in sources]}
  return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _arrays_of(ds: Dataset) -> dict[str, np.ndarray]:
  a: dict[str, np.ndarray] = {"meta.name": np.array(ds.name), "meta.n_users": np.array(ds.n_users),
                              "meta.n_items": np.array(ds.n_items)}
  for part in ("train", "valid", "test"):
    c = getattr(ds, part)
    a[f"{part}.indptr"], a[f"{part}.indices"] = c.indptr, c.indices
  for k in ("user_ids", "item_ids"):
    v = getattr(ds, k)
    if v is not None:
      a[f"ids.{k}"] = v.astype(str) if v.dtype.kind in "OU" else v
  for k, v in ds.extras.items():
    if isinstance(v, CSR):
      a[f"csr.{k}.indptr"], a[f"csr.{k}.indices"] = v.indptr, v.indices
      a[f"csr.{k}.shape"] = np.array([v.n_rows, v.n_cols], np.int64)
    elif isinstance(v, np.ndarray):
      a[f"arr.{k}"] = v
    else:
      a[f"obj.{k}"] = np.array(v)
  return a


def _digest(arrays: dict[str, np.ndarray]) -> str:
  h = hashlib.sha256()
  for k in sorted(arrays):
    v = np.ascontiguousarray(arrays[k])
    h.update(k.encode())
    h.update(str(v.dtype).encode())
    h.update(str(v.shape).encode())
    h.update(v.tobytes())
  return h.hexdigest()


def save_npz(ds: Dataset, path: str, key: str = "") -> None:
  """Atomically writes `ds` to `path` (.npz): temp file in the same folder, fsync, os.replace."""
  arrays = _arrays_of(ds)
  arrays["meta.key"] = np.array(key)
  arrays["meta.digest"] = np.array(_digest(arrays))
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load_npz(path: str, key: str | None = None) -> Dataset:
  """Reads a Dataset written by `save_npz`; ValueError when it is corrupt or has another key."""
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  digest = str(arrays.pop("meta.digest"))
  if _digest(arrays) != digest:
    raise ValueError(f"{path}: content digest mismatch")
  if key is not None and str(arrays["meta.key"]) != key:
    raise ValueError(f"{path}: cache key mismatch")
  n_users, n_items = int(arrays["meta.n_users"]), int(arrays["meta.n_items"])
  parts = {p: CSR(arrays[f"{p}.indptr"], arrays[f"{p}.indices"], n_users, n_items)
           for p in ("train", "valid", "test")}
  extras: dict = {}
  for k, v in arrays.items():
    if k.startswith("arr."):
      extras[k[4:]] = v
    elif k.startswith("obj."):
      extras[k[4:]] = v.item()
    elif k.startswith("csr.") and k.endswith(".shape"):
      nm = k[4:-6]
      extras[nm] = CSR(arrays[f"csr.{nm}.indptr"], arrays[f"csr.{nm}.indices"], int(v[0]), int(v[1]))
  ds = Dataset(name=str(arrays["meta.name"]), n_users=n_users, n_items=n_items, extras=extras,
               user_ids=arrays.get("ids.user_ids"), item_ids=arrays.get("ids.item_ids"), **parts)
  ds.check()
  return ds


def load_or_build(name: str, sources: Sequence[str], settings: dict, build: Callable[[], Dataset],
                  cache_dir: str | None = None) -> Dataset:
  """The cached Dataset for (sources, settings), built with `build()` and cached on a miss.

  A cache file that cannot be read, fails its digest or has another key is logged and rebuilt.
  A cache dir that cannot be written only costs the rebuild next time (logged).
  """
  cache_dir = cache_dir or default_cache_dir()
  key = cache_key(sources, settings)
  path = os.path.join(cache_dir, "processed", f"{name}-{key[:20]}.npz")
  if os.path.exists(path):
    try:
      ds = load_npz(path, key)
      logging.info("%s: loaded from cache %s", name, path)
      return ds
    except Exception as e:  # noqa: BLE001 - any failure to read a cache file means: rebuild it
      logging.warning("%s: cache file %s is unreadable (%s: %s); rebuilding", name, path,
                      type(e).__name__, e)
  ds = build()
  try:
    save_npz(ds, path, key)
  except OSError as e:
    logging.warning("%s: cannot write the cache file %s (%s)", name, path, e)
  return ds
