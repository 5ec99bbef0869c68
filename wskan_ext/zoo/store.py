"""The zoo store: a directory of safetensors shards, a metadata table and a manifest.

.. code-block:: text

    DIR/manifest.json                    format, format_version, library_version, build config,
                                         architecture, shard layout (written once, first)
    DIR/shards/shard-00000.safetensors   stacked tensors of the shard's members:
                                         layers.{l}.{field} (M, ...), prune_mask.{l} (M, n, m),
                                         label.{name} (M,), member_id (M,); safetensors metadata:
                                         format, config_fingerprint, config
    DIR/shards/shard-00000.json          the shard's metadata rows + sha256 of its tensors file
                                         + config fingerprint and config
                                         (written last: its presence marks the shard done)
    DIR/metadata.jsonl                   all rows sorted by id (written when every shard is done)
    DIR/.wskan-build.lock                held while a build writes (pid + host inside)

**One identity per zoo.** The *config fingerprint* is the sha256 of the canonical JSON of
the build config (:func:`config_fingerprint`). Format version 2 stores it (and the config)
in every shard's JSON and safetensors metadata; :class:`Zoo` and :func:`shard_done`
(resume) compare every shard with the manifest's config and raise
:class:`ZooFormatError` naming the shard and both configs on a mismatch.

**One writer per zoo.** :func:`zoo_lock` holds an exclusive lock file for the whole build;
a second writer fails at once with :class:`ZooLockedError`. The lock is a kernel lock
(``flock``), so a killed build leaves no stale lock; the pid and host inside are for the
message (and for stale detection on filesystems without ``flock``).

**Files.** Every file is written atomically (temporary file in the same directory, then
``os.replace``), through a path resolved once with ``realpath`` (parents created; writes
that would land outside the output directory, e.g. through a symlink, are refused). A
killed build leaves only complete files (and ``.NAME.tmpPID`` files, removed by the next
writer: :func:`clean_stale_temp`). Loading never unpickles: tensors come from safetensors,
metadata from JSON; every shard's sha256 and every field (names, shapes, dtypes, member
ids, rows) is checked, and any violation raises :class:`ZooFormatError` naming the file
and the field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import time
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..kan.spline import BASE_FUNCTIONS
from ..kan.weights import FIELDS, KANWeights

__all__ = ["FORMAT", "FORMAT_VERSION", "KAN_WEIGHTS_FORMAT", "LOCK_NAME", "ZooFormatError", "ZooLockedError",
           "MemberNotFoundError", "Zoo", "atomic_write", "write_shard", "shard_done", "shard_name",
           "save_kan_weights", "load_kan_weights", "clean_float", "config_fingerprint", "verify_fingerprint",
           "zoo_lock", "clean_stale_temp", "resolve_dir", "read_manifest", "iter_rows"]

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


# ---------------------------------------------------------------------- identity
#: Files of a zoo directory that are records of a build session, not zoo content.
SESSION_FILES = ("build_log.jsonl",)


def content_files(root: str) -> Dict[str, bytes]:
    """``{relative path: bytes}`` of every file that makes up the zoo: what a resumed or
    multi-process build reproduces byte for byte. Leaves out the build log
    (:data:`SESSION_FILES`: wall times), the lock file and figures (``*.png``)."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n in SESSION_FILES or n == LOCK_NAME or n.endswith(".png"):
                continue
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def clean_float(v) -> Optional[float]:
    """A JSON-safe float (``None`` for NaN/Inf)."""
    v = float(v)
    return v if math.isfinite(v) else None


