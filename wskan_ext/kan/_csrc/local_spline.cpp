// Local-support B-spline kernels on uniform grids (CPU), for wskan_ext.kan._native.
//
// Built on first use by wskan_ext/kan/_native.py (c++ -O3 -march=native, no PyTorch headers) and
// called through ctypes on contiguous tensors. The math and the interval rule are those of
// wskan_ext/kan/local_spline.py (its docstrings are the specification). Layouts:
//   x (B, S, n); grid (B, n, nk) uniform rows; y, gy (B, S, m); gx (B, S, n);
//   Cp, gCp (B, n, P, Mp): the coefficients as (basis, output) rows, zero-padded by k rows at both
//   ends (P = nk + k - 1; the k+1 active basis functions on interval j are padded rows j .. j+k) and
//   with the outputs zero-padded to Mp, a multiple of the vector width L (64 bytes); gCp is
//   accumulated into.
// Models [b0, b1) are processed, so that callers can split the model axis between threads.
// Samples are processed in blocks of SB: first the interval and the k+1 basis values (and
// derivatives) of every (sample, input) of the block, then the vector work on the active rows.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

typedef float vf32 __attribute__((vector_size(64)));
typedef double vf64 __attribute__((vector_size(64)));
template <typename T> struct VT;
template <> struct VT<float> { typedef vf32 v; static constexpr int L = 16; };
template <> struct VT<double> { typedef vf64 v; static constexpr int L = 8; };

template <typename T> inline typename VT<T>::v vload(const T* p) {
  typename VT<T>::v r; std::memcpy(&r, p, sizeof(r)); return r;
}
template <typename T> inline void vstore(T* p, typename VT<T>::v a) { std::memcpy(p, &a, sizeof(a)); }
template <typename T> inline typename VT<T>::v vzero() { typename VT<T>::v r = {}; return r; }

// Horizontal sums by halving (the halves are extracted with memcpy, which compilers turn into
// register extracts): log2(L) vector adds instead of L dependent scalar adds.
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef double f64x2 __attribute__((vector_size(16)));
template <typename H, typename W> inline H halves(const W& w) {
  H a, b;
  std::memcpy(&a, &w, sizeof(H));
  std::memcpy(&b, reinterpret_cast<const char*>(&w) + sizeof(H), sizeof(H));
  return a + b;
}
inline float hsum(vf32 w) {
  const f32x4 c = halves<f32x4>(halves<f32x8>(w));
  return (c[0] + c[2]) + (c[1] + c[3]);
}
inline double hsum(vf64 w) {
  const f64x2 c = halves<f64x2>(halves<f64x4>(w));
  return c[0] + c[1];
}

constexpr int64_t SB = 32;  // samples per block

// The k+1 cardinal B-spline pieces N^K_r(f) (v) and their f-derivatives N^{K-1}_{r-1} - N^{K-1}_r
// (dv): closed forms for K <= 3, the uniform Cox--de Boor recursion of local_spline.py above.
template <typename T, int K>
struct Cardinal {
  static inline void values(T f, T* v) {
    T N[K + 1];
    recursion(f, N, K);
    for (int r = 0; r <= K; ++r) v[r] = N[r];
  }
  static inline void slopes(T f, T* dv) {
    T N[K + 1];
    recursion(f, N, K - 1);
    dv[0] = -N[0];
    for (int r = 1; r < K; ++r) dv[r] = N[r - 1] - N[r];
    dv[K] = N[K - 1];
  }
  static inline void recursion(T f, T* N, int order) {
    N[0] = T(1);
    for (int d = 1; d <= order; ++d) {
      T M[K + 1];
      for (int r = 0; r <= d; ++r) {
        T a = r >= 1 ? (f + T(d - r)) * N[r - 1] : T(0);
        T b = r < d ? (T(r + 1) - f) * N[r] : T(0);
        M[r] = (a + b) / T(d);
      }
      for (int r = 0; r <= d; ++r) N[r] = M[r];
    }
  }
};
template <typename T>
struct Cardinal<T, 1> {
  static inline void values(T f, T* v) { v[0] = T(1) - f; v[1] = f; }
  static inline void slopes(T, T* dv) { dv[0] = T(-1); dv[1] = T(1); }
};
template <typename T>
struct Cardinal<T, 2> {
  static inline void values(T f, T* v) {
    const T g = T(1) - f;
    v[0] = T(0.5) * g * g; v[1] = T(0.5) + f * (T(1) - f); v[2] = T(0.5) * f * f;
  }
  static inline void slopes(T f, T* dv) { dv[0] = f - T(1); dv[1] = T(1) - T(2) * f; dv[2] = f; }
};
template <typename T>
struct Cardinal<T, 3> {
  static inline void values(T f, T* v) {
    const T g = T(1) - f, f2 = f * f, f3 = f2 * f;
    const T c = T(1) / T(6);
    v[0] = c * (g * g * g);
    v[1] = c * ((T(3) * f - T(6)) * f2 + T(4));
    v[2] = c * (((T(-3) * f + T(3)) * f + T(3)) * f + T(1));
    v[3] = c * f3;
  }
  static inline void slopes(T f, T* dv) {
    const T g = T(1) - f, f2 = f * f;
    dv[0] = T(-0.5) * g * g;
    dv[1] = T(1.5) * f2 - T(2) * f;
    dv[2] = T(0.5) + f - T(1.5) * f2;
    dv[3] = T(0.5) * f2;
  }
};

