r"""Compiled CPU kernels for the local-support B-spline sum (``_csrc/local_spline.cpp``).

The C++ source is compiled on first use with the system's C++ compiler (``$CXX``, else
``c++`` / ``g++``; ``-O3 -march=native``, about 2 s) into a per-user cache
(``$WSKAN_EXT_CACHE``, default ``~/.cache/wskan_ext``), keyed by the source, the flags, the
compiler and the CPU, and loaded with :mod:`ctypes`; no PyTorch headers are involved. Where no
compiler is found, or ``WSKAN_EXT_NATIVE=0`` is set, :func:`available` is ``False`` and every
caller uses the eager PyTorch kernels of :mod:`wskan_ext.kan.local_spline` (the same function;
a warning says why once).

The kernels compute exactly what :func:`~wskan_ext.kan.local_spline.local_spline_sum`'s
eager path computes (the same interval rule, the same cardinal recursion), one (model,
sample, input) at a time with the ``k+1`` active coefficient rows: ``O((k+1) m)`` per
(sample, input) forward and backward, no gathered or dense basis tensor. ``ctypes`` releases
the GIL during a call, so the model axis is split between ``torch.get_num_threads()`` Python
threads.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

__all__ = ["available", "MAX_K", "MAX_OUT", "supports", "native_spline_sum", "native_shared_sum"]

#: Largest spline order with a compiled kernel.
MAX_K = 5
#: Largest number of outputs ``m`` per layer the forward kernels accept.
MAX_OUT = 256

_SRC = Path(__file__).with_name("_csrc") / "local_spline.cpp"
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-std=c++17"]
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> Optional[str]:
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def _build(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256("\n".join([_SRC.read_text(), " ".join(_FLAGS), version, platform.machine(),
                                    _cpu_id()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("WSKAN_EXT_CACHE", Path.home() / ".cache" / "wskan_ext")) / "native"
    lib = cache / f"local_spline_{key}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    try:
        r = subprocess.run([cxx, *_FLAGS, "-o", tmp, str(_SRC)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{cxx} failed:\n{r.stderr[-2000:]}")
        os.replace(tmp, lib)  # atomic: concurrent builders (test workers) never see a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


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
        lib = ctypes.CDLL(str(_build(cxx)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        warnings.warn(f"wskan_ext: could not build the native spline kernels ({e}); using eager PyTorch "
                      "(same results, slower)", RuntimeWarning, stacklevel=3)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for suf in _DTYPES.values():
        getattr(lib, f"wsk_sum_fwd_{suf}").argtypes = [ctypes.c_int] + [ptr] * 4 + [i64] * 7
        getattr(lib, f"wsk_sum_bwd_{suf}").argtypes = [ctypes.c_int] + [ptr] * 6 + [i64] * 7
        getattr(lib, f"wsk_shared_fwd_{suf}").argtypes = [ctypes.c_int] + [ptr] * 4 + [i64] * 7
        getattr(lib, f"wsk_shared_bwd_{suf}").argtypes = [ctypes.c_int] + [ptr] * 4 + [i64] * 7
        for name in ("sum_fwd", "sum_bwd", "shared_fwd", "shared_bwd"):
            getattr(lib, f"wsk_{name}_{suf}").restype = ctypes.c_int
    return lib


def available() -> bool:
    """Whether the compiled kernels are built and loaded (builds them on the first call)."""
    return _lib() is not None


def supports(*tensors: torch.Tensor, k: int, m: int) -> bool:
    """Whether the compiled kernels take these tensors: CPU, float32 or float64 (all the same),
    ``1 <= k <= MAX_K``, ``m <= MAX_OUT``, and the library available."""
    t0 = tensors[0]
    return (1 <= k <= MAX_K and m <= MAX_OUT and t0.dtype in _DTYPES
            and all(t.device.type == "cpu" and t.dtype == t0.dtype for t in tensors) and available())


@functools.lru_cache(maxsize=4)
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="wskan-spline")


def _run(fn, B: int, *args):
    """Call ``fn(*args, b0, b1)`` on ``torch.get_num_threads()`` slices of the model axis."""
    t = min(torch.get_num_threads(), B)
    if t <= 1:
        rc = [fn(*args, 0, B)]
    else:
        cuts = [B * r // t for r in range(t + 1)]
        rc = list(_pool(t).map(lambda r: fn(*args, cuts[r], cuts[r + 1]), range(t)))
    if any(rc):
        raise RuntimeError(f"native spline kernel refused its input (code {rc})")


def _p(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class _SplineSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grid, Cp, k: int, m: int):
        lib = _lib()
        B, S, n = x.shape
        nk, Mp = grid.shape[-1], Cp.shape[-1]
        suf = _DTYPES[x.dtype]
        y = x.new_empty(B, S, m)
        _run(getattr(lib, f"wsk_sum_fwd_{suf}"), B, k, _p(x), _p(grid), _p(Cp), _p(y), S, n, m, nk, Mp)
        ctx.save_for_backward(x, grid, Cp)
        ctx.k, ctx.m = k, m
        return y

    @staticmethod
    def backward(ctx, gy):
        x, grid, Cp = ctx.saved_tensors
        B, S, n = x.shape
        nk, m, Mp = grid.shape[-1], ctx.m, Cp.shape[-1]
        gy = gy.contiguous()
        gx = x.new_empty(B, S, n) if ctx.needs_input_grad[0] else None
        gCp = torch.zeros_like(Cp) if ctx.needs_input_grad[2] else None
        if gx is not None or gCp is not None:
            suf = _DTYPES[x.dtype]
            _run(getattr(_lib(), f"wsk_sum_bwd_{suf}"), B, ctx.k, _p(x), _p(grid), _p(Cp), _p(gy), _p(gx),
                 _p(gCp), S, n, m, nk, Mp)
        return gx, None, gCp, None, None


class _SharedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, J, V, Cp, k: int, nk: int, m: int):
        lib = _lib()
        S, n = J.shape
        B, Mp = Cp.shape[0], Cp.shape[-1]
        y = V.new_empty(B, S, m)
        _run(getattr(lib, f"wsk_shared_fwd_{_DTYPES[V.dtype]}"), B, k, _p(J), _p(V), _p(Cp), _p(y), S, n, m, nk, Mp)
        ctx.save_for_backward(J, V)
        ctx.k, ctx.nk, ctx.m, ctx.shape = k, nk, m, Cp.shape
        return y

    @staticmethod
    def backward(ctx, gy):
        J, V = ctx.saved_tensors
        S, n = J.shape
        gCp = V.new_zeros(ctx.shape)
        _run(getattr(_lib(), f"wsk_shared_bwd_{_DTYPES[V.dtype]}"), ctx.shape[0], ctx.k, _p(J), _p(V),
             _p(gy.contiguous()), _p(gCp), S, n, ctx.m, ctx.nk, ctx.shape[-1])
        return None, None, gCp, None, None, None


def padded_rows(coef: torch.Tensor, k: int) -> torch.Tensor:
    """``coef (B, n, m, nb)`` -> ``Cp (B, n, nb + 2k, Mp)`` (differentiable): ``(basis, output)``
    rows, zero-padded by ``k`` rows at both ends and to ``Mp`` outputs, a multiple of the
    kernels' 64-byte vectors."""
    lanes = 64 // coef.element_size()
    m = coef.shape[-2]
    return torch.nn.functional.pad(coef.transpose(-1, -2), (0, -m % lanes, k, k)).contiguous()


