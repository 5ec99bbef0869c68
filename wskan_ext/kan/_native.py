r"""Compiled CPU kernels for the local-support B-spline sum (``_csrc/local_spline.cpp``).

The C++ source is compiled on first use with the system's C++ compiler (``$CXX``, else
``c++`` / ``g++``; ``-O3 -march=native``, about 2 s) into a per-user cache
(``$WSKAN_EXT_CACHE``, default ``~/.cache/wskan_ext``), keyed by the source, the flags, the
compiler and the CPU, and loaded with ``ctypes``; no PyTorch headers are involved. Where no
compiler is found, or ``WSKAN_EXT_NATIVE=0`` is set, :func:`available` is ``False`` and every
caller uses the eager PyTorch kernels of :mod:`wskan_ext.kan.local_spline` (the same function;
a warning says why once).

The kernels compute exactly what :func:`~wskan_ext.kan.local_spline.local_spline_sum`'s
eager path computes (the same interval rule, the same cardinal recursion), one (model,
sample, input) at a time with the ``k+1`` active coefficient rows: ``O((k+1) m)`` per
(sample, input) forward and backward, no gathered or dense basis tensor. The model axis is
split over ``torch.get_num_threads()`` OpenMP threads of torch's own pool (the library links the
``libgomp`` in ``torch/lib``; serial where torch bundles none).

Layouts (all contiguous, float32 or float64, CPU): ``x (B, S, n)``, ``grid (B, n, nk)``,
``Cp (B, n, nk + k - 1, Mp)`` -- the coefficients as ``(basis, output)`` rows, zero-padded by
``k`` rows at both ends, so the active rows on interval ``j`` are ``j .. j+k``, and to ``Mp``
outputs, a multiple of the 64-byte vector (:func:`padded_rows`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

__all__ = ["available", "MAX_K", "supports", "native_spline_sum", "native_shared_sum", "SharedBasis",
           "SharedRows", "padded_rows"]

#: Largest spline order with a compiled kernel.
MAX_K = 5

# SharedBasis.from_local(lookup=None) takes the lookup form only up to this many distinct pairs
_MAX_AUTO_ROWS = 1 << 20

_SRC = Path(__file__).with_name("_csrc") / "local_spline.cpp"
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-std=c++17"]


def _openmp_flags() -> list:
    """Flags that build the kernels with OpenMP against the ``libgomp`` torch ships and loads
    itself (``torch/lib``), so that the kernels' threads are torch's own intra-op threads; ``[]``
    (serial kernels) where torch has no bundled ``libgomp``. Measured on the 2-core VM: with
    two Python threads over the model axis instead, torch's spinning OpenMP workers took the
    second core and two threads were no faster than one; with torch's pool, 1.8--2.0x."""
    lib_dir = Path(torch.__file__).parent / "lib"
    gomp = sorted(lib_dir.glob("libgomp*.so*"))
    if not gomp:
        return []
    return ["-fopenmp", f"-L{lib_dir}", f"-l:{gomp[0].name}", f"-Wl,-rpath,{lib_dir}"]
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:  # no /proc (not Linux): the processor name keys the cache instead
        return platform.processor()
    return platform.processor()


def _compiler() -> Optional[str]:
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def _build(cxx: str, extra: list) -> Path:
    """Compile (once per source, flags, compiler and CPU) and return the library's path."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256("\n".join([_SRC.read_text(), " ".join(_FLAGS + extra), version, platform.machine(),
                                    _cpu_id()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("WSKAN_EXT_CACHE", Path.home() / ".cache" / "wskan_ext")) / "native"
    lib = cache / f"local_spline_{key}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    try:
        r = subprocess.run([cxx, *_FLAGS, "-o", tmp, str(_SRC), *extra], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{cxx} failed:\n{r.stderr[-2000:]}")
        os.replace(tmp, lib)  # atomic: concurrent builders (test workers) never see a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _load(cxx: str) -> ctypes.CDLL:
    """Build and load with torch's OpenMP runtime; if that fails (a compiler whose OpenMP needs a
    newer ``libgomp`` than torch's, say), the serial kernels."""
    omp = _openmp_flags()
    try:
        return ctypes.CDLL(str(_build(cxx, omp)))
    except (OSError, RuntimeError, subprocess.SubprocessError):
        if not omp:
            raise
    return ctypes.CDLL(str(_build(cxx, [])))