// Interval, basis values and (optionally) d/dx of every input of samples [s0, s0 + sb) of model b.
// J (sb, n) interval index (0 for a point outside the grid), V/D (sb, n, K+1) values / slopes,
// zero outside [t_0, t_last) (NaN stays NaN: NaN compares false, so it counts as inside).
template <typename T, int K>
inline void basis_block(const T* __restrict xb, const T* __restrict gb, int64_t n, int64_t nk, int64_t s0,
                        int64_t sb, int32_t* __restrict J, T* __restrict V, T* __restrict D) {
  const T top = T(nk - 2);
  for (int64_t i = 0; i < n; ++i) {
    const T* g = gb + i * nk;
    const T t0 = g[0], tl = g[nk - 1];
    const T scale = T(nk - 1) / (tl - t0);
    for (int64_t q = 0; q < sb; ++q) {
      const T x = xb[(s0 + q) * n + i];
      const T u = (x - t0) * scale;
      T jf = std::floor(u);
      jf = (jf == jf) ? std::min(std::max(jf, T(0)), top) : T(0);
      int32_t j = static_cast<int32_t>(jf);
      // the rounded floor can be one off either way: check against the stored knots
      const int32_t dn = (x < g[j]) & (j > 0);
      j -= dn; jf -= T(dn);
      const int32_t up = (x >= g[j + 1]) & (j < nk - 2);
      j += up; jf += T(up);
      const T f = u - jf;
      const bool in = !((x < t0) | (x >= tl));
      T* v = V + (q * n + i) * (K + 1);
      Cardinal<T, K>::values(f, v);
      for (int r = 0; r <= K; ++r) v[r] = in ? v[r] : T(0);  // a select: f may be huge or inf outside
      if (D) {
        T* dv = D + (q * n + i) * (K + 1);
        Cardinal<T, K>::slopes(f, dv);
        for (int r = 0; r <= K; ++r) dv[r] = in ? dv[r] * scale : T(0);
      }
      J[q * n + i] = in ? j : 0;
    }
  }
}

// y[s] = sum_i sum_r V[s,i,r] * Cp[i, J[s,i] + r]  for the samples of one block (vector rows).
template <typename T, int K>
inline void accumulate_block(const int32_t* J, const T* V, const T* cb, T* yb, int64_t sb, int64_t n,
                             int64_t m, int64_t P, int64_t Mp) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t nv = Mp / L;
  for (int64_t q = 0; q < sb; ++q) {
    T* ys = yb + q * m;
    for (int64_t c = 0; c < nv; ++c) {
      vec part[K + 1];  // one accumulator per active row: K+1 independent FMA chains
      for (int r = 0; r <= K; ++r) part[r] = vzero<T>();
      for (int64_t i = 0; i < n; ++i) {
        const T* row = cb + (i * P + J[q * n + i]) * Mp + c * L;
        const T* v = V + (q * n + i) * (K + 1);
        for (int r = 0; r <= K; ++r) part[r] += v[r] * vload<T>(row + r * Mp);
      }
      vec acc = part[0];
      for (int r = 1; r <= K; ++r) acc += part[r];
      const int64_t w = (m - c * L) < L ? (m - c * L) : L;
      if (w == L) vstore<T>(ys + c * L, acc);
      else { T tmp[L]; vstore<T>(tmp, acc); std::memcpy(ys + c * L, tmp, w * sizeof(T)); }
    }
  }
}

