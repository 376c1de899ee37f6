"""Datasets by name or path: resolve, read, preprocess, cache, build a `Dataset`.

`load_dataset(config.data)` reads these fields of the `data` section (defaults in brackets):

  name (str) ["gowalla"]       gowalla | amazon-cd | lastfm | ml-100k | lastfm-2k | lastfm-360k |
                               synthetic.
  path (str) [""]              a pre-split folder (train/valid/test .txt[.gz]) or a single
                               interaction file (preprocessed and split like a named dataset);
                               overrides `name`: the dataset is then named after the path
                               (`name_of_path`) and reports the path as its `source`.
  format (str) ["auto"]        reader format of a single file given by `path` (readers.FORMATS;
                               "auto" guesses from the file name).
  root (str) [""]              first data root to look in (then $TIL_DATA_DIR, then cache_dir).
  cache_dir (str) [""]         downloads and processed-dataset cache; "" = $XDG_CACHE_HOME/til_jax
                               or ~/.cache/til_jax.
  split (str) ["split-811-seed0"]
                               pre-split folder `<root>/<dataset>/<split>` to use when present. A
                               name `split-<a><b><c>-seed<N>` (tenths, e.g. 811) or
                               `split-<a>-<b>-<c>-seed<N>` (percent) also says how to split the
                               raw data when that folder is absent: ratios a:b:c, per-user
                               shuffle with seed N (the staged folders' procedure, so re-splitting
                               raw Gowalla / Amazon-CD with split-811-seed0 gives the staged split
                               exactly). Any other name must exist as a folder.
  rating_threshold (float) [4.0]
                               explicit ratings >= this are positives; others leave the splits
                               (kept in extras["low_rated"] / ["low_rated_rating"]).
  keep_all_ratings (bool) [False]
                               every rated interaction is a positive (no threshold); ratings stay
                               in extras["rating"] (rating studies on ml-100k).
  kcore (int) [0]              iterative k-core on users and items of the positives (0: none; the
                               paper's 10-core is `kcore=10`). Not applied to pre-split folders.
  download (bool) [True]       download a missing named dataset from its public URL (checked
                               digests, into cache_dir/<dataset>/).
  noise (str) ["none"], noise_rate (float) [0.5], noise_seed (int)
                               robustness study (`noise.inject_noise`): NOT applied by
                               load_dataset; the training loop applies it after loading
                               (noise_seed defaults to config.seed there).
  synthetic (ConfigDict)       keyword arguments of `synthetic.make_synthetic` for name
                               "synthetic" (n_users, n_items, n_clusters, noise_rate,
                               false_negative_rate, seed, ...).

Resolution of a named dataset: the split folder `<root>/<folder>/<split>` in each root in turn
(data.root, $TIL_DATA_DIR, cache_dir); else the raw files `<root>/<folder>/<file>[.gz]` in each
root in turn, preprocessed and split (and cached); else a download into `cache_dir/<folder>/`;
else one InputError line saying what was looked for and where.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import numpy as np

from til_jax.data.dataset import CSR, Dataset, isin_sorted
from til_jax.data.download import Remote, fetch
from til_jax.data.preprocess import Settings, default_cache_dir, load_or_build, preprocess
from til_jax.data.readers import Interactions, read_interactions, read_split_dir
from til_jax.errors import ConfigError, InputError

_LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/b067ec05f16a24e0e1efe63cd82385f0c469af20"
_LIGHTGCN_PT = ("https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/"
                "947ca2b3b1d2d3545b114145710cb06c4e57b3d2/data/lastfm")
_RECZOO = "https://raw.githubusercontent.com/reczoo/RecZoo/fd2379d3b5df99d23513a8c423c083d27a45126d"


@dataclasses.dataclass(frozen=True)
class Spec:
  """A named dataset: its folder under a data root, its raw files (each may also be .gz),
  their reader format, and where to download them (one Remote per raw file)."""

  folder: str
  files: tuple[str, ...]
  fmt: str
  remotes: tuple[Remote, ...] = ()
  aliases: tuple[str, ...] = ()  # other folder names accepted under a root


SPECS = {
    "gowalla": Spec("gowalla", ("train.txt", "test.txt"), "lightgcn", (
        Remote(f"{_LIGHTGCN}/Data/gowalla/train.txt", "train.txt",
               sha256="7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
               source="computed from the staged byte-identical copy (shared/data/gowalla/SOURCE.md)"),
        Remote(f"{_LIGHTGCN}/Data/gowalla/test.txt", "test.txt",
               sha256="099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
               source="computed from the staged byte-identical copy"))),
    "amazon-cd": Spec("amazon-cd", ("train.txt", "test.txt"), "lightgcn", (
        Remote(f"{_RECZOO}/data/AmazonCDs_m1/train.txt", "train.txt",
               sha256="c4caee7d5fe27fb5489466729b358eefe15155cec37f73ce2a4b5c74c8b73d51",
               source="computed from the staged copy (md5 2df6a35c... as in RecZoo's README)"),
        Remote(f"{_RECZOO}/data/AmazonCDs_m1/test.txt", "test.txt",
               sha256="ef686ffd39ca5ad4c8ee9dc8eeb3333ccc5bfe548f55e0d403d210ff7f248d2d",
               source="computed from the staged copy (md5 d29acb66... as in RecZoo's README)"))),
    "ml-100k": Spec("ml-100k", ("u.data",), "movielens", (
        Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "u.data",
               md5="0e33842e24a9c977be4e0107933c0723", member="ml-100k/u.data",
               member_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
               source="member sha256 computed from the staged unmodified u.data; archive md5 as "
                      "published in several public download scripts"),)),
    # LightGCN-PyTorch's Last.fm (HetRec lastfm-2k filtered to 4,489 artists): the project's
    # Last.fm (a stand-in for the paper's, which came from Last.fm-360K).
    "lastfm": Spec("lastfm", ("data1.txt", "test1.txt"), "lightgcn-pytorch", (
        Remote(f"{_LIGHTGCN_PT}/data1.txt", "data1.txt",
               sha256="c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded",
               source="computed from the staged copy (git blob 35bf4551, shared/data/lastfm/SOURCE.md)"),
        Remote(f"{_LIGHTGCN_PT}/test1.txt", "test1.txt",
               sha256="de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9",
               source="computed from the staged copy (git blob c4227df6)"))),
    "lastfm-2k": Spec("lastfm-2k", ("user_artists.dat",), "lastfm-2k", (
        Remote("https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
               "user_artists.dat", member="user_artists.dat",
               sha256="6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
               source="archive sha256 as recorded by several independent public projects"),),
        aliases=("hetrec2011-lastfm-2k",)),
    "lastfm-360k": Spec("lastfm-360k", ("usersha1-artmbid-artname-plays.tsv",), "lastfm-360k", (
        Remote("http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-360K.tar.gz",
               "usersha1-artmbid-artname-plays.tsv",
               member="lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv",
               member_md5="be672526eb7c69495c27ad27803148f1",
               source="member md5 from the dataset's own README"),),
        aliases=("lastfm-dataset-360K",)),
}
NAMES = (*SPECS, "synthetic")
FOLDERS = {k: v.folder for k, v in SPECS.items()}  # kept for older callers

_SPLIT_TENTHS = re.compile(r"split-([0-9])([0-9])([0-9])-seed([0-9]+)")
_SPLIT_PCT = re.compile(r"split-([0-9]{1,3})-([0-9]{1,3})-([0-9]{1,3})-seed([0-9]+)")


def parse_split(split: str) -> tuple[tuple[float, float, float], int] | None:
  """`split-811-seed0` -> ((0.8, 0.1, 0.1), 0); `split-70-15-15-seed3` -> ((0.7, .15, .15), 3);
  None for other names. ConfigError when the parts do not add up."""
  for pat, scale in ((_SPLIT_TENTHS, 10), (_SPLIT_PCT, 100)):
    m = pat.fullmatch(split)
    if m:
      a, b, c, seed = (int(x) for x in m.groups())
      if a + b + c != scale or a == 0:
        raise ConfigError(f"config.data.split {split!r}: the ratios must add up to {scale} with train > 0")
      return (a / scale, b / scale, c / scale), seed
  return None


def data_roots(root: str | None = None, cache_dir: str | None = None) -> list[str]:
  """Where named datasets are looked for, in order: root, $TIL_DATA_DIR, the cache dir."""
  roots = []
  if root:
    roots.append(root)
  if os.environ.get("TIL_DATA_DIR"):
    roots.append(os.environ["TIL_DATA_DIR"])
  roots.append(cache_dir or default_cache_dir())
  return roots


def from_split_pairs(name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]],
                     source: str) -> Dataset:
  """Builds a Dataset from raw (users, items) per split, ids used as they are.

  Held-out interactions whose item never occurs in train are kept (the item is in the catalogue
  and scored; `config.eval.drop_cold_items` drops them at evaluation); their count is logged.
  """
  n_users = 1 + max(int(p[0].max(initial=-1)) for p in parts.values())
  n_items = 1 + max(int(p[1].max(initial=-1)) for p in parts.values())
  if parts["train"][0].size == 0:
    raise InputError(f"{source}: the train split has no interactions")
  train = CSR.from_pairs(*parts["train"], n_users, n_items)
  seen = np.zeros(n_items, bool)
  seen[train.indices] = True
  out = {}
  for part in ("valid", "test"):
    u, i = parts[part]
    cold = int((~seen[i]).sum())
    if cold:
      logging.info("%s: %d %s interactions have an item with no training interaction (kept as "
                   "targets)", source, cold, part)
    out[part] = CSR.from_pairs(u, i, n_users, n_items)
  tk = train.keys()
  for part in ("valid", "test"):
    if isin_sorted(out[part].keys(), tk).any():
      raise InputError(f"{source}: {part} shares interactions with train")
  return Dataset(name=name, n_users=n_users, n_items=n_items, train=train, source=source, **out)


def name_of_path(path: str) -> str:
  """A dataset's name from its path: the folder (or file stem), with its parent when the folder
  is a split of a dataset (`.../lastfm/split-811-seed0` -> `lastfm/split-811-seed0`)."""
  path = os.path.normpath(os.path.abspath(path))
  base = os.path.basename(path)
  if os.path.isfile(path):
    return base.split(".")[0]
  parent = os.path.basename(os.path.dirname(path))
  return f"{parent}/{base}" if base.startswith("split") and parent else base


def load_split_folder(folder: str, name: str | None = None) -> Dataset:
  """A pre-split folder (train/valid/test .txt or .txt.gz, LightGCN format), ids as they are."""
  return from_split_pairs(name or os.path.basename(os.path.normpath(folder)),
                          read_split_dir(folder), folder)


@dataclasses.dataclass(frozen=True)
class Resolved:
  kind: str            # "split" (a pre-split folder) or "raw" (files to preprocess)
  paths: tuple[str, ...]


def _find_file(folder: str, fname: str) -> str | None:
  for cand in (fname, fname + ".gz"):
    p = os.path.join(folder, cand)
    if os.path.isfile(p):
      return p
  return None


def resolve(name: str, root: str | None = None, split: str = "split-811-seed0",
            cache_dir: str | None = None, download: bool = False) -> Resolved:
  """Where the named dataset's data is (see the module docstring for the order)."""
  if name not in SPECS:
    raise ConfigError(f"config.data.name: unknown dataset {name!r}; known: {', '.join(sorted(NAMES))}")
  spec = SPECS[name]
  roots = data_roots(root, cache_dir)
  folders = [os.path.join(r, f) for r in roots for f in (spec.folder, *spec.aliases)]
  if split:
    for f in folders:
      cand = os.path.join(f, split)
      if os.path.isdir(cand):
        return Resolved("split", (cand,))
  resplit = not split or parse_split(split) is not None
  if resplit:
    for f in folders:
      found = [_find_file(f, fn) for fn in spec.files]
      if all(found):
        return Resolved("raw", tuple(found))
  looked = f"{split}/ or " if split else ""
  where = ", ".join(os.path.join(r, spec.folder) for r in roots)
  files = "+".join(spec.files)
  if not resplit:
    raise InputError(f"dataset {name!r}: no split folder {split}/ under {where} (a split name other than "
                     "split-<abc>-seed<N> must exist as a folder)")
  if download and spec.remotes:
    target = os.path.join(cache_dir or default_cache_dir(), spec.folder)
    try:
      paths = tuple(fetch(r, target) for r in spec.remotes)
    except InputError as e:
      raise InputError(f"dataset {name!r} not found (looked for {looked}{files}[.gz] under {where}) "
                       f"and the download failed: {e}") from None
    return Resolved("raw", paths)
  hint = "set config.data.root or TIL_DATA_DIR" + ("" if download else ", or config.data.download=True")
  raise InputError(f"dataset {name!r} not found: looked for {looked}{files}[.gz] under {where} ({hint})")


