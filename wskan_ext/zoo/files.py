"""Zoo files: format constants and errors, paths resolved once, atomic writes, stale
temporary files and the one-writer lock (see :mod:`wskan_ext.zoo.store`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from typing import List, Optional

import torch

FORMAT = "wskan_ext.zoo"
#: 1: no config fingerprints; 2: fingerprint + config in every shard (read: 1 and 2).
FORMAT_VERSION = 2
KAN_WEIGHTS_FORMAT = "wskan_ext.kan_weights"
LOCK_NAME = ".wskan-build.lock"
_TMP_RE = re.compile(r"^\..+\.tmp(\d+)$")
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class ZooFormatError(ValueError):
    """A zoo file is missing, corrupted, truncated, inconsistent or from a newer format version."""


class ZooLockedError(ValueError):
    """Another process is writing this zoo directory."""


class MemberNotFoundError(KeyError, ValueError):
    """No member with this id (a ``KeyError`` for old callers, a ``ValueError`` for the CLI)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def read_json(path: str, missing: str, invalid: str, error=ValueError, missing_error=None):
    """The JSON value in ``path``, never unpickled; a missing file raises ``missing_error``
    (default ``error``) ``"PATH: missing"``, an unreadable or invalid one ``error``
    ``"PATH: invalid (reason)"`` -- the one reader of the zoo's and the runs' JSON files."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise (missing_error or error)(f"{path}: {missing}") from None
    except (OSError, ValueError) as e:
        raise error(f"{path}: {invalid} ({e})") from None


# ---------------------------------------------------------------------------- paths
def resolve_dir(path: str, create: bool = True) -> str:
    """``realpath`` of directory ``path`` (created with its parents if ``create``).

    Resolve an output directory **once** with this and use the result for every read and
    write: ``a/link/../z`` then means what the OS means by it, and ``a/missing/../z`` one
    directory, not two.
    """
    p = os.path.realpath(os.fspath(path))
    if create:
        os.makedirs(p, exist_ok=True)
    return p


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _resolve_file(path: str, root: Optional[str]) -> str:
    path = os.fspath(path)
    base = os.path.basename(path)
    if base in ("", ".", ".."):
        raise ValueError(f"{path}: not a file path")
    p = os.path.join(os.path.realpath(os.path.dirname(path) or os.curdir), base)
    if root is not None:
        r = os.path.realpath(os.fspath(root))
        if not _inside(os.path.dirname(p), r):
            raise ValueError(f"{path}: resolves to {p}, outside the output directory {r}; refusing to write there")
    return p


def atomic_write(path: str, data: bytes, root: Optional[str] = None) -> str:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``); returns the path written.

    The directory is resolved once with ``realpath`` and created with its parents; the
    temporary file lives next to the target and is removed if the write fails. With
    ``root``, a path that resolves outside ``realpath(root)`` (``..``, symlinks) raises
    ``ValueError`` before anything is written.
    """
    p = _resolve_file(path, root)
    d = os.path.dirname(p)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(p)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def clean_stale_temp(out: str) -> List[str]:
    """Remove stale ``.NAME.tmpPID`` files left by killed writers in ``out`` and ``out/shards``.

    A temporary file is stale when its pid is not a running process on this host, or is
    this process. Call it while holding :func:`zoo_lock` (which does so itself), before any
    other rank starts writing. Returns the removed paths.
    """
    root = os.path.realpath(os.fspath(out))
    removed = []
    for d in (root, os.path.join(root, "shards")):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            m = _TMP_RE.match(name)
            if m is None:
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or not _pid_alive(pid):
                p = os.path.join(d, name)
                with contextlib.suppress(OSError):
                    os.remove(p)
                    removed.append(p)
    return removed


def _lock_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder_text(info: dict) -> str:
    if not info:
        return "an unknown process"
    pid, host = info.get("pid"), info.get("host")
    since = info.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"pid {pid} on host {host}{when}"


@contextlib.contextmanager
def zoo_lock(out: str, clean_temp: bool = True):
    """Hold the build lock of zoo directory ``out`` (created) for the ``with`` block.

    ``build_zoo`` takes it on rank 0, before writing anything, for the whole build::

        with zoo_lock(out):
            ...  # write manifest, shards, metadata

    A second writer raises :class:`ZooLockedError` at once, naming the holder's pid and
    host. The lock file ``out/.wskan-build.lock`` holds ``{"pid", "host", "started"}``; the
    lock itself is an ``flock`` that the kernel drops when its process dies, so a lock left
    by a killed build is stale and simply taken over. On filesystems without ``flock`` a
    lock whose pid is dead on this host is taken over; one from another host is refused
    (delete the file if that build is really gone). With ``clean_temp``,
    :func:`clean_stale_temp` runs once the lock is held. Yields the lock file's path.
    """
    root = resolve_dir(out)
    path = os.path.join(root, LOCK_NAME)
    host = socket.gethostname()
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            if fcntl is None:
                raise OSError("no fcntl")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _lock_holder(fd)
            os.close(fd)
            raise ZooLockedError(
                f"{root}: another build is writing this zoo ({_holder_text(info)}; lock file {path}); "
                "wait for it to finish or use another --out directory"
            ) from None
        except OSError:  # no flock on this filesystem: pid + host check
            info = _lock_holder(fd)
            pid = info.get("pid")
            mine = pid == os.getpid() and info.get("host") == host
            if info and not mine and (info.get("host") != host or (isinstance(pid, int) and _pid_alive(pid))):
                os.close(fd)
                raise ZooLockedError(
                    f"{root}: another build is writing this zoo ({_holder_text(info)}; lock file {path}); "
                    "wait for it, or delete the lock file if that build is gone"
                ) from None
        try:  # the file we locked must still be the one at `path` (a releaser may have unlinked it)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": host, "started": time.time()}).encode())
        os.fsync(fd)
        if clean_temp:
            clean_stale_temp(root)
        yield path
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.remove(path)
        os.close(fd)