template <typename T, int K>
void sum_fwd(const T* x, const T* grid, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
             int64_t Mp, int64_t b0, int64_t b1) {
  const int64_t P = nk + K - 1;
  std::vector<int32_t> J(SB * n);
  std::vector<T> V(SB * n * (K + 1));
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t s0 = 0; s0 < S; s0 += SB) {
      const int64_t sb = S - s0 < SB ? S - s0 : SB;
      basis_block<T, K>(x + b * S * n, grid + b * n * nk, n, nk, s0, sb, J.data(), V.data(), nullptr);
      accumulate_block<T, K>(J.data(), V.data(), Cp + b * n * P * Mp, y + (b * S + s0) * m, sb, n, m, P, Mp);
    }
  }
}

// gy row of one sample as zero-padded vectors.
template <typename T>
inline void load_padded(const T* src, int64_t m, int64_t Mp, T* dst) {
  std::memcpy(dst, src, m * sizeof(T));
  for (int64_t o = m; o < Mp; ++o) dst[o] = T(0);
}

// Backward of one block: gx[s,i] = sum_r D[s,i,r] <Cp[i, J+r], gy[s]>; gCp[i, J+r] += V[s,i,r] gy[s].
template <typename T, int K>
inline void backward_block(const int32_t* J, const T* V, const T* D, const T* cb, const T* gyb, T* gxb, T* gcb,
                           int64_t sb, int64_t n, int64_t m, int64_t P, int64_t Mp, T* gpad) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t nv = Mp / L;
  for (int64_t q = 0; q < sb; ++q) {
    load_padded<T>(gyb + q * m, m, Mp, gpad);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = (i * P + J[q * n + i]) * Mp;
      if (gxb) {
        const T* d = D + (q * n + i) * (K + 1);
        vec w = vzero<T>();
        for (int64_t c = 0; c < nv; ++c) {
          const vec g = vload<T>(gpad + c * L);
          vec t = vzero<T>();
          for (int r = 0; r <= K; ++r) t += d[r] * vload<T>(cb + off + r * Mp + c * L);
          w += t * g;
        }
        gxb[q * n + i] = hsum(w);
      }
      if (gcb) {
        const T* v = V + (q * n + i) * (K + 1);
        for (int64_t c = 0; c < nv; ++c) {
          const vec g = vload<T>(gpad + c * L);
          for (int r = 0; r <= K; ++r) {
            T* p = gcb + off + r * Mp + c * L;
            vstore<T>(p, vload<T>(p) + v[r] * g);
          }
        }
      }
    }
  }
}

template <typename T, int K>
void sum_bwd(const T* x, const T* grid, const T* Cp, const T* gy, T* gx, T* gCp, int64_t S, int64_t n, int64_t m,
             int64_t nk, int64_t Mp, int64_t b0, int64_t b1) {
  const int64_t P = nk + K - 1;
  std::vector<int32_t> J(SB * n);
  std::vector<T> V(SB * n * (K + 1)), D(SB * n * (K + 1)), gpad(Mp);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t s0 = 0; s0 < S; s0 += SB) {
      const int64_t sb = S - s0 < SB ? S - s0 : SB;
      basis_block<T, K>(x + b * S * n, grid + b * n * nk, n, nk, s0, sb, J.data(), V.data(), gx ? D.data() : nullptr);
      backward_block<T, K>(J.data(), V.data(), D.data(), Cp + b * n * P * Mp, gy + (b * S + s0) * m,
                           gx ? gx + (b * S + s0) * n : nullptr, gCp ? gCp + b * n * P * Mp : nullptr, sb, n, m,
                           P, Mp, gpad.data());
    }
  }
}

// Inputs and grid shared by every model (a zoo's first layer): J (S, n) and V (S, n, K+1) are given.
template <typename T, int K>
void shared_fwd(const int32_t* J, const T* V, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
                int64_t Mp, int64_t b0, int64_t b1) {
  const int64_t P = nk + K - 1;
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t s0 = 0; s0 < S; s0 += SB) {
      const int64_t sb = S - s0 < SB ? S - s0 : SB;
      accumulate_block<T, K>(J + s0 * n, V + s0 * n * (K + 1), Cp + b * n * P * Mp, y + (b * S + s0) * m, sb, n,
                             m, P, Mp);
    }
}

