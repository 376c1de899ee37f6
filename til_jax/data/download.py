"""Downloads of public dataset files, checked against known digests, written atomically.

`download(url, dest, sha256=...)` streams `url` (any urllib scheme: https, file) into a temp
file next to `dest`, checks the digest, then `os.replace`s it into place: an interrupted
download never leaves a partial `dest`. `fetch(remote, folder)` downloads one `Remote` and, for
an archive, extracts the one member the project reads (also checked and atomic).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile

from til_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Remote:
  """A public file. `sha256` / `md5` are digests of the downloaded file, `member_sha256` /
  `member_md5` of the extracted `member` (archives only); at least one digest must be known.
  `filename` is the name the (extracted) file gets in the dataset folder."""

  url: str
  filename: str
  sha256: str | None = None
  md5: str | None = None
  member: str | None = None
  member_sha256: str | None = None
  member_md5: str | None = None
  source: str = ""  # where the digests come from

  def __post_init__(self):
    if not (self.sha256 or self.md5 or self.member_sha256 or self.member_md5):
      raise ValueError(f"{self.url}: no digest to check the download against")


def digest_file(path: str, algo: str = "sha256") -> str:
  h = hashlib.new(algo)
  with open(path, "rb") as f:
    while b := f.read(1 << 22):
      h.update(b)
  return h.hexdigest()


def _check(path: str, label: str, sha256: str | None, md5: str | None) -> None:
  for algo, want in (("sha256", sha256), ("md5", md5)):
    if want:
      got = digest_file(path, algo)
      if got != want.lower():
        raise InputError(f"{label}: {algo.upper()} mismatch: expected {want}, got {got}")


def download(url: str, dest: str, sha256: str | None = None, md5: str | None = None,
             timeout: float = 60.0) -> str:
  """Downloads `url` to `dest` (atomic), checking the digests given. Returns `dest`.

  An existing `dest` with the right digest is kept as it is. Network and digest failures are
  InputError naming the URL; nothing is left at `dest` then.
  """
  if os.path.isfile(dest):
    try:
      _check(dest, dest, sha256, md5)
      return dest
    except InputError:
      logging.warning("%s exists but fails its checksum; downloading it again", dest)
  folder = os.path.dirname(os.path.abspath(dest))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise InputError(f"{folder}: cannot create the download folder ({e.strerror or e})") from None
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
  try:
    logging.info("downloading %s -> %s", url, dest)
    try:
      with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        shutil.copyfileobj(resp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, ValueError) as e:
      raise InputError(f"{url}: download failed ({type(e).__name__}: {e})") from None
    _check(tmp, url, sha256, md5)
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return dest


def extract_member(archive: str, member: str, dest: str, sha256: str | None = None,
                   md5: str | None = None) -> str:
  """Extracts `member` of a .zip or .tar(.gz) archive to `dest` (atomic), checking digests."""
  folder = os.path.dirname(os.path.abspath(dest))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".extract-", suffix=".part")
  try:
    with os.fdopen(fd, "wb") as out:
      try:
        if zipfile.is_zipfile(archive):
          with zipfile.ZipFile(archive) as z, z.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        else:
          with tarfile.open(archive) as t:
            src = t.extractfile(member)
            if src is None:
              raise KeyError(member)
            with src:
              shutil.copyfileobj(src, out, 1 << 20)
      except (KeyError, zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{archive}: cannot extract {member} ({type(e).__name__}: {e})") from None
    _check(tmp, f"{archive}:{member}", sha256, md5)
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return dest


def fetch(remote: Remote, folder: str, timeout: float = 60.0) -> str:
  """Downloads `remote` into `folder` (and extracts its member); returns the data file's path."""
  dest = os.path.join(folder, remote.filename)
  if remote.member is None:
    return download(remote.url, dest, remote.sha256, remote.md5, timeout)
  archive = os.path.join(folder, os.path.basename(remote.url.rstrip("/")) or "archive")
  download(remote.url, archive, remote.sha256, remote.md5, timeout)
  try:
    extract_member(archive, remote.member, dest, remote.member_sha256, remote.member_md5)
  except InputError:
    os.unlink(archive)  # a bad archive is fetched again next time
    raise
  return dest