def _settings(data_cfg) -> Settings:
  split = data_cfg.get("split", "split-811-seed0") or ""
  parsed = parse_split(split) if split else None
  ratios, seed = parsed if parsed else ((0.8, 0.1, 0.1), 0)
  return Settings(rating_threshold=float(data_cfg.get("rating_threshold", 4.0)),
                  keep_all_ratings=bool(data_cfg.get("keep_all_ratings", False)),
                  kcore=int(data_cfg.get("kcore", 0)), ratios=ratios, seed=seed)


def load_raw(name: str, paths: tuple[str, ...], fmt: str, settings: Settings,
             cache_dir: str | None = None) -> Dataset:
  """Reads raw interaction files (concatenated), preprocesses, splits; cached on disk."""
  def build():
    inter = Interactions.concat([read_interactions(p, fmt) for p in paths])
    return preprocess(inter, name, settings)
  # "cold": held-out items without training interactions are kept (2026-12-01); the field
  # makes caches built before that change miss.
  key = {**settings.as_dict(), "name": name, "format": fmt, "cold": "kept"}
  return load_or_build(name, paths, key, build, cache_dir).replace(source=", ".join(paths))


def load_dataset(data_cfg) -> Dataset:
  """The Dataset a config's `data` section asks for (fields: see the module docstring).

  Noise (`data.noise`) is not applied here: call `til_jax.data.noise.inject_noise` on the
  result (the training loop does).
  """
  name = data_cfg.get("name") or ""
  path = data_cfg.get("path") or ""
  cache_dir = data_cfg.get("cache_dir") or None
  if path:
    if not os.path.exists(path):
      raise InputError(f"{path}: no such file or folder (config.data.path)")
    source = os.path.abspath(path)
    if os.path.isdir(path):
      return load_split_folder(source, name_of_path(path))
    fmt = data_cfg.get("format", "auto") or "auto"
    return load_raw(name_of_path(path), (source,), fmt, _settings(data_cfg), cache_dir)
  if name == "synthetic":
    from til_jax.data.synthetic import make_synthetic
    syn = data_cfg.get("synthetic", None)
    kw = syn.to_dict() if hasattr(syn, "to_dict") else dict(syn or {})
    return make_synthetic(**kw)
  if not name:
    raise ConfigError("config.data.name: empty; set a dataset name or config.data.path")
  split = data_cfg.get("split", "split-811-seed0") or ""
  if split:
    parse_split(split)  # validates the name early
  res = resolve(name, data_cfg.get("root") or None, split, cache_dir,
                bool(data_cfg.get("download", True)))
  if res.kind == "split":
    if int(data_cfg.get("kcore", 0)) > 1:
      logging.warning("%s: config.data.kcore is not applied to the pre-split folder %s", name, res.paths[0])
    return load_split_folder(os.path.abspath(res.paths[0]), name)
  return load_raw(name, tuple(os.path.abspath(p) for p in res.paths), SPECS[name].fmt,
                  _settings(data_cfg), cache_dir)