def dumps(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()


def _canonical(obj, strict: bool = True) -> str:
    """Canonical JSON (sorted keys, no whitespace); ``strict=False`` lets NaN/Inf through
    (for comparing what was read from files, never for fingerprints)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=not strict, ensure_ascii=True)


def config_fingerprint(config) -> str:
    """sha256 (hex) of the canonical JSON of a build config (a dict, or an object with
    ``to_dict()`` such as :class:`~wskan_ext.zoo.BuildConfig`): sorted keys, no
    whitespace, tuples as lists. Equal configs give equal fingerprints."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f"config_fingerprint expects a dict or a BuildConfig, got {type(config).__name__}")
    return hashlib.sha256(_canonical(config).encode()).hexdigest()


def _config_diff(a, b, a_name: str, b_name: str) -> str:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return f"{a_name} config {a!r}, {b_name} config {b!r}"
    keys = sorted(set(a) | set(b))
    diff = [f"{k}: {a.get(k, '<missing>')!r} ({a_name}) vs {b.get(k, '<missing>')!r} ({b_name})"
            for k in keys if _canonical(a.get(k), False) != _canonical(b.get(k), False)]
    return "; ".join(diff) if diff else "configs equal but fingerprints differ"


def _mismatch(path: str, fp, cfg, ref_fp: str, ref_cfg, ref_name: str = "manifest") -> ZooFormatError:
    what = _config_diff(cfg, ref_cfg, os.path.basename(path), ref_name) if cfg is not None else "config not stored"
    return ZooFormatError(
        f"{path}: built from a different config than the {ref_name} (config fingerprint "
        f"{str(fp)[:12]} vs {ref_fp[:12]}: {what}); this directory mixes two zoos -- rebuild into a new directory"
    )


def _manifest_config(root: str) -> Optional[dict]:
    try:
        with open(os.path.join(root, "manifest.json"), "rb") as f:
            cfg = json.loads(f.read()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return cfg if isinstance(cfg, dict) else None


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def _shard_base(root: str, index: int) -> str:
    return os.path.join(root, "shards", shard_name(index))


def write_shard(root: str, index: int, tensors: Dict[str, torch.Tensor], rows: List[dict],
                config: Optional[dict] = None) -> None:
    """Write shard ``index``: its tensors file, then its JSON (rows + checksum + fingerprint).

    ``config`` (the build config dict, ``cfg.to_dict()``) is fingerprinted into the
    safetensors metadata and the JSON; if omitted, the config of ``root/manifest.json``
    is used (the manifest is written before any shard). Both files land inside
    ``realpath(root)`` or nothing is written.
    """
    root = os.path.realpath(os.fspath(root))
    if config is None:
        config = _manifest_config(root)
    meta = {"format": FORMAT}
    if config is not None:
        meta["config_fingerprint"] = config_fingerprint(config)
        meta["config"] = _canonical(config)
    data = _st_save({k: v.contiguous().cpu() for k, v in tensors.items()}, meta)
    base = _shard_base(root, index)
    atomic_write(base + ".safetensors", data, root=root)
    info = {"shard": index, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": rows}
    if config is not None:
        info["config_fingerprint"] = meta["config_fingerprint"]
        info["config"] = config
    atomic_write(base + ".json", dumps(info), root=root)


def _st_save(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    """safetensors bytes with a canonical header (sorted keys): safetensors itself writes
    ``__metadata__`` in hash-map order, which would make shard bytes differ between runs."""
    data = st_save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def _st_metadata(data: bytes, path: str) -> Dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (header parsed without loading tensors)."""
    if len(data) < 8:
        raise ZooFormatError(f"{path}: truncated safetensors file ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ZooFormatError(f"{path}: truncated safetensors header ({n} header bytes announced)")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ZooFormatError(f"{path}: unreadable safetensors header ({e})") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ZooFormatError(f"{path}: field __metadata__: must map names to strings")
    return meta


def _read_json(path: str):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise ZooFormatError(f"{path}: missing shard file") from None
    except (OSError, ValueError) as e:
        raise ZooFormatError(f"{path}: corrupted shard index ({e})") from None


def _shard_info(root: str, index: int) -> dict:
    """The shard JSON, with its top-level fields type-checked."""
    path = _shard_base(root, index) + ".json"
    info = _read_json(path)
    if not isinstance(info, dict):
        raise ZooFormatError(f"{path}: corrupted shard index (not a JSON object)")
    for field, typ in (("shard", int), ("sha256", str), ("bytes", int), ("rows", list)):
        v = info.get(field)
        if not isinstance(v, typ) or isinstance(v, bool):
            raise ZooFormatError(f"{path}: field {field!r}: expected {typ.__name__}, got {v!r:.60}")
    if info["shard"] != index:
        raise ZooFormatError(f"{path}: field 'shard': says {info['shard']}, expected {index}")
    for j, r in enumerate(info["rows"]):
        _check_row(r, f"{path}: rows[{j}]")
    if "config_fingerprint" in info and not isinstance(info["config_fingerprint"], str):
        raise ZooFormatError(f"{path}: field 'config_fingerprint': expected a string")
    return info


def _check_fingerprint(path: str, info_fp, info_cfg, ref_fp: str, ref_cfg, ref_name="manifest") -> None:
    if info_fp != ref_fp:
        raise _mismatch(path, info_fp, info_cfg if isinstance(info_cfg, dict) else None, ref_fp, ref_cfg, ref_name)


def shard_done(root: str, index: int, config: Optional[dict] = None) -> bool:
    """Whether shard ``index`` is complete, matches its checksum and belongs to this build.

    ``config`` is the build's config dict (default: the config of ``root/manifest.json``).
    A complete shard built from another config raises :class:`ZooFormatError` naming the
    shard and both configs (a resume must never keep foreign shards); a shard without a
    fingerprint (format 1) counts as not done, so it is rebuilt.
    """
    root = os.path.realpath(os.fspath(root))
    base = _shard_base(root, index)
    try:
        info = _shard_info(root, index)
        with open(base + ".safetensors", "rb") as f:
            data = f.read()
    except (OSError, ZooFormatError):
        return False
    if hashlib.sha256(data).hexdigest() != info["sha256"] or len(data) != info["bytes"]:
        return False
    if config is None:
        config = _manifest_config(root)
    if config is None:
        return True
    ref = config_fingerprint(config)
    if "config_fingerprint" not in info:
        return False
    _check_fingerprint(base + ".json", info["config_fingerprint"], info.get("config"), ref, config, "build")
    meta = _st_metadata(data, base + ".safetensors")
    _check_fingerprint(base + ".safetensors", meta.get("config_fingerprint"), _json_or_none(meta.get("config")),
                       ref, config, "build")
    return True


def verify_fingerprint(root: str, config) -> None:
    """Check that everything already in zoo directory ``root`` was built from ``config``.

    Compares the manifest's config (if there is a manifest) and every existing shard JSON
    (``shards/shard-*.json``) with ``config``; the first mismatch raises
    :class:`ZooFormatError` naming the file and the differing config entries. Call it at
    the start of a build or resume, after taking :func:`zoo_lock`.
    """
    root = os.path.realpath(os.fspath(root))
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    ref = config_fingerprint(config)
    mpath = os.path.join(root, "manifest.json")
    if os.path.exists(mpath):
        cfg = _manifest_config(root)
        if cfg is None:
            raise ZooFormatError(f"{mpath}: field 'config': missing or unreadable")
        _check_fingerprint(mpath, config_fingerprint(cfg), cfg, ref, config, "build")
    sdir = os.path.join(root, "shards")
    names = sorted(os.listdir(sdir)) if os.path.isdir(sdir) else []
    for name in names:
        m = re.match(r"^shard-(\d+)\.json$", name)
        if m is None:
            continue
        try:
            info = _shard_info(root, int(m.group(1)))
        except ZooFormatError:
            continue  # an unreadable shard is rebuilt
        if "config_fingerprint" in info:
            _check_fingerprint(os.path.join(sdir, name), info["config_fingerprint"], info.get("config"), ref,
                               config, "build")


def _json_or_none(s):
    try:
        return json.loads(s) if isinstance(s, str) else None
    except ValueError:
        return None


# ----------------------------------------------------------------- validation
def _check_row(r, where: str) -> None:
    if not isinstance(r, dict):
        raise ZooFormatError(f"{where}: expected a JSON object, got {type(r).__name__}")
    for f in ("id", "shard"):
        v = r.get(f)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ZooFormatError(f"{where}: field {f!r}: expected an int >= 0, got {v!r:.60}")
    if r.get("split") not in Zoo.SPLITS:
        raise ZooFormatError(f"{where}: field 'split': expected one of {Zoo.SPLITS}, got {r.get('split')!r:.60}")
    if r.get("status") not in ("ok", "diverged"):
        raise ZooFormatError(f"{where}: field 'status': expected 'ok' or 'diverged', got {r.get('status')!r:.60}")
    labels = r.get("labels")
    if not isinstance(labels, dict) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
            for v in labels.values()):
        raise ZooFormatError(f"{where}: field 'labels': expected an object of finite numbers or null")


def _check_architecture(arch, path: str) -> None:
    if not isinstance(arch, dict):
        raise ZooFormatError(f"{path}: field 'architecture': expected an object")

    def ints(name, n=None):
        v = arch.get(name)
        if (not isinstance(v, list) or not v or (n is not None and len(v) != n)
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
            raise ZooFormatError(f"{path}: field 'architecture.{name}': expected a list of "
                                 f"{n if n is not None else 'some'} ints >= 1, got {v!r:.80}")

    ints("k")
    depth = len(arch["k"])
    ints("widths", depth + 1)
    ints("grid_sizes", depth)
    bf = arch.get("base_fun")
    if not isinstance(bf, list) or len(bf) != depth or not all(isinstance(b, str) and b in BASE_FUNCTIONS for b in bf):
        raise ZooFormatError(f"{path}: field 'architecture.base_fun': expected {depth} known base-function "
                             f"names, got {bf!r:.80}")


def read_manifest(root: str) -> dict:
    """The validated manifest of zoo directory ``root`` (:class:`ZooFormatError` otherwise)."""
    path = os.path.join(root, "manifest.json")
    try:
        with open(path, "rb") as f:
            man = json.loads(f.read())
    except FileNotFoundError:
        raise ZooFormatError(f"{path}: not found ({root} is not a zoo directory)") from None
    except (OSError, ValueError) as e:
        raise ZooFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(man, dict):
        raise ZooFormatError(f"{path}: not a JSON object")
    if man.get("format") != FORMAT:
        raise ZooFormatError(f"{path}: format is {man.get('format')!r}, expected {FORMAT!r}")
    v = man.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ZooFormatError(f"{path}: field 'format_version': expected an int >= 1, got {v!r:.40}")
    if v > FORMAT_VERSION:
        raise ZooFormatError(
            f"{path}: zoo format version {v} is newer than this library supports ({FORMAT_VERSION}); "
            "upgrade wskan_ext to read it"
        )
    _check_architecture(man.get("architecture"), path)
    ns = man.get("num_shards")
    if not isinstance(ns, int) or isinstance(ns, bool) or ns < 1:
        raise ZooFormatError(f"{path}: field 'num_shards': expected an int >= 1, got {ns!r:.40}")
    if not isinstance(man.get("config"), dict):
        raise ZooFormatError(f"{path}: field 'config': expected an object")
    try:
        fp = config_fingerprint(man["config"])
    except ValueError as e:
        raise ZooFormatError(f"{path}: field 'config': not canonical JSON ({e})") from None
    if "config_fingerprint" in man and man["config_fingerprint"] != fp:
        raise ZooFormatError(f"{path}: field 'config_fingerprint' does not match the manifest's own config")
    return man


def _shard_schema(arch: dict, M: int, label_names) -> Dict[str, tuple]:
    widths, G, ks = arch["widths"], arch["grid_sizes"], arch["k"]
    out = {}
    for l, k in enumerate(ks):
        n, m = widths[l], widths[l + 1]
        shapes = {"grid": (M, n, G[l] + 2 * k + 1), "coef": (M, n, m, G[l] + k), "scale_base": (M, n, m),
                  "scale_sp": (M, n, m), "mask": (M, n, m), "node_scale": (M, m), "node_bias": (M, m)}
        for f in FIELDS:
            out[f"layers.{l}.{f}"] = shapes[f]
        out[f"prune_mask.{l}"] = (M, n, m)
    for name in label_names:
        out[f"label.{name}"] = (M,)
    out["member_id"] = (M,)
    return out


def _check_shard(path: str, t: Dict[str, torch.Tensor], rows: List[dict], arch: dict, dtype) -> None:
    """Names, shapes, dtypes, member ids, label values and ok-member weights of one shard."""
    M = len(rows)
    names = sorted(rows[0]["labels"]) if rows else []
    for r in rows:
        if sorted(r["labels"]) != names:
            raise ZooFormatError(f"{path}: field 'labels': member {r['id']} has labels {sorted(r['labels'])}, "
                                 f"member {rows[0]['id']} has {names}")
    schema = _shard_schema(arch, M, names)
    missing, unknown = sorted(set(schema) - set(t)), sorted(set(t) - set(schema))
    if missing:
        raise ZooFormatError(f"{path}: field {missing[0]!r}: missing ({len(missing)} missing tensors)")
    if unknown:
        raise ZooFormatError(f"{path}: field {unknown[0]!r}: unknown tensor (expected only {sorted(schema)[:4]}...)")
    for key, shape in schema.items():
        v = t[key]
        if tuple(v.shape) != shape:
            raise ZooFormatError(f"{path}: field {key!r}: shape {tuple(v.shape)}, expected {shape}")
        if key.startswith("layers."):
            ok = v.dtype == dtype if dtype is not None else v.dtype.is_floating_point
            if not ok or v.dtype != t["layers.0.coef"].dtype:
                raise ZooFormatError(f"{path}: field {key!r}: dtype {v.dtype}, expected {dtype or t['layers.0.coef'].dtype}")
        elif key == "member_id":
            if v.dtype != torch.int64:
                raise ZooFormatError(f"{path}: field 'member_id': dtype {v.dtype}, expected torch.int64")
        elif not (v.dtype.is_floating_point or v.dtype in _INT_DTYPES):
            raise ZooFormatError(f"{path}: field {key!r}: dtype {v.dtype} is not a real number type")
    ids = t["member_id"].tolist()
    want = [r["id"] for r in rows]
    if ids != want:
        j = next(j for j, (a, b) in enumerate(zip(ids, want)) if a != b)
        raise ZooFormatError(f"{path}: field 'member_id': position {j} holds id {ids[j]}, its metadata row says {want[j]}")
    ok = [j for j, r in enumerate(rows) if r["status"] == "ok"]
    for name in names:
        vals = t[f"label.{name}"].tolist()
        for j, r in enumerate(rows):
            v = r["labels"][name]
            if v is not None and float(vals[j]) != float(v):
                raise ZooFormatError(f"{path}: field 'label.{name}': member {r['id']} holds {vals[j]!r}, "
                                     f"its metadata row says {v!r}")
    if not ok:
        return
    idx = torch.tensor(ok, dtype=torch.long)
    for l in range(len(arch["k"])):
        p = t[f"prune_mask.{l}"][idx]
        if not bool(((p == 0) | (p == 1)).all()):
            raise ZooFormatError(f"{path}: field 'prune_mask.{l}': values of members with status 'ok' must be 0 or 1")
    try:
        KANWeights(**{f: [t[f"layers.{l}.{f}"][idx] for l in range(len(arch["k"]))] for f in FIELDS},
                   k=list(arch["k"]), base_fun=list(arch["base_fun"]), validate=True)
    except (ValueError, TypeError) as e:
        raise ZooFormatError(f"{path}: field 'layers.*': invalid weights of a member with status 'ok' ({e})") from None


def _torch_dtype(name) -> Optional[torch.dtype]:
    d = getattr(torch, name, None) if isinstance(name, str) else None
    return d if isinstance(d, torch.dtype) and d.is_floating_point else None


class Zoo:
    """Read a zoo directory (see the module docstring).

    ``Zoo(dir)`` reads and validates the manifest, the metadata table and every shard's
    JSON (config fingerprint, rows); tensors load lazily per shard, checksum- and
    field-verified. Members are addressed by integer ``id``
    (``run * checkpoints_per_run + checkpoint``). Selections (``split``,
    ``include_diverged``, ``ids``) return members sorted by id, and :meth:`weights`,
    :meth:`labels`, :meth:`rows` with the same arguments are aligned.

    Example::

        zoo = Zoo("zoo_dir")
        w = zoo.weights(split="train")           # KANWeights, (N, ...) stacked
        y = zoo.labels(split="train")["test_acc"]  # (N,) aligned with w
        masks = zoo.labels(split="train")["prune_mask"]  # list per layer of (N, n, m)
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, root: str):
        self.root = os.path.realpath(os.fspath(root))
        self.manifest = read_manifest(self.root)
        self.fingerprint = config_fingerprint(self.manifest["config"])
        path = os.path.join(self.root, "metadata.jsonl")
        if not os.path.exists(path):
            raise ZooFormatError(
                f"{path}: missing -- the build is incomplete; re-run the same build command to resume it"
            )
        self.metadata: List[dict] = []
        with open(path, "rb") as f:
            for i, line in enumerate(f.read().splitlines()):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ZooFormatError(f"{path}: line {i + 1}: corrupted metadata table ({e})") from None
                _check_row(row, f"{path}: line {i + 1}")
                if row["shard"] >= self.manifest["num_shards"]:
                    raise ZooFormatError(f"{path}: line {i + 1}: field 'shard': {row['shard']} is not below "
                                         f"num_shards={self.manifest['num_shards']}")
                self.metadata.append(row)
        self._by_id = {r["id"]: r for r in self.metadata}
        if len(self._by_id) != len(self.metadata):
            raise ZooFormatError(f"{path}: field 'id': duplicate member ids")
        arch = self.manifest["architecture"]
        self.k, self.base_fun = arch["k"], arch["base_fun"]
        self._dtype = _torch_dtype(self.manifest["config"].get("dtype"))
        self._cache: Dict[int, Dict[str, torch.Tensor]] = {}
        self._shard_rows: Dict[int, List[dict]] = {}
        self._rows_by_shard: Dict[int, List[dict]] = {}
        for r in self.metadata:
            self._rows_by_shard.setdefault(r["shard"], []).append(r)
        for s in range(self.manifest["num_shards"]):
            self._verify_shard_index(s)

    def _verify_shard_index(self, s: int) -> None:
        """Fingerprint and rows of shard ``s``'s JSON against the manifest and metadata table.
        An unreadable JSON is left for :meth:`load_shard` (``on_error="skip"`` may skip it)."""
        jpath = _shard_base(self.root, s) + ".json"
        try:
            info = _shard_info(self.root, s)
        except ZooFormatError:
            return
        if self.manifest["format_version"] >= 2 or "config_fingerprint" in info:
            if "config_fingerprint" not in info:
                raise ZooFormatError(f"{jpath}: field 'config_fingerprint': missing (format version "
                                     f"{self.manifest['format_version']} needs it); the shard's origin is unknown")
            _check_fingerprint(jpath, info["config_fingerprint"], info.get("config"), self.fingerprint,
                               self.manifest["config"])
        mine = sorted(self._rows_by_shard.get(s, []), key=lambda r: r["id"])
        theirs = sorted(info["rows"], key=lambda r: r["id"])
        if [r["id"] for r in mine] != [r["id"] for r in theirs]:
            raise ZooFormatError(f"{jpath}: field 'rows': member ids {[r['id'] for r in theirs][:8]} differ from "
                                 f"metadata.jsonl's {[r['id'] for r in mine][:8]} for shard {s}")
        for a, b in zip(mine, theirs):
            for f in sorted(set(a) | set(b)):
                if _canonical(a.get(f), False) != _canonical(b.get(f), False):
                    raise ZooFormatError(f"{jpath}: field 'rows.{f}': member {a['id']} differs from metadata.jsonl")
        self._shard_rows[s] = info["rows"]

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        return f"Zoo({self.root!r}, members={len(self)}, architecture={self.manifest['architecture']})"

    @property
    def architecture(self) -> dict:
        return self.manifest["architecture"]

    # ---------------------------------------------------------------- selection
    def ids(self, split: Optional[str] = None, include_diverged: bool = False) -> List[int]:
        """Member ids (sorted) of ``split`` (``train``/``val``/``test``/``None`` = all);
        diverged members are excluded unless ``include_diverged``."""
        if split is not None and split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS} or None, got {split!r}")
        return sorted(r["id"] for r in self.metadata
                      if (split is None or r["split"] == split) and (include_diverged or r["status"] == "ok"))

    def _select(self, split, include_diverged, ids) -> List[int]:
        if ids is None:
            return self.ids(split, include_diverged)
        ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in self._by_id]
        if missing:
            raise MemberNotFoundError(f"zoo {self.root}: no member with id {missing[:5]} "
                                      f"(ids run from {min(self._by_id, default=0)} to {max(self._by_id, default=-1)})")
        return ids

    def rows(self, split=None, include_diverged=False, ids=None) -> List[dict]:
        """Metadata rows of the selection."""
        return [self._by_id[i] for i in self._select(split, include_diverged, ids)]

    # ------------------------------------------------------------------ shards
    def shard_path(self, index: int) -> str:
        return _shard_base(self.root, index) + ".safetensors"

    def load_shard(self, index: int) -> Dict[str, torch.Tensor]:
        """All tensors of shard ``index`` (checksum-, fingerprint- and field-verified; never unpickles)."""
        if index in self._cache:
            return self._cache[index]
        path = self.shard_path(index)
        info = _shard_info(self.root, index)
        if index not in self._shard_rows:  # its JSON was unreadable when the zoo was opened
            self._verify_shard_index(index)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ZooFormatError(f"{path}: missing shard file") from None
        except OSError as e:
            raise ZooFormatError(f"{path}: unreadable shard file ({e})") from None
        if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ZooFormatError(
                f"{path}: corrupted or truncated shard ({len(data)} bytes, expected {info['bytes']}; "
                "checksum mismatch)"
            )
        meta = _st_metadata(data, path)
        if meta.get("format") != FORMAT:
            raise ZooFormatError(f"{path}: field __metadata__.format: {meta.get('format')!r}, expected {FORMAT!r}")
        if self.manifest["format_version"] >= 2 or "config_fingerprint" in meta:
            _check_fingerprint(path, meta.get("config_fingerprint"), _json_or_none(meta.get("config")),
                               self.fingerprint, self.manifest["config"])
        try:
            tensors = st_load(data)
        except Exception as e:  # safetensors raises its own error type
            raise ZooFormatError(f"{path}: unreadable safetensors data ({e})") from None
        _check_shard(path, tensors, info["rows"], self.architecture, self._dtype)
        self._cache[index] = tensors
        return tensors

    def _gather(self, ids: Sequence[int], key_fn, on_error: str):
        by_shard: Dict[int, List[int]] = {}
        for i in ids:
            by_shard.setdefault(self._by_id[i]["shard"], []).append(i)
        parts, kept, keys0 = {}, [], None
        for s, members in sorted(by_shard.items()):
            try:
                t = self.load_shard(s)
            except ZooFormatError:
                if on_error == "skip":
                    import warnings

                    warnings.warn(f"skipping corrupted shard {self.shard_path(s)}", stacklevel=3)
                    continue
                raise
            keys = {k: t[k].dtype for k in key_fn(t)}
            if keys0 is None:
                keys0 = keys
            elif keys != keys0:
                odd = sorted(k for k in set(keys) | set(keys0) if keys.get(k) != keys0.get(k))
                raise ZooFormatError(f"{self.shard_path(s)}: field {odd[0]!r}: missing or of another dtype in "
                                     "other shards (shards disagree on their tensors)")
            pos = {int(m): j for j, m in enumerate(t["member_id"].tolist())}
            idx = torch.tensor([pos[i] for i in members], dtype=torch.long)
            for key in keys:
                parts.setdefault(key, []).append(t[key][idx])
            kept.extend(members)
        order = sorted(range(len(kept)), key=lambda j: kept[j])
        perm = torch.tensor(order, dtype=torch.long)
        return {k: torch.cat(v)[perm] for k, v in parts.items()}, [kept[j] for j in order]

    # -------------------------------------------------------------------- data
    def load(self, split=None, include_diverged=False, ids=None, on_error: str = "raise"):
        """``(weights, labels, rows)`` of the selection, aligned and sorted by id.

        ``on_error="skip"`` drops members of corrupted shards (with a warning) instead of
        raising :class:`ZooFormatError`.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        sel = self._select(split, include_diverged, ids)
        t, kept = self._gather(sel, lambda t: [k for k in t if k != "member_id"], on_error)
        depth = len(self.k)
        if not kept:
            raise ValueError(f"zoo {self.root}: the selection (split={split!r}) is empty")
        try:
            w = KANWeights(**{f: [t[f"layers.{l}.{f}"] for l in range(depth)] for f in FIELDS},
                           k=list(self.k), base_fun=list(self.base_fun), validate=not include_diverged)
        except (ValueError, TypeError) as e:  # pragma: no cover - every shard was checked already
            raise ZooFormatError(f"zoo {self.root}: invalid weights ({e})") from None
        labels = {k[len("label."):]: v for k, v in t.items() if k.startswith("label.")}
        labels["prune_mask"] = [t[f"prune_mask.{l}"] for l in range(depth)]
        return w, labels, [self._by_id[i] for i in kept]

    def weights(self, split=None, include_diverged=False, ids=None, on_error="raise") -> KANWeights:
        """Stacked :class:`~wskan_ext.KANWeights` of the selection, ``(N, ...)``."""
        return self.load(split, include_diverged, ids, on_error)[0]

    def labels(self, split=None, include_diverged=False, ids=None, on_error="raise") -> Dict:
        """Label tensors ``{name: (N,)}`` plus ``prune_mask``: per layer ``(N, n_l, n_{l+1})``."""
        return self.load(split, include_diverged, ids, on_error)[1]

    def member(self, id: int) -> KANWeights:
        """One member as an unbatched :class:`~wskan_ext.KANWeights` (an unknown id raises
        ``MemberNotFoundError``, both a ``KeyError`` and a ``ValueError``)."""
        row = self._by_id.get(int(id))
        if row is None:
            self._select(None, True, [int(id)])  # raises MemberNotFoundError
        return self.weights(ids=[int(id)], include_diverged=row["status"] != "ok")[0]

    def to_kan(self, id: int):
        """Member ``id`` as a native :class:`wskan_ext.KAN` module."""
        from ..kan.module import KAN

        return KAN.from_weights(self.member(id))

    def to_pykan(self, id: int):
        """Member ``id`` as a pykan ``KAN`` (via :func:`wskan_ext.adapters.pykan.to_pykan`)."""
        from wskan_ext.adapters.pykan import to_pykan

        return to_pykan(self.member(id))


# ------------------------------------------------------------- single KAN files
def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _kan_digest(tensors: Dict[str, torch.Tensor], k, base_fun) -> str:
    """sha256 over the format, ``k``, ``base_fun`` and every tensor's name, dtype, shape and bytes."""
    names = sorted(tensors)
    h = hashlib.sha256(_canonical({"format": KAN_WEIGHTS_FORMAT, "k": list(k), "base_fun": list(base_fun),
                                   "tensors": [[n, str(tensors[n].dtype), list(tensors[n].shape)] for n in names]})
                       .encode())
    for n in names:
        h.update(_tensor_bytes(tensors[n]))
    return h.hexdigest()


def save_kan_weights(path: str, w: KANWeights) -> str:
    """Save one (or a stack of) KAN(s) as a safetensors file (atomic); returns the path written.

    The metadata holds ``format``, ``k``, ``base_fun`` and ``sha256``, a digest of all of
    them and of every tensor's name, dtype, shape and bytes, verified by
    :func:`load_kan_weights`. Parent directories are created.
    """
    if not isinstance(w, KANWeights):
        raise TypeError(f"save_kan_weights expects KANWeights, got {type(w).__name__}")
    w.validate()
    tensors = {k: v.detach().contiguous().cpu() for k, v in w.tensors().items()}
    meta = {"format": KAN_WEIGHTS_FORMAT, "k": json.dumps(list(w.k)), "base_fun": json.dumps(list(w.base_fun)),
            "sha256": _kan_digest(tensors, w.k, w.base_fun)}
    return atomic_write(path, _st_save(tensors, meta))


def load_kan_weights(path: str, require_checksum: bool = True) -> KANWeights:
    """Inverse of :func:`save_kan_weights` (no unpickling; :class:`ZooFormatError` naming
    the file and the field for anything wrong: format, ``k``/``base_fun``, tensor names,
    shapes, dtypes, values, checksum). Files from before checksums need
    ``require_checksum=False``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ZooFormatError(f"{path}: cannot read KAN weights file ({e.strerror or e})") from None
    meta = _st_metadata(data, path)
    try:
        tensors = st_load(data)
    except Exception as e:
        raise ZooFormatError(f"{path}: unreadable safetensors file ({e})") from None
    if meta.get("format") != KAN_WEIGHTS_FORMAT:
        raise ZooFormatError(f"{path}: not a wskan_ext KAN weights file (metadata format={meta.get('format')!r})")
    k, bf = _json_or_none(meta.get("k")), _json_or_none(meta.get("base_fun"))
    if not isinstance(k, list) or not k or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in k):
        raise ZooFormatError(f"{path}: field __metadata__.k: expected a JSON list of ints >= 1, got {meta.get('k')!r:.60}")
    if not isinstance(bf, list) or len(bf) != len(k) or not all(isinstance(b, str) and b in BASE_FUNCTIONS for b in bf):
        raise ZooFormatError(f"{path}: field __metadata__.base_fun: expected {len(k)} known base-function names, "
                             f"got {meta.get('base_fun')!r:.60}")
    expected = {f"layers.{l}.{f}" for l in range(len(k)) for f in FIELDS}
    missing, unknown = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing:
        raise ZooFormatError(f"{path}: field {missing[0]!r}: missing")
    if unknown:
        raise ZooFormatError(f"{path}: field {unknown[0]!r}: unknown tensor")
    digest = meta.get("sha256")
    if digest is None:
        if require_checksum:
            raise ZooFormatError(f"{path}: field __metadata__.sha256: missing (a file from before checksums; "
                                 "load with require_checksum=False and save it again)")
    elif digest != _kan_digest(tensors, k, bf):
        raise ZooFormatError(f"{path}: checksum mismatch (field __metadata__.sha256): the file is corrupted")
    try:
        return KANWeights.from_tensors(tensors, k=k, base_fun=bf)
    except (ValueError, TypeError) as e:
        raise ZooFormatError(f"{path}: invalid KAN weights ({e})") from None


def iter_rows(root: str, num_shards: int) -> Iterable[dict]:
    """The metadata rows of shards ``0 .. num_shards - 1`` (each shard's JSON, validated)."""
    root = os.path.realpath(os.fspath(root))
    for i in range(num_shards):
        yield from _shard_info(root, i)["rows"]
