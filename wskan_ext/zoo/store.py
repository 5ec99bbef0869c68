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

import hashlib
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from safetensors.torch import load as st_load

from ..kan.spline import BASE_FUNCTIONS
from ..kan.weights import FIELDS, KANWeights
from .files import (FORMAT, FORMAT_VERSION, KAN_WEIGHTS_FORMAT, LOCK_NAME, MemberNotFoundError, ZooFormatError,
                    ZooLockedError, atomic_write, clean_stale_temp, resolve_dir, zoo_lock)
from .shards import (SESSION_FILES, SPLITS, _canonical, _check_fingerprint, _check_row, _check_shard, _json_or_none,
                     _shard_base, _shard_info, _st_metadata, _st_save, _torch_dtype, clean_float, config_fingerprint,
                     content_files, dumps, read_manifest, shard_done, shard_name, verify_fingerprint, write_shard)

__all__ = ["FORMAT", "FORMAT_VERSION", "KAN_WEIGHTS_FORMAT", "LOCK_NAME", "ZooFormatError", "ZooLockedError",
           "MemberNotFoundError", "Zoo", "atomic_write", "write_shard", "shard_done", "shard_name",
           "save_kan_weights", "load_kan_weights", "clean_float", "config_fingerprint", "verify_fingerprint",
           "zoo_lock", "clean_stale_temp", "resolve_dir", "read_manifest", "iter_rows", "content_files",
           "SESSION_FILES", "SPLITS", "dumps"]


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

    SPLITS = SPLITS

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