def native_spline_sum(x: torch.Tensor, grid: torch.Tensor, coef: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`y_{B,s,o} = \sum_i \sum_b \mathrm{coef}_{B,i,o,b} B_{i,b}(x_{B,s,i})` on uniform grids,
    differentiable in ``x`` and ``coef`` (check :func:`supports` first).

    Shapes: ``x (B, s, n)``, ``grid (B, n, K)``, ``coef (B, n, m, K-k-1)``; returns ``(B, s, m)``.
    """
    return _SplineSum.apply(x.contiguous(), grid.detach().contiguous(), padded_rows(coef, k), k, coef.shape[-2])


def native_shared_sum(first: torch.Tensor, values: torch.Tensor, coef: torch.Tensor, k: int) -> torch.Tensor:
    r"""The same sum for inputs and a grid shared by every model, from their precomputed local
    basis (:func:`~wskan_ext.kan.local_spline.local_basis` of ``x (s, n)`` on ``grid (n, K)``):
    :math:`y_{B,s,o} = \sum_{i,r} \mathrm{values}_{s,i,r}\,\mathrm{coef}_{B,i,o,\mathrm{first}_{s,i}+r}`,
    differentiable in ``coef`` only.

    Shapes: ``first (s, n)`` long, ``values (s, n, k+1)``, ``coef (B, n, m, nb)``; returns ``(B, s, m)``.
    """
    nk = coef.shape[-1] + k + 1
    J = (first + k).to(torch.int32).contiguous()
    return _SharedSum.apply(J, values.detach().contiguous(), padded_rows(coef, k), k, nk, coef.shape[-2])