template <typename T, int K>
void shared_bwd(const int32_t* J, const T* V, const T* gy, T* gCp, int64_t S, int64_t n, int64_t m, int64_t nk,
                int64_t Mp, int64_t b0, int64_t b1) {
  const int64_t P = nk + K - 1;
  std::vector<T> gpad(Mp);
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t s0 = 0; s0 < S; s0 += SB) {
      const int64_t sb = S - s0 < SB ? S - s0 : SB;
      backward_block<T, K>(J + s0 * n, V + s0 * n * (K + 1), nullptr, nullptr, gy + (b * S + s0) * m, nullptr,
                           gCp + b * n * P * Mp, sb, n, m, P, Mp, gpad.data());
    }
}

#define WSK_CASES(FN, ...)                      \
  switch (k) {                                  \
    case 1: FN<T, 1>(__VA_ARGS__); return 0;    \
    case 2: FN<T, 2>(__VA_ARGS__); return 0;    \
    case 3: FN<T, 3>(__VA_ARGS__); return 0;    \
    case 4: FN<T, 4>(__VA_ARGS__); return 0;    \
    case 5: FN<T, 5>(__VA_ARGS__); return 0;    \
    default: return -1;                         \
  }

template <typename T>
int check(int64_t m, int64_t Mp) {
  return (Mp % VT<T>::L != 0 || Mp < m) ? -2 : 0;
}

template <typename T>
int d_sum_fwd(int k, const T* x, const T* grid, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
              int64_t Mp, int64_t b0, int64_t b1) {
  if (check<T>(m, Mp)) return -2;
  WSK_CASES(sum_fwd, x, grid, Cp, y, S, n, m, nk, Mp, b0, b1)
}

template <typename T>
int d_sum_bwd(int k, const T* x, const T* grid, const T* Cp, const T* gy, T* gx, T* gCp, int64_t S, int64_t n,
              int64_t m, int64_t nk, int64_t Mp, int64_t b0, int64_t b1) {
  if (check<T>(m, Mp)) return -2;
  WSK_CASES(sum_bwd, x, grid, Cp, gy, gx, gCp, S, n, m, nk, Mp, b0, b1)
}

template <typename T>
int d_shared_fwd(int k, const int32_t* J, const T* V, const T* Cp, T* y, int64_t S, int64_t n, int64_t m,
                 int64_t nk, int64_t Mp, int64_t b0, int64_t b1) {
  if (check<T>(m, Mp)) return -2;
  WSK_CASES(shared_fwd, J, V, Cp, y, S, n, m, nk, Mp, b0, b1)
}

template <typename T>
int d_shared_bwd(int k, const int32_t* J, const T* V, const T* gy, T* gCp, int64_t S, int64_t n, int64_t m,
                 int64_t nk, int64_t Mp, int64_t b0, int64_t b1) {
  if (check<T>(m, Mp)) return -2;
  WSK_CASES(shared_bwd, J, V, gy, gCp, S, n, m, nk, Mp, b0, b1)
}

}  // namespace

#define WSK_EXPORT(T, SUF)                                                                                    \
  extern "C" int wsk_sum_fwd_##SUF(int k, const T* x, const T* grid, const T* Cp, T* y, int64_t S, int64_t n,  \
                                   int64_t m, int64_t nk, int64_t Mp, int64_t b0, int64_t b1) {               \
    return d_sum_fwd<T>(k, x, grid, Cp, y, S, n, m, nk, Mp, b0, b1);                                          \
  }                                                                                                           \
  extern "C" int wsk_sum_bwd_##SUF(int k, const T* x, const T* grid, const T* Cp, const T* gy, T* gx, T* gCp,   \
                                   int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t b0,       \
                                   int64_t b1) {                                                              \
    return d_sum_bwd<T>(k, x, grid, Cp, gy, gx, gCp, S, n, m, nk, Mp, b0, b1);                                \
  }                                                                                                           \
  extern "C" int wsk_shared_fwd_##SUF(int k, const int32_t* J, const T* V, const T* Cp, T* y, int64_t S,       \
                                      int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t b0, int64_t b1) { \
    return d_shared_fwd<T>(k, J, V, Cp, y, S, n, m, nk, Mp, b0, b1);                                          \
  }                                                                                                           \
  extern "C" int wsk_shared_bwd_##SUF(int k, const int32_t* J, const T* V, const T* gy, T* gCp, int64_t S,     \
                                      int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t b0, int64_t b1) { \
    return d_shared_bwd<T>(k, J, V, gy, gCp, S, n, m, nk, Mp, b0, b1);                                        \
  }

WSK_EXPORT(float, f32)
WSK_EXPORT(double, f64)
