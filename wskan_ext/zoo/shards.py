"""Zoo identity and shards: config fingerprints, writing, reading and validating
shards and the manifest (see :mod:`wskan_ext.zoo.store`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Dict, List, Optional

import torch
from safetensors.torch import save as st_save

from ..kan.spline import BASE_FUNCTIONS
from ..kan.weights import FIELDS, KANWeights
from .files import _INT_DTYPES, FORMAT, FORMAT_VERSION, LOCK_NAME, ZooFormatError, atomic_write, read_json

#: The splits of a zoo (members are split by training run).
SPLITS = ("train", "val", "test")

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


def _shard_info(root: str, index: int) -> dict:
    """The shard JSON, with its top-level fields type-checked."""
    path = _shard_base(root, index) + ".json"
    info = read_json(path, "missing shard file", "corrupted shard index", ZooFormatError)
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
    if r.get("split") not in SPLITS:
        raise ZooFormatError(f"{where}: field 'split': expected one of {SPLITS}, got {r.get('split')!r:.60}")
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
    man = read_json(path, f"not found ({root} is not a zoo directory)", "not valid JSON", ZooFormatError)
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