@functools.lru_cache(maxsize=None)
def _lib():
    """The loaded library, or ``None`` (with one warning saying why)."""
    if os.environ.get("WSKAN_EXT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    cxx = _compiler()
    if cxx is None:
        warnings.warn("wskan_ext: no C++ compiler found ($CXX, c++, g++, clang++); the local-support "
                      "spline kernels run in eager PyTorch (same results, slower)", RuntimeWarning, stacklevel=3)
        return None
    try:
        lib = _load(cxx)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        warnings.warn(f"wskan_ext: could not build the native spline kernels ({e}); using eager PyTorch "
                      "(same results, slower)", RuntimeWarning, stacklevel=3)
        return None
    i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for suf in _DTYPES.values():  # (threads, k, pointers and sizes..., models)
        getattr(lib, f"wsk_sum_fwd_{suf}").argtypes = ([c_int] * 2 + [ptr] * 4 + [i64] * 5 + [ptr] * 2 + [c_int]
                                                       + [ptr] * 2 + [c_int, i64])
        getattr(lib, f"wsk_sum_bwd_{suf}").argtypes = ([c_int] * 2 + [ptr] * 6 + [i64] * 5 + [ptr] * 4 + [c_int, ptr]
                                                       + [i64] * 4)
        getattr(lib, f"wsk_shared_fwd_{suf}").argtypes = [c_int] * 2 + [ptr] * 4 + [i64] * 5 + [ptr] * 2 + [i64]
        getattr(lib, f"wsk_shared_bwd_{suf}").argtypes = [c_int] * 2 + [ptr] * 5 + [i64] * 4 + [ptr] * 2 + [i64]
        getattr(lib, f"wsk_table_fwd_{suf}").argtypes = [c_int] * 2 + [ptr] * 13 + [i64] * 7
        getattr(lib, f"wsk_table_bwd_{suf}").argtypes = [c_int] * 2 + [ptr] * 17 + [i64] * 7
        for name in ("sum_fwd", "sum_bwd", "shared_fwd", "shared_bwd", "table_fwd", "table_bwd"):
            getattr(lib, f"wsk_{name}_{suf}").restype = ctypes.c_int
    return lib


def available() -> bool:
    """Whether the compiled kernels are built and loaded (builds them on the first call)."""
    return _lib() is not None


def supports(*tensors: torch.Tensor, k: int, m: int) -> bool:
    """Whether the compiled kernels take these tensors: CPU, float32 or float64 (all the same),
    ``1 <= k <= MAX_K``, ``m >= 1`` outputs, and the library available."""
    t0 = tensors[0]
    return (1 <= k <= MAX_K and m >= 1 and t0.dtype in _DTYPES
            and all(t.device.type == "cpu" and t.dtype == t0.dtype for t in tensors) and available())


def _run(fn, B: int, *args):
    """Call the entry point ``fn(threads, *args, B)``: the model axis split over
    ``torch.get_num_threads()`` OpenMP threads (torch's own pool)."""
    rc = fn(torch.get_num_threads(), *args, B)
    if rc == -4:
        raise MemoryError("native spline kernel: a per-thread buffer could not be allocated")
    if rc:
        raise RuntimeError(f"native spline kernel refused its input (code {rc})")


def _p(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _base_and_slope(base_fun, x: torch.Tensor):
    """``base_fun(x)`` and its elementwise derivative, by autograd (the base function's own backward)."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        v = base_fun(xx)
        d, = torch.autograd.grad(v, xx, torch.ones_like(v))
    return v.detach().contiguous(), d.contiguous()


class _SplineSum(torch.autograd.Function):
    """The layer sum; with ``Wbp`` also the base term ``base_fun(x) @ W`` (``Wbp (B, n, Mp)``).
    For SiLU the kernels get ``sigmoid(x)`` and form ``x s`` and its slope ``s (1 + x (1 - s))``
    themselves (one tensor instead of two, no autograd pass for the slope). With ``nsp, nbp
    (B, Mp)`` (constants: no gradient) the node affine map on the output in the same pass, and
    the incoming gradient times ``nsp`` in the backward pass."""

    @staticmethod
    def forward(ctx, x, grid, Cp, Wbp, k: int, m: int, base_fun, nsp=None, nbp=None, transposed=False):
        lib = _lib()
        B, S, n = x.shape
        nk, Mp = grid.shape[-1], Cp.shape[-1]
        suf = _DTYPES[x.dtype]
        y = x.new_empty(B, m, S) if transposed else x.new_empty(B, S, m)
        silu = Wbp is not None and base_fun is torch.nn.functional.silu
        xb = None if Wbp is None else (torch.sigmoid(x) if silu else base_fun(x)).contiguous()
        _run(getattr(lib, f"wsk_sum_fwd_{suf}"), B, k, _p(x), _p(grid), _p(Cp), _p(y), S, n, m, nk, Mp, _p(xb),
             _p(Wbp), int(silu), _p(nsp), _p(nbp), int(transposed))
        ctx.save_for_backward(x, grid, Cp, Wbp, xb if silu else None, nsp)
        ctx.k, ctx.m, ctx.base_fun, ctx.silu, ctx.transposed = k, m, base_fun, silu, transposed
        return y

    @staticmethod
    def backward(ctx, gy):
        x, grid, Cp, Wbp, sig, nsp = ctx.saved_tensors
        B, S, n = x.shape
        nk, m, Mp = grid.shape[-1], ctx.m, Cp.shape[-1]
        # gy is read with its strides (no copy): (model, sample, output)
        gsb, gss, gso = (gy.stride(0), gy.stride(2), gy.stride(1)) if ctx.transposed else gy.stride()
        base = Wbp is not None
        gx = x.new_empty(B, S, n) if ctx.needs_input_grad[0] or base else None
        gCp = torch.zeros_like(Cp) if ctx.needs_input_grad[2] or base else None
        gWbp = torch.zeros_like(Wbp) if base else None
        if ctx.silu:
            xb, dxb = sig, None
        else:
            xb, dxb = _base_and_slope(ctx.base_fun, x) if base else (None, None)
        if gx is not None or gCp is not None:
            suf = _DTYPES[x.dtype]
            _run(getattr(_lib(), f"wsk_sum_bwd_{suf}"), B, ctx.k, _p(x), _p(grid), _p(Cp), _p(gy), _p(gx),
                 _p(gCp), S, n, m, nk, Mp, _p(xb), _p(dxb), _p(Wbp), _p(gWbp), int(ctx.silu), _p(nsp), gsb, gss, gso)
        return gx, None, gCp, gWbp, None, None, None, None, None, None


@dataclass
class SharedRows:
    """The distinct (input, value) pairs of shared inputs ``x (s, n)``, for the lookup form of
    :func:`native_shared_sum` (see :meth:`SharedBasis.from_local`).

    Fields: ``idx (s, n)`` int32, the row of every (sample, input); per row ``r`` (``R`` rows,
    the rows of input 0 first, each input's in increasing order of value): ``inp (R,)`` int32 its
    input, ``J (R,)`` int32 its interval, ``V (R, k+1)`` its active basis values, ``base (R,)``
    its base value (``None``: no base term). ``ref (n,)`` int32: each input's reference row, the
    row of its most common value (on image data the background level); the samples sparse
    without them: sample ``s``'s other rows are ``sidx[sptr[s]:sptr[s+1]]`` (``sptr (s+1,)``
    int64); for the backward pass ``order`` int32, the samples of row ``r`` at
    ``order[off[r]:off[r+1]]`` (``off (R+1,)`` int64; empty for the reference rows, whose
    gradients are the sum over all samples minus the other rows').
    """

    idx: torch.Tensor
    inp: torch.Tensor
    J: torch.Tensor
    V: torch.Tensor
    order: torch.Tensor
    off: torch.Tensor
    ref: torch.Tensor
    sptr: torch.Tensor
    sidx: torch.Tensor
    base: Optional[torch.Tensor] = None

    @property
    def num_rows(self) -> int:
        return self.inp.shape[0]

    @classmethod
    def from_inputs(cls, x: torch.Tensor, J: torch.Tensor, V: torch.Tensor,
                    base: Optional[torch.Tensor] = None) -> "SharedRows":
        """From the inputs ``x (s, n)`` and their per-(sample, input) intervals ``J (s, n)``,
        values ``V (s, n, k+1)`` and base values ``base (s, n)`` (each row takes those of its
        first sample, so the rows hold exactly the values the per-sample kernels use; NaN inputs
        get a row each)."""
        S, n = x.shape
        xs, perm = torch.sort(x.detach(), dim=0, stable=True)  # (s, n), each input's samples by value
        new = torch.ones_like(xs, dtype=torch.bool)
        new[1:] = xs[1:] != xs[:-1]
        new = new.T.reshape(-1)  # (n s), input-major
        samples = perm.T.reshape(-1)
        inputs = torch.arange(n, device=x.device).repeat_interleave(S)
        row = new.cumsum(0) - 1
        idx = torch.empty(S, n, dtype=torch.int64, device=x.device)
        idx[samples, inputs] = row
        starts = new.nonzero().squeeze(1)
        s0, i0 = samples[starts], inputs[starts]
        R = starts.shape[0]
        counts = torch.diff(torch.cat([starts, starts.new_tensor([S * n])]))
        # each input's most common row (the first of equal counts): its reference row
        best = torch.full((n,), -1, dtype=counts.dtype, device=x.device)
        key = counts * (R + 1) + (R - torch.arange(R, device=x.device))  # larger count, then lower row
        best = best.scatter_reduce(0, i0, key, reduce="amax", include_self=True)
        ref = R - best % (R + 1)
        keep = row != ref[inputs]  # positions (input-major) of the non-reference pairs
        kept_counts = torch.where(torch.arange(R, device=x.device) == ref[i0], torch.zeros_like(counts), counts)
        off = torch.cat([starts.new_zeros(1), kept_counts.cumsum(0)])
        nonref = idx != ref.unsqueeze(0)  # (s, n)
        sptr = torch.cat([starts.new_zeros(1), nonref.sum(1).cumsum(0)])
        return cls(idx.to(torch.int32), i0.to(torch.int32).contiguous(), J[s0, i0].contiguous(),
                   V[s0, i0].contiguous(), samples[keep].to(torch.int32).contiguous(), off.to(torch.int64).contiguous(),
                   ref.to(torch.int32).contiguous(), sptr.to(torch.int64).contiguous(),
                   idx[nonref].to(torch.int32).contiguous(), None if base is None else base[s0, i0].contiguous())


@dataclass
class SharedBasis:
    """The local basis of inputs ``x (s, n)`` on a grid ``(n, K)`` shared by every model (a zoo's
    first layer: the data and its fixed grid), prepared once for :func:`native_shared_sum`.

    Fields: ``J (s, n)`` int32 interval of every (sample, input) (0 outside the grid),
    ``V (s, n, k+1)`` the active basis values (0 outside), and for the backward pass the samples
    of every input grouped by interval: ``order (n, s)`` int32, ``Vs (n, s, k+1)`` the values in
    that order, ``off (n, K)`` int64 group bounds (group ``j`` is ``off[i, j] : off[i, j+1]``);
    ``base (s, n)`` the base function's values at ``x`` (``None``: no base term); ``rows``: the
    distinct (input, value) pairs (:class:`SharedRows`) where :func:`native_shared_sum` uses its
    lookup form, else ``None`` (with ``rows``, ``order``, ``Vs`` and ``off`` are ``None``: only
    the per-sample form's backward reads them).
    """

    J: torch.Tensor
    V: torch.Tensor
    order: Optional[torch.Tensor]
    Vs: Optional[torch.Tensor]
    off: Optional[torch.Tensor]
    k: int
    nk: int
    base: Optional[torch.Tensor] = None
    rows: Optional[SharedRows] = None

    @classmethod
    def from_local(cls, first: torch.Tensor, values: torch.Tensor, k: int, nk: int,
                   base: Optional[torch.Tensor] = None, x: Optional[torch.Tensor] = None,
                   lookup: Optional[bool] = None) -> "SharedBasis":
        """From :func:`~wskan_ext.kan.local_spline.local_basis` of ``x (s, n)`` on a grid
        ``(n, nk)`` with uniform rows: its ``first (s, n)`` and ``values (s, n, k+1)``; ``base``
        ``(s, n)``: the base function's values at ``x``, for :func:`native_shared_sum`'s base term.

        With the inputs ``x`` also given, the distinct (input, value) pairs are found
        (:class:`SharedRows`), and ``lookup`` chooses the form of :func:`native_shared_sum`:
        ``True`` the lookup form, ``False`` the per-sample one, ``None`` (default) the lookup
        form where there are at most half as many distinct pairs as (sample, input) pairs
        (quantised data such as pixel levels, or an INR's coordinate grid) and at most
        ``2**20`` of them (each compute thread holds one model's table of ``rows x outputs``
        values: 64 MiB at 16 float32 outputs)."""
        J = (first + k).to(torch.int32)  # interval index j (first active basis function + k)
        V = values.detach().contiguous()
        base = None if base is None else base.detach().to(values.dtype).contiguous()
        if lookup and x is None:
            raise ValueError("SharedBasis.from_local: lookup=True needs the inputs x")
        if lookup and J.numel() == 0:
            raise ValueError(f"SharedBasis.from_local: lookup=True needs at least one sample and input, got x of shape "
                             f"{tuple(J.shape)}")
        rows = None
        if x is not None and lookup is not False and J.numel() > 0:
            if tuple(x.shape) != tuple(J.shape):
                raise ValueError(f"SharedBasis.from_local: x {tuple(x.shape)} does not match first {tuple(J.shape)}")
            rows = SharedRows.from_inputs(x, J, V, base)
            if lookup is None and (2 * rows.num_rows > J.numel() or rows.num_rows > _MAX_AUTO_ROWS):
                rows = None
        if rows is not None:  # the per-sample backward's grouping is not needed
            return cls(J.contiguous(), V, None, None, None, k, nk, base, rows)
        order = torch.argsort(J.T, dim=1, stable=True)  # (n, s)
        counts = torch.stack([torch.bincount(J[:, i], minlength=nk - 1) for i in range(J.shape[1])])
        off = torch.nn.functional.pad(counts.cumsum(1), (1, 0))  # (n, nk)
        Vs = torch.stack([V[order[i], i] for i in range(J.shape[1])])  # (n, s, k+1)
        return cls(J.contiguous(), V, order.to(torch.int32).contiguous(), Vs.contiguous(),
                   off.to(torch.int64).contiguous(), k, nk, base, rows)


class _SharedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Cp, Wbp, basis: SharedBasis, m: int):
        S, n = basis.J.shape
        B, Mp = Cp.shape[0], Cp.shape[-1]
        y = Cp.new_empty(B, S, m)
        xb = basis.base if Wbp is not None else None
        _run(getattr(_lib(), f"wsk_shared_fwd_{_DTYPES[Cp.dtype]}"), B, basis.k, _p(basis.J), _p(basis.V), _p(Cp),
             _p(y), S, n, m, basis.nk, Mp, _p(xb), _p(Wbp))
        ctx.basis, ctx.m, ctx.shape, ctx.base = basis, m, Cp.shape, Wbp is not None
        return y

    @staticmethod
    def backward(ctx, gy):
        basis, m, shape = ctx.basis, ctx.m, ctx.shape
        S, n = basis.J.shape
        Mp = shape[-1]
        gyp = gy.contiguous() if Mp == m else torch.nn.functional.pad(gy, (0, Mp - m)).contiguous()
        gCp = gy.new_zeros(shape)
        gWbp = gy.new_zeros(shape[0], n, Mp) if ctx.base else None
        _run(getattr(_lib(), f"wsk_shared_bwd_{_DTYPES[gy.dtype]}"), shape[0], basis.k, _p(basis.order),
             _p(basis.Vs), _p(basis.off), _p(gyp), _p(gCp), S, n, basis.nk, Mp,
             _p(basis.base if ctx.base else None), _p(gWbp))
        return gCp, gWbp, None, None


class _TableSum(torch.autograd.Function):
    """:func:`native_shared_sum` in its lookup form (``basis.rows``), on ``coef (B, n, m, nb)`` in
    its own layout, times ``sc (B, n, m)`` if given (padded and scaled per model inside the
    kernel); with ``nsp, nbp (B, Mp)`` the node affine map in the same pass."""

    @staticmethod
    def forward(ctx, coef, sc, Wbp, nsp, nbp, basis: SharedBasis, Mp: int):
        rows = basis.rows
        S, n = basis.J.shape
        B, m = coef.shape[0], coef.shape[-2]
        y = coef.new_empty(B, S, m)
        bd = rows.base if Wbp is not None else None
        _run(getattr(_lib(), f"wsk_table_fwd_{_DTYPES[coef.dtype]}"), B, basis.k, _p(rows.sptr), _p(rows.sidx),
             _p(rows.ref), _p(rows.J), _p(rows.V), _p(rows.inp), _p(bd), _p(coef), _p(sc), _p(Wbp), _p(nsp), _p(nbp), _p(y), S, n, m, basis.nk,
             Mp, rows.num_rows)
        ctx.save_for_backward(coef, sc, Wbp, nsp)
        ctx.basis, ctx.Mp = basis, Mp
        return y

    @staticmethod
    def backward(ctx, gy):
        coef, sc, Wbp, nsp = ctx.saved_tensors
        basis, Mp = ctx.basis, ctx.Mp
        rows = basis.rows
        S, n = basis.J.shape
        B, m = coef.shape[0], coef.shape[-2]
        gyp = gy.contiguous() if Mp == m else torch.nn.functional.pad(gy, (0, Mp - m)).contiguous()
        gcoef = torch.empty_like(coef)
        gsc = None if sc is None else torch.empty_like(sc)
        gWbp = None if Wbp is None else torch.zeros_like(Wbp)
        gns = None if nsp is None else torch.zeros_like(nsp)
        gnb = None if nsp is None else torch.zeros_like(nsp)
        _run(getattr(_lib(), f"wsk_table_bwd_{_DTYPES[gy.dtype]}"), B, basis.k, _p(rows.order), _p(rows.off),
             _p(rows.ref), _p(rows.J), _p(rows.V), _p(rows.inp), _p(None if Wbp is None else rows.base), _p(coef), _p(sc), _p(Wbp),
             _p(nsp), _p(gyp), _p(gcoef), _p(gsc), _p(gWbp), _p(gns), _p(gnb), S, n, m, basis.nk, Mp, rows.num_rows)
        return gcoef, gsc, gWbp, gns, gnb, None, None


def padded_rows(coef: torch.Tensor, k: int) -> torch.Tensor:
    """``coef (B, n, m, nb)`` -> ``Cp (B, n, nb + 2k, Mp)`` (differentiable): ``(basis, output)``
    rows, zero-padded by ``k`` rows at both ends and to ``Mp`` outputs, a multiple of the
    kernels' 64-byte vectors."""
    lanes = 64 // coef.element_size()
    m = coef.shape[-2]
    return torch.nn.functional.pad(coef.transpose(-1, -2), (0, -m % lanes, k, k)).contiguous()


def _padded_outputs(w: torch.Tensor) -> torch.Tensor:
    """``(..., m)`` -> ``(..., Mp)``, zero-padded to whole 64-byte vectors (differentiable)."""
    return torch.nn.functional.pad(w, (0, -w.shape[-1] % (64 // w.element_size()))).contiguous()


def native_spline_sum(x: torch.Tensor, grid: torch.Tensor, coef: torch.Tensor, k: int,
                      base_weight: Optional[torch.Tensor] = None, base_fun=None,
                      node_scale: Optional[torch.Tensor] = None,
                      node_bias: Optional[torch.Tensor] = None, transposed: bool = False) -> torch.Tensor:
    r""":math:`y_{B,s,o} = \sum_i \sum_b \mathrm{coef}_{B,i,o,b} B_{i,b}(x_{B,s,i})` on uniform grids,
    differentiable in ``x`` and ``coef`` (check :func:`supports` first); with ``base_weight``
    also :math:`+ \sum_i \mathrm{base\_fun}(x_{B,s,i})\, \mathrm{base\_weight}_{B,i,o}` in the
    same pass (a KAN layer before its node affine map; ``base_fun`` an elementwise torch
    function, differentiated by autograd), differentiable in ``base_weight`` too; with
    ``node_scale`` and ``node_bias`` the node affine map
    :math:`\mathrm{node\_scale}_{B,o}\, y_{B,s,o} + \mathrm{node\_bias}_{B,o}` (the whole
    layer), fused into the kernels where neither needs a gradient (a module's buffers, as in the
    batched trainer) and applied by torch otherwise (the same function, differentiable in both).
    With ``transposed`` the result is the same ``(B, s, m)`` tensor as a view of a contiguous
    ``(B, m, s)`` one (what a loss over classes, ``F.cross_entropy`` on ``(B, c, s)``, reads
    without a copy). The incoming gradient is read with its strides in either layout.

    Shapes: ``x (B, s, n)``, ``grid (B, n, K)``, ``coef (B, n, m, K-k-1)``, ``base_weight (B, n, m)``,
    ``node_scale, node_bias (B, m)``; returns ``(B, s, m)``.
    """
    if x.dim() != 3 or grid.dim() != 3 or coef.dim() != 4:
        raise ValueError(f"native_spline_sum: expected x (B, s, n), grid (B, n, K), coef (B, n, m, K-k-1); got "
                         f"x {tuple(x.shape)}, grid {tuple(grid.shape)}, coef {tuple(coef.shape)}")
    B, _, n = x.shape
    m = coef.shape[-2]
    if grid.shape[:2] != (B, n) or coef.shape[:2] != (B, n) or grid.shape[-1] != coef.shape[-1] + k + 1:
        raise ValueError(f"native_spline_sum: x {tuple(x.shape)}, grid {tuple(grid.shape)} and coef "
                         f"{tuple(coef.shape)} do not fit (k={k}: K = nb + k + 1 knots per input)")
    if (base_weight is None) != (base_fun is None):
        raise ValueError("native_spline_sum: give base_weight and base_fun together")
    if base_weight is not None and tuple(base_weight.shape) != (B, n, m):
        raise ValueError(f"native_spline_sum: base_weight must have shape {(B, n, m)}, got {tuple(base_weight.shape)}")
    if not supports(x, grid, coef, k=k, m=m):
        raise ValueError(f"native_spline_sum: no compiled kernel for {x.device} {x.dtype} tensors with k={k} and "
                         f"{m} outputs (available: {available()})")
    if (node_scale is None) != (node_bias is None):
        raise ValueError("native_spline_sum: give node_scale and node_bias together")
    for name, t in (("node_scale", node_scale), ("node_bias", node_bias)):
        if t is not None and tuple(t.shape) != (B, m):
            raise ValueError(f"native_spline_sum: {name} must have shape {(B, m)}, got {tuple(t.shape)}")
    Wbp = None if base_weight is None else _padded_outputs(base_weight)
    args = (x.contiguous(), grid.detach().contiguous(), padded_rows(coef, k), Wbp, k, m, base_fun)
    fused = node_scale is not None and not (node_scale.requires_grad or node_bias.requires_grad)
    node = (_padded_outputs(node_scale.detach()), _padded_outputs(node_bias.detach())) if fused else (None, None)
    y = _SplineSum.apply(*args, *node, transposed)
    if transposed:
        y = y.transpose(1, 2)
    if node_scale is not None and not fused:
        y = node_scale.unsqueeze(-2) * y + node_bias.unsqueeze(-2)
    return y


def native_shared_sum(basis: SharedBasis, coef: torch.Tensor, base_weight: Optional[torch.Tensor] = None,
                      node_scale: Optional[torch.Tensor] = None, node_bias: Optional[torch.Tensor] = None,
                      spline_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""The same sum for inputs and a grid shared by every model, from their prepared local
    basis (:class:`SharedBasis`):
    :math:`y_{B,s,o} = \sum_{i,r} V_{s,i,r}\,\mathrm{coef}_{B,i,o,j_{s,i}-k+r}`, with
    ``base_weight`` also :math:`+ \sum_i \mathrm{base}_{s,i}\, \mathrm{base\_weight}_{B,i,o}`
    (``basis.base``), with ``spline_scale`` every edge's spline times its scale
    (:math:`\mathrm{coef}_{B,i,o,\cdot}` replaced by
    :math:`\mathrm{spline\_scale}_{B,i,o}\,\mathrm{coef}_{B,i,o,\cdot}`, a KAN layer's
    ``mask * scale_sp``), and with ``node_scale`` and ``node_bias`` the layer's node affine map
    :math:`\mathrm{node\_scale}_{B,o}\, y_{B,s,o} + \mathrm{node\_bias}_{B,o}` (the whole
    layer); differentiable in all of them.

    Two forms, chosen when the basis is built (:meth:`SharedBasis.from_local`):

    * per sample: one pass over (model, sample, input) with the ``k+1`` active rows; the
      backward pass sums each active coefficient row's gradient over the samples of its
      interval in registers and stores it once;
    * lookup (``basis.rows``, inputs with few distinct values): per model a table of every
      distinct (input, value) pair's ``m`` outputs (node scale included), then one vector add
      per (sample, input); the backward pass sums the output gradient over each pair's samples
      and spreads it onto the pair's ``k+1`` rows. The spline scale and the node affine map
      cost nothing extra here (the coefficients are scaled per model inside the kernel).

    Shapes: ``coef (B, n, m, nb)`` (``nb = K - k - 1`` of the basis' grid), ``base_weight,
    spline_scale (B, n, m)``, ``node_scale, node_bias (B, m)``; returns ``(B, s, m)``.
    """
    n = basis.J.shape[1]
    if coef.shape[-1] != basis.nk - basis.k - 1 or coef.shape[-3] != n:
        raise ValueError(f"native_shared_sum: coef {tuple(coef.shape)} does not fit the basis of "
                         f"{n} inputs and {basis.nk - basis.k - 1} basis functions")
    if base_weight is not None and (basis.base is None or tuple(base_weight.shape) != tuple(coef.shape[:3])):
        raise ValueError(f"native_shared_sum: base_weight {tuple(base_weight.shape)} needs a basis with base values "
                         f"and the shape {tuple(coef.shape[:3])}")
    if base_weight is not None and basis.rows is not None and basis.rows.base is None:
        raise ValueError("native_shared_sum: base_weight needs rows with base values (build the basis with base=)")
    if (node_scale is None) != (node_bias is None):
        raise ValueError("native_shared_sum: give node_scale and node_bias together")
    B, m = coef.shape[0], coef.shape[-2]
    for name, t, shape in (("node_scale", node_scale, (B, m)), ("node_bias", node_bias, (B, m)),
                           ("spline_scale", spline_scale, tuple(coef.shape[:3]))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"native_shared_sum: {name} must have shape {shape}, got {tuple(t.shape)}")
    Wbp = None if base_weight is None else _padded_outputs(base_weight)
    if basis.rows is None:
        eff = coef if spline_scale is None else spline_scale.unsqueeze(-1) * coef
        y = _SharedSum.apply(padded_rows(eff, basis.k), Wbp, basis, m)
        return y if node_scale is None else node_scale.unsqueeze(-2) * y + node_bias.unsqueeze(-2)
    nsp, nbp = (None, None) if node_scale is None else (_padded_outputs(node_scale), _padded_outputs(node_bias))
    sc = None if spline_scale is None else spline_scale.contiguous()
    Mp = m + (-m % (64 // coef.element_size()))
    return _TableSum.apply(coef.contiguous(), sc, Wbp, nsp, nbp, basis, Mp)
