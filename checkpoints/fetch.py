"""Download a zoo checkpoint into the cache: progress bar, HTTP Range resume, hash check.

The bytes go to ``<file>.part``; an interrupted download resumes from the part file's size with an
HTTP ``Range`` request (a server that ignores Range gets a fresh download). The finished file is
hashed and only then renamed to its final name, so the cache never holds an unverified file under
a checkpoint's name.

NOTE: this is the one writer that does not go through ``mocobench.core.io.atomic_*``: the part file is
the resume state and must survive a kill; the final name still appears only by ``os.replace``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mocobench.checkpoints.errors import CheckpointError
from mocobench.checkpoints.zoo import ZooEntry, cached_path
from mocobench.core.io import progress

CHUNK = 1 << 20


class HashMismatch(CheckpointError):
    """The downloaded bytes do not have the published hash."""


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def verify(path: Path, entry: ZooEntry) -> tuple[str, bool]:
    """``(sha256, checked)``; raises :class:`HashMismatch` if a published hash disagrees.

    ``checked`` is False when the zoo has no published hash for the file (then the caller warns).
    """
    sha, md5 = _digests(path)
    checks = [("sha256", entry.sha256, sha), ("sha256 prefix", entry.sha256_prefix, sha),
              ("md5", entry.md5, md5)]
    checked = False
    for what, want, got in checks:
        if not want:
            continue
        checked = True
        if not got.startswith(want.lower()):
            raise HashMismatch(f"{path}: {what} mismatch for {entry.name}: expected {want}, got "
                               f"{got[:len(want)]}; the download is corrupt or the URL serves a "
                               "different file")
    return sha, checked


def download(url: str, part: Path, *, desc: str = "", timeout: float = 60.0) -> None:
    """Append ``url``'s remaining bytes to ``part`` (Range request from its current size)."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mocobench-fetch"})
    if start and not url.startswith("file:"):
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # range not satisfiable: the part file is already complete
            return
        raise CheckpointError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        raise CheckpointError(f"{url}: download failed ({e})") from None
    with response:
        status = getattr(response, "status", None) or response.getcode()
        length = response.headers.get("Content-Length")
        length = int(length) if length else None
        if start and status == 206:  # the server resumed: the body is the rest of the file
            initial, total = start, (start + length if length is not None else None)
        elif start and url.startswith("file:"):  # file:// has no Range: skip what we have
            response.read(start)
            initial, total = start, length
        else:  # a full body (also when the server ignored Range): start over
            initial, total = 0, length
        with open(part, "ab" if initial else "wb") as f, progress(
                total=total, desc=desc or part.name, unit="B", unit_scale=True, initial=initial) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))


def fetch(entry: ZooEntry, *, root: str | os.PathLike | None = None, force: bool = False,
          url: str | None = None, log=print) -> Path:
    """The cached file of ``entry`` (downloaded and verified if not cached yet)."""
    dest = cached_path(entry, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and not force:
        log(f"{entry.name}: already in the cache at {dest}")
        return dest
    part = dest.with_name(dest.name + ".part")
    download(url or entry.url, part, desc=entry.name)
    try:
        sha, checked = verify(part, entry)
    except HashMismatch:
        # Only our own part file is removed (it cannot be resumed into a good file).
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    if checked:
        log(f"{entry.name}: verified, sha256 {sha} -> {dest}")
    else:
        print(f"WARNING: {entry.name}: no published hash to verify against; sha256 of the "
              f"downloaded file is {sha} (pin it in checkpoints/zoo.toml once you trust it)",
              file=sys.stderr)
        log(f"{entry.name}: sha256 {sha} -> {dest}")
    return dest
