"""The zoo store: a directory of safetensors shards, a metadata table and a manifest.

.. code-block:: text

    DIR/manifest.json                    format, format_version, library_version, build config,
                                         architecture, shard layout (written once, first)
    DIR/shards/shard-00000.safetensors   stacked tensors of the shard's members:
                                         layers.{l}.{field} (M, ...), prune_mask.{l} (M, n, m),
                                         label.{name} (M,), member_id (M,)
    DIR/shards/shard-00000.json          the shard's metadata rows + sha256 of its tensors file
                                         (written last: its presence marks the shard done)
    DIR/metadata.jsonl                   all rows sorted by id (written when every shard is done)

Every file is written atomically (temporary file in the same directory, then
``os.replace``), so a killed build leaves only complete files; re-running the same build
command skips the shards that are done. Loading never unpickles: tensors come from
safetensors, metadata from JSON, and every shard's sha256 is checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..kan.weights import FIELDS, KANWeights

__all__ = ["FORMAT", "FORMAT_VERSION", "ZooFormatError", "Zoo", "atomic_write", "write_shard",
           "shard_name", "save_kan_weights", "load_kan_weights", "clean_float"]

FORMAT = "wskan_ext.zoo"
FORMAT_VERSION = 1


class ZooFormatError(ValueError):
    """A zoo file is missing, corrupted, truncated or from a newer format version."""


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def clean_float(v) -> Optional[float]:
    """A JSON-safe float (``None`` for NaN/Inf)."""
    v = float(v)
    return v if math.isfinite(v) else None


def dumps(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def write_shard(root: str, index: int, tensors: Dict[str, torch.Tensor], rows: List[dict]) -> None:
    """Write shard ``index``: its tensors file, then its JSON (rows + checksum)."""
    data = st_save({k: v.contiguous().cpu() for k, v in tensors.items()}, metadata={"format": FORMAT})
    base = os.path.join(root, "shards", shard_name(index))
    atomic_write(base + ".safetensors", data)
    info = {"shard": index, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": rows}
    atomic_write(base + ".json", dumps(info))


def shard_done(root: str, index: int) -> bool:
    """Whether shard ``index`` is complete and its tensors file matches its checksum."""
    base = os.path.join(root, "shards", shard_name(index))
    try:
        with open(base + ".json", "rb") as f:
            info = json.loads(f.read())
        with open(base + ".safetensors", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == info["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def read_manifest(root: str) -> dict:
    path = os.path.join(root, "manifest.json")
    try:
        with open(path, "rb") as f:
            man = json.loads(f.read())
    except FileNotFoundError:
        raise ZooFormatError(f"{path}: not found ({root} is not a zoo directory)") from None
    except ValueError as e:
        raise ZooFormatError(f"{path}: not valid JSON ({e})") from None
    if man.get("format") != FORMAT:
        raise ZooFormatError(f"{path}: format is {man.get('format')!r}, expected {FORMAT!r}")
    v = man.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise ZooFormatError(
            f"{path}: zoo format version {v} is newer than this library supports ({FORMAT_VERSION}); "
            "upgrade wskan_ext to read it"
        )
    return man


class Zoo:
    """Read a zoo directory (see the module docstring).

    ``Zoo(dir)`` reads the manifest and metadata table; tensors load lazily per shard.
    Members are addressed by integer ``id`` (``run * checkpoints_per_run + checkpoint``).
    Selections (``split``, ``include_diverged``, ``ids``) return members sorted by id, and
    :meth:`weights`, :meth:`labels`, :meth:`rows` with the same arguments are aligned.

    Example::

        zoo = Zoo("zoo_dir")
        w = zoo.weights(split="train")           # KANWeights, (N, ...) stacked
        y = zoo.labels(split="train")["test_acc"]  # (N,) aligned with w
        masks = zoo.labels(split="train")["prune_mask"]  # list per layer of (N, n, m)
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, root: str):
        self.root = os.fspath(root)
        self.manifest = read_manifest(self.root)
        path = os.path.join(self.root, "metadata.jsonl")
        if not os.path.exists(path):
            raise ZooFormatError(
                f"{path}: missing -- the build is incomplete; re-run the same build command to resume it"
            )
        with open(path, "rb") as f:
            try:
                self.metadata: List[dict] = [json.loads(line) for line in f.read().splitlines() if line.strip()]
            except ValueError as e:
                raise ZooFormatError(f"{path}: corrupted metadata table ({e})") from None
        self._by_id = {r["id"]: r for r in self.metadata}
        arch = self.manifest["architecture"]
        self.k, self.base_fun = arch["k"], arch["base_fun"]
        self._cache: Dict[int, Dict[str, torch.Tensor]] = {}

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
            raise KeyError(f"zoo {self.root}: no member with id {missing[:5]}")
        return ids

    def rows(self, split=None, include_diverged=False, ids=None) -> List[dict]:
        """Metadata rows of the selection."""
        return [self._by_id[i] for i in self._select(split, include_diverged, ids)]

    # ------------------------------------------------------------------ shards
    def shard_path(self, index: int) -> str:
        return os.path.join(self.root, "shards", shard_name(index) + ".safetensors")

    def load_shard(self, index: int) -> Dict[str, torch.Tensor]:
        """All tensors of shard ``index`` (checksum-verified; never unpickles)."""
        if index in self._cache:
            return self._cache[index]
        path = self.shard_path(index)
        jpath = path[: -len(".safetensors")] + ".json"
        try:
            with open(jpath, "rb") as f:
                info = json.loads(f.read())
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as e:
            raise ZooFormatError(f"{e.filename}: missing shard file") from None
        except ValueError as e:
            raise ZooFormatError(f"{jpath}: corrupted shard index ({e})") from None
        if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise ZooFormatError(
                f"{path}: corrupted or truncated shard ({len(data)} bytes, expected {info.get('bytes')}; "
                "checksum mismatch)"
            )
        try:
            tensors = st_load(data)
        except Exception as e:  # safetensors raises its own error type
            raise ZooFormatError(f"{path}: unreadable safetensors data ({e})") from None
        self._cache[index] = tensors
        return tensors

    def _gather(self, ids: Sequence[int], key_fn, on_error: str):
        by_shard: Dict[int, List[int]] = {}
        for i in ids:
            by_shard.setdefault(self._by_id[i]["shard"], []).append(i)
        parts, kept = {}, []
        for s, members in sorted(by_shard.items()):
            try:
                t = self.load_shard(s)
            except ZooFormatError:
                if on_error == "skip":
                    import warnings

                    warnings.warn(f"skipping corrupted shard {self.shard_path(s)}", stacklevel=3)
                    continue
                raise
            pos = {int(m): j for j, m in enumerate(t["member_id"].tolist())}
            idx = torch.tensor([pos[i] for i in members], dtype=torch.long)
            for key in key_fn(t):
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
        w = KANWeights(**{f: [t[f"layers.{l}.{f}"] for l in range(depth)] for f in FIELDS},
                       k=self.k, base_fun=self.base_fun, validate=not include_diverged)
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
        """One member as an unbatched :class:`~wskan_ext.KANWeights`."""
        row = self._by_id.get(int(id))
        if row is None:
            raise KeyError(f"zoo {self.root}: no member with id {id}")
        return self.weights(ids=[int(id)], include_diverged=row["status"] != "ok")[0]

    def to_kan(self, id: int):
        """Member ``id`` as a native :class:`wskan_ext.KAN` module."""
        from ..kan.module import KAN

        return KAN.from_weights(self.member(id))

    def to_pykan(self, id: int):
        """Member ``id`` as a pykan ``KAN`` (via :func:`wskan_ext.adapters.pykan.to_pykan`)."""
        from wskan_ext.adapters.pykan import to_pykan

        return to_pykan(self.member(id))


def save_kan_weights(path: str, w: KANWeights) -> None:
    """Save one (or a stack of) KAN(s) as a safetensors file (atomic)."""
    meta = {"format": "wskan_ext.kan_weights", "k": json.dumps(list(w.k)), "base_fun": json.dumps(list(w.base_fun))}
    atomic_write(path, st_save({k: v.detach().contiguous().cpu() for k, v in w.tensors().items()}, metadata=meta))


def load_kan_weights(path: str) -> KANWeights:
    """Inverse of :func:`save_kan_weights` (no unpickling)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ZooFormatError(f"{path}: unreadable safetensors file ({e})") from None
    if meta.get("format") != "wskan_ext.kan_weights":
        raise ZooFormatError(f"{path}: not a wskan_ext KAN weights file (metadata format={meta.get('format')!r})")
    return KANWeights.from_tensors(tensors, k=json.loads(meta["k"]), base_fun=json.loads(meta["base_fun"]))


def iter_rows(root: str, num_shards: int) -> Iterable[dict]:
    for i in range(num_shards):
        with open(os.path.join(root, "shards", shard_name(i) + ".json"), "rb") as f:
            yield from json.loads(f.read())["rows"]
