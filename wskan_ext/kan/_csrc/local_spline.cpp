// Local-support B-spline kernels on uniform grids (CPU), for wskan_ext.kan._native.
//
// Built on first use by wskan_ext/kan/_native.py (c++ -O3 -march=native, no PyTorch headers) and
// called through ctypes on contiguous tensors. The math and the interval rule are those of
// wskan_ext/kan/local_spline.py (its docstrings are the specification). Layouts:
//   x (B, S, n); grid (B, n, nk) uniform rows; y, gy (B, S, m); gx (B, S, n);
//   Cp, gCp (B, n, P, Mp): the coefficients as (basis, output) rows, zero-padded by k rows at both
//   ends (P = nk + k - 1; the k+1 active basis functions on interval j are padded rows j .. j+k) and
//   with the outputs zero-padded to Mp, a multiple of the vector width L (64 bytes); gCp is
//   accumulated into. Optionally the layer's base term in the same pass: weights Wb, gWb
//   (B, n, Mp) and the base function's values xb (and slopes dxb) at x, or for SiLU sigmoid(x),
//   from which the kernels form x s and s (1 + x (1 - s)).
// The kernels process models [b0, b1); the entry points at the end split the model axis over threads.
// Samples are processed in blocks of SB: first the interval and the k+1 basis values (and
// derivatives) of every (sample, input) of the block, then the vector work on the active rows.
#include <cmath>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

typedef float vf32 __attribute__((vector_size(64)));
typedef double vf64 __attribute__((vector_size(64)));
template <typename T> struct VT;
typedef int32_t vi32 __attribute__((vector_size(64)));
typedef int64_t vi64 __attribute__((vector_size(64)));
// v: L lanes of T in 64 bytes; iv: L lanes of the same-width integer I (comparison masks, indices)
template <> struct VT<float> { typedef vf32 v; typedef vi32 iv; typedef int32_t I; static constexpr int L = 16; };
template <> struct VT<double> { typedef vf64 v; typedef vi64 iv; typedef int64_t I; static constexpr int L = 8; };

template <typename T> inline typename VT<T>::v vload(const T* p) {
  typename VT<T>::v r; std::memcpy(&r, p, sizeof(r)); return r;
}
template <typename T> inline void vstore(T* p, typename VT<T>::v a) { std::memcpy(p, &a, sizeof(a)); }
template <typename T> inline typename VT<T>::v vzero() { typename VT<T>::v r = {}; return r; }

// Horizontal sums: with AVX-512 the reduce intrinsics (register extracts and adds); otherwise by
// halving, the halves extracted with memcpy (measured with perf on the hidden layer's backward:
// GCC 12 compiled that through a stack slot, a 64-byte store read back as 32-byte loads, and the
// stalled reload was the hottest instruction of the backward).
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
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps((__m512)w);
#else
  const f32x4 c = halves<f32x4>(halves<f32x8>(w));
  return (c[0] + c[2]) + (c[1] + c[3]);
#endif
}
inline double hsum(vf64 w) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_pd((__m512d)w);
#else
  const f64x2 c = halves<f64x2>(halves<f64x4>(w));
  return c[0] + c[1];
#endif
}

constexpr int64_t SB = 32;  // samples per block
constexpr int64_t SBG = 64;  // samples per block of the grouped backward

// The k+1 cardinal B-spline pieces N^K_r(f) (v) and their f-derivatives N^{K-1}_{r-1} - N^{K-1}_r
// (dv), for a scalar or a vector f: closed forms for K <= 3, the uniform Cox--de Boor recursion of
// local_spline.py above.
template <typename T, int K>
struct Cardinal {
  template <typename V> static inline void values(V f, V* v) { recursion(f, v, K); }
  template <typename V> static inline void slopes(V f, V* dv) {
    V N[K + 1];
    recursion(f, N, K - 1);
    dv[0] = -N[0];
    for (int r = 1; r < K; ++r) dv[r] = N[r - 1] - N[r];
    dv[K] = N[K - 1];
  }
  template <typename V> static inline void recursion(V f, V* N, int order) {
    V one{};
    N[0] = one + T(1);
    for (int d = 1; d <= order; ++d) {
      V M[K + 1];
      for (int r = 0; r <= d; ++r) {
        V acc{};
        if (r >= 1) acc += (f + T(d - r)) * N[r - 1];
        if (r < d) acc += (T(r + 1) - f) * N[r];
        M[r] = acc / T(d);
      }
      for (int r = 0; r <= d; ++r) N[r] = M[r];
    }
  }
};
template <typename T>
struct Cardinal<T, 1> {
  template <typename V> static inline void values(V f, V* v) { v[0] = T(1) - f; v[1] = f; }
  template <typename V> static inline void slopes(V, V* dv) {
    V z{};  // constant slopes (finite even where f is NaN, as in local_spline.py)
    dv[0] = z - T(1);
    dv[1] = z + T(1);
  }
};
template <typename T>
struct Cardinal<T, 2> {
  template <typename V> static inline void values(V f, V* v) {
    const V g = T(1) - f;
    v[0] = T(0.5) * g * g; v[1] = T(0.5) + f * (T(1) - f); v[2] = T(0.5) * f * f;
  }
  template <typename V> static inline void slopes(V f, V* dv) { dv[0] = f - T(1); dv[1] = T(1) - T(2) * f; dv[2] = f; }
};
template <typename T>
struct Cardinal<T, 3> {
  template <typename V> static inline void values(V f, V* v) {
    const V g = T(1) - f, f2 = f * f, f3 = f2 * f;
    const T c = T(1) / T(6);
    v[0] = c * (g * g * g);
    v[1] = c * ((T(3) * f - T(6)) * f2 + T(4));
    v[2] = c * (((T(-3) * f + T(3)) * f + T(3)) * f + T(1));
    v[3] = c * f3;
  }
  template <typename V> static inline void slopes(V f, V* dv) {
    const V g = T(1) - f, f2 = f * f;
    dv[0] = T(-0.5) * g * g;
    dv[1] = T(1.5) * f2 - T(2) * f;
    dv[2] = T(0.5) + f - T(1.5) * f2;
    dv[3] = T(0.5) * f2;
  }
};

// The basis of one block of samples is kept in one of two layouts: PLANAR (computed here, per
// model: value (q, i, r) at (q * (K+1) + r) * n + i, so that vectors of inputs are stored whole)
// or interleaved (given by the caller for a shared first layer: (q * n + i) * (K+1) + r).
template <int K, bool PLANAR>
inline int64_t at(int64_t q, int64_t i, int r, int64_t n) {
  return PLANAR ? (q * (K + 1) + r) * n + i : (q * n + i) * (K + 1) + r;
}

// Per-model knot data of every input: t_0, t_last, (nk - 1) / (t_last - t_0) and the margin dl (in
// units of the spacing h) within which a computed position u = (x - t_0) / h may lie on the wrong
// side of a stored knot: twice the largest distance of a stored knot from t_0 + j h (the grid is
// uniform only to rounding) plus the rounding of u; 1 (always check) where that is not small.
// Padded to a whole number of vectors.
template <typename T>
struct Knots {
  std::vector<T> t0, tl, sc, dl;
  void load(const T* gb, int64_t n, int64_t nk) {
    const int64_t np = (n + VT<T>::L - 1) / VT<T>::L * VT<T>::L;
    t0.assign(np, T(0)); tl.assign(np, T(1)); sc.assign(np, T(1)); dl.assign(np, T(1));
    const double eps = std::numeric_limits<T>::epsilon();
    for (int64_t i = 0; i < n; ++i) {
      const T* g = gb + i * nk;
      t0[i] = g[0]; tl[i] = g[nk - 1]; sc[i] = T(nk - 1) / (g[nk - 1] - g[0]);
      const double h = (double(g[nk - 1]) - double(g[0])) / double(nk - 1);
      double dev = 0, mag = std::fabs(double(g[0])) > std::fabs(double(g[nk - 1])) ? std::fabs(double(g[0]))
                                                                                  : std::fabs(double(g[nk - 1]));
      for (int64_t j = 1; j < nk - 1; ++j) dev = std::fmax(dev, std::fabs(double(g[j]) - (double(g[0]) + j * h)) / h);
      const double d = 2 * dev + 16 * eps * (double(nk) + mag / h);
      dl[i] = (h > 0 && d < 0.125) ? T(d) : T(1);
    }
  }
};

// Whether any lane of a comparison mask is set.
template <typename IV> inline bool any_lane(IV m) {
#if defined(__AVX512F__)
  return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) != 0;
#else
  int64_t w[8];
  std::memcpy(w, &m, sizeof(w));
  return (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0;
#endif
}

// t[l] = g[l * nk + j[l]] for the L lanes (the knot j[l] of input l of a vector of inputs, knot rows
// g (L, nk)): one AVX-512 gather where the CPU has it (measured on the zoo's hidden layer: the
// lane-by-lane loads took about a third of a forward pass), else lane by lane.
inline vf32 gather_knots(const float* g, int64_t nk, vi32 j) {
#if defined(__AVX512F__)
  const vi32 row = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return (vf32)_mm512_i32gather_ps((__m512i)(row * int32_t(nk) + j), g, 4);
#else
  vf32 t;
  for (int l = 0; l < 16; ++l) t[l] = g[l * nk + j[l]];
  return t;
#endif
}
inline vf64 gather_knots(const double* g, int64_t nk, vi64 j) {
#if defined(__AVX512F__)
  const vi64 row = {0, 1, 2, 3, 4, 5, 6, 7};
  return (vf64)_mm512_i64gather_pd((__m512i)(row * nk + j), g, 8);
#else
  vf64 t;
  for (int l = 0; l < 8; ++l) t[l] = g[l * nk + j[l]];
  return t;
#endif
}

// Interval, basis values and (if D) d/dx of every input of samples [s0, s0 + sb) of one model, in
// the PLANAR layout: J (sb, n) interval index (0 for a point outside the grid), V/D values/slopes,
// zero outside [t_0, t_last) (NaN stays NaN: NaN compares false, so it counts as inside).
// Whole vectors of L inputs at a time, the remaining inputs one by one, with the same operations.
template <typename T, int K>
inline void basis_block(const T* __restrict xb, const T* __restrict gb, const Knots<T>& kn, int64_t n,
                        int64_t nk, int64_t s0, int64_t sb, typename VT<T>::I* __restrict J, T* __restrict V,
                        T* __restrict D) {
  typedef typename VT<T>::v vec;
  typedef typename VT<T>::iv ivec;
  typedef typename VT<T>::I I;
  constexpr int L = VT<T>::L;
  const T top = T(nk - 2);
  const int64_t nvec = n / L * L;
  for (int64_t q = 0; q < sb; ++q) {
    const T* xq = xb + (s0 + q) * n;
    for (int64_t i0 = 0; i0 < nvec; i0 += L) {
      const vec x = vload<T>(xq + i0), t0 = vload<T>(kn.t0.data() + i0), tl = vload<T>(kn.tl.data() + i0);
      const vec scale = vload<T>(kn.sc.data() + i0), zero = vzero<T>();
      const vec u = (x - t0) * scale;
      vec jf = u > zero ? u : zero;  // also NaN -> 0
      jf = jf < top ? jf : zero + top;
      ivec j = __builtin_convertvector(jf, ivec);  // truncation = floor for jf >= 0
      const ivec in = ~((x < t0) | (x >= tl));
      const vec f0 = u - __builtin_convertvector(j, vec), dl = vload<T>(kn.dl.data() + i0);
      // the stored knots t_j and t_{j+1} decide only where u lies within dl of a knot: rare
      if (any_lane(in & ((f0 < dl) | (f0 > T(1) - dl)))) {
        const vec tj = gather_knots(gb + i0 * nk, nk, j);
        j += (x < tj) & (j > 0);  // masks are -1: one interval down where x lies below t_j
        const vec tj1 = gather_knots(gb + i0 * nk + 1, nk, j);
        j -= (x >= tj1) & (j < I(nk - 2));  // one up where x reaches t_{j+1}
      }
      const vec f = u - __builtin_convertvector(j, vec);
      vec v[K + 1];
      Cardinal<T, K>::values(f, v);
      for (int r = 0; r <= K; ++r) vstore<T>(V + at<K, true>(q, i0, r, n), in ? v[r] : zero);
      if (D) {
        Cardinal<T, K>::slopes(f, v);
        for (int r = 0; r <= K; ++r) vstore<T>(D + at<K, true>(q, i0, r, n), in ? v[r] * scale : zero);
      }
      const ivec jo = in ? j : ivec{} ;
      std::memcpy(J + q * n + i0, &jo, sizeof(jo));
    }
    for (int64_t i = nvec; i < n; ++i) {
      const T* g = gb + i * nk;
      const T x = xq[i], t0 = kn.t0[i], tl = kn.tl[i], scale = kn.sc[i];
      const T u = (x - t0) * scale;
      T jf = u > T(0) ? u : T(0);
      jf = jf < top ? jf : top;
      I j = static_cast<I>(jf);
      if (x < g[j] && j > 0) --j;
      if (x >= g[j + 1] && j < nk - 2) ++j;
      const T f = u - T(j);
      const bool in = !((x < t0) || (x >= tl));
      T v[K + 1];
      Cardinal<T, K>::values(f, v);
      for (int r = 0; r <= K; ++r) V[at<K, true>(q, i, r, n)] = in ? v[r] : T(0);
      if (D) {
        Cardinal<T, K>::slopes(f, v);
        for (int r = 0; r <= K; ++r) D[at<K, true>(q, i, r, n)] = in ? v[r] * scale : T(0);
      }
      J[q * n + i] = in ? j : 0;
    }
  }
}

// y[s] = sum_i sum_r V[s,i,r] * Cp[i, J[s,i] + r]  for the samples of one block (vector rows);
// with BASE also + sum_i bq[s,i] * wb[i] (the base function's term: its values bq (sb, n) on the
// block's samples, its weights wb (n, Mp)).
template <typename T, int K, bool PLANAR, bool BASE, typename JT>
inline void accumulate_block(const JT* J, const T* V, const T* cb, T* yb, int64_t sb, int64_t n, int64_t m,
                             int64_t P, int64_t Mp, const T* bq, const T* wb) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t nv = Mp / L;
  for (int64_t q = 0; q < sb; ++q) {
    T* ys = yb + q * m;
    for (int64_t c = 0; c < nv; ++c) {
      // two accumulators per active row (even and odd inputs): 2(K+1) independent FMA chains,
      // so the FMA latency is hidden
      vec part[2][K + 1], pb[2] = {vzero<T>(), vzero<T>()};
      for (int r = 0; r <= K; ++r) part[0][r] = part[1][r] = vzero<T>();
      int64_t i = 0;
      for (; i + 1 < n; i += 2) {
        const T* row0 = cb + (i * P + J[q * n + i]) * Mp + c * L;
        const T* row1 = cb + ((i + 1) * P + J[q * n + i + 1]) * Mp + c * L;
        for (int r = 0; r <= K; ++r) {
          part[0][r] += V[at<K, PLANAR>(q, i, r, n)] * vload<T>(row0 + r * Mp);
          part[1][r] += V[at<K, PLANAR>(q, i + 1, r, n)] * vload<T>(row1 + r * Mp);
        }
        if (BASE) {
          pb[0] += bq[q * n + i] * vload<T>(wb + i * Mp + c * L);
          pb[1] += bq[q * n + i + 1] * vload<T>(wb + (i + 1) * Mp + c * L);
        }
      }
      if (i < n) {
        const T* row = cb + (i * P + J[q * n + i]) * Mp + c * L;
        for (int r = 0; r <= K; ++r) part[0][r] += V[at<K, PLANAR>(q, i, r, n)] * vload<T>(row + r * Mp);
        if (BASE) pb[0] += bq[q * n + i] * vload<T>(wb + i * Mp + c * L);
      }
      vec acc = part[0][0] + part[1][0];
      for (int r = 1; r <= K; ++r) acc += part[0][r] + part[1][r];
      if (BASE) acc += pb[0] + pb[1];
      const int64_t w = (m - c * L) < L ? (m - c * L) : L;
      if (w == L) vstore<T>(ys + c * L, acc);
      else { T tmp[L]; vstore<T>(tmp, acc); std::memcpy(ys + c * L, tmp, w * sizeof(T)); }
    }
  }
}

// One output (an INR's last layer): vectors over the inputs instead of the outputs, the k+1
// coefficients of each lane's interval read per lane.
template <typename T, int K, bool BASE>
inline void accumulate_block_m1(const typename VT<T>::I* J, const T* V, const T* cb, T* yb, int64_t sb, int64_t n,
                                int64_t P, int64_t Mp, const T* bq, const T* wb) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t nvec = n / L * L;
  for (int64_t q = 0; q < sb; ++q) {
    const typename VT<T>::I* jq = J + q * n;
    vec acc[K + 2];
    for (int r = 0; r <= K + 1; ++r) acc[r] = vzero<T>();
    for (int64_t i0 = 0; i0 < nvec; i0 += L) {
      for (int r = 0; r <= K; ++r) {
        vec c;
        for (int l = 0; l < L; ++l) c[l] = cb[((i0 + l) * P + jq[i0 + l] + r) * Mp];
        acc[r] += vload<T>(V + at<K, true>(q, i0, r, n)) * c;
      }
      if (BASE) {
        vec w;
        for (int l = 0; l < L; ++l) w[l] = wb[(i0 + l) * Mp];
        acc[K + 1] += vload<T>(bq + q * n + i0) * w;
      }
    }
    for (int r = 1; r <= K + 1; ++r) acc[0] += acc[r];
    T out = hsum(acc[0]);
    for (int64_t i = nvec; i < n; ++i) {
      for (int r = 0; r <= K; ++r) out += V[at<K, true>(q, i, r, n)] * cb[(i * P + jq[i] + r) * Mp];
      if (BASE) out += bq[q * n + i] * wb[i * Mp];
    }
    yb[q] = out;
  }
}

template <typename T, int K, bool BASE>
inline void backward_block_m1(const typename VT<T>::I* J, const T* V, const T* D, const T* cb, const T* gyb, T* gxb,
                              T* gcb, int64_t sb, int64_t n, int64_t P, int64_t Mp, const T* bq, const T* dbq,
                              const T* wb, T* gwb) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t nvec = n / L * L;
  for (int64_t q = 0; q < sb; ++q) {
    const typename VT<T>::I* jq = J + q * n;
    const T g = gyb[q];
    if (gxb) {
      for (int64_t i0 = 0; i0 < nvec; i0 += L) {
        vec t = vzero<T>();
        for (int r = 0; r <= K; ++r) {
          vec c;
          for (int l = 0; l < L; ++l) c[l] = cb[((i0 + l) * P + jq[i0 + l] + r) * Mp];
          t += vload<T>(D + at<K, true>(q, i0, r, n)) * c;
        }
        if (BASE) {
          vec w;
          for (int l = 0; l < L; ++l) w[l] = wb[(i0 + l) * Mp];
          t += vload<T>(dbq + q * n + i0) * w;
        }
        vstore<T>(gxb + q * n + i0, t * g);
      }
      for (int64_t i = nvec; i < n; ++i) {
        T t = T(0);
        for (int r = 0; r <= K; ++r) t += D[at<K, true>(q, i, r, n)] * cb[(i * P + jq[i] + r) * Mp];
        if (BASE) t += dbq[q * n + i] * wb[i * Mp];
        gxb[q * n + i] = t * g;
      }
    }
    if (gcb)
      for (int64_t i = 0; i < n; ++i) {
        for (int r = 0; r <= K; ++r) gcb[(i * P + jq[i] + r) * Mp] += V[at<K, true>(q, i, r, n)] * g;
        if (BASE) gwb[i * Mp] += bq[q * n + i] * g;
      }
  }
}

// SiLU from its sigmoid: with silu set, the base pointer holds sigmoid(x) (B, S, n) and the base
// values x s and slopes s (1 + x (1 - s)) of one block are formed here, in L1-sized buffers.
template <typename T>
inline void silu_block(const T* __restrict xq, const T* __restrict sq, int64_t len, T* __restrict v,
                       T* __restrict dv) {
  for (int64_t e = 0; e < len; ++e) {
    const T x = xq[e], sg = sq[e];
    v[e] = x * sg;
    if (dv) dv[e] = sg * (T(1) + x * (T(1) - sg));
  }
}

template <typename T, int K, bool BASE>
void sum_fwd_t(const T* x, const T* grid, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
               int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* Wb, int silu, const T* ns, const T* nb,
               int tr) {
  const int64_t P = nk + K - 1;
  const bool tbuf = tr && m > 1;  // (B, m, S) output: each block through a buffer
  std::vector<typename VT<T>::I> J(SB * n);
  std::vector<T> V(SB * n * (K + 1)), sv(silu ? SB * n : 0), yt(tbuf ? SB * m : 0);
  Knots<T> kn;
  for (int64_t b = b0; b < b1; ++b) {
    kn.load(grid + b * n * nk, n, nk);
    for (int64_t s0 = 0; s0 < S; s0 += SB) {
      const int64_t sb = S - s0 < SB ? S - s0 : SB;
      basis_block<T, K>(x + b * S * n, grid + b * n * nk, kn, n, nk, s0, sb, J.data(), V.data(), nullptr);
      const T* bq = BASE ? xb + (b * S + s0) * n : nullptr;
      const T* wb = BASE ? Wb + b * n * Mp : nullptr;
      if (BASE && silu) {
        silu_block<T>(x + (b * S + s0) * n, bq, sb * n, sv.data(), nullptr);
        bq = sv.data();
      }
      T* yq = tbuf ? yt.data() : y + (b * S + s0) * m;  // the block's outputs, (sb, m)
      if (m == 1)
        accumulate_block_m1<T, K, BASE>(J.data(), V.data(), Cp + b * n * P * Mp, yq, sb, n, P, Mp, bq, wb);
      else
        accumulate_block<T, K, true, BASE>(J.data(), V.data(), Cp + b * n * P * Mp, yq, sb, n, m, P, Mp, bq, wb);
      if (ns) {  // the node affine map on the block's outputs, while they are in L1
        const T *sc = ns + b * Mp, *sh = nb + b * Mp;
        for (int64_t q = 0; q < sb; ++q)
          for (int64_t o = 0; o < m; ++o) yq[q * m + o] = yq[q * m + o] * sc[o] + sh[o];
      }
      if (tbuf)
        for (int64_t o = 0; o < m; ++o)
          for (int64_t q = 0; q < sb; ++q) y[(b * m + o) * S + s0 + q] = yq[q * m + o];
    }
  }
}

// xb (B, S, n): the base function's values at x (silu: sigmoid(x), see silu_block), Wb (B, n, Mp)
// its weights (both null: no base term); ns, nb (B, Mp): the node affine map (both null: none);
// tr: y in the (B, m, S) layout instead of (B, S, m) (a loss over classes reads it so).
template <typename T, int K>
void sum_fwd(const T* x, const T* grid, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
             int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* Wb, int silu, const T* ns, const T* nb,
             int tr) {
  if (xb) sum_fwd_t<T, K, true>(x, grid, Cp, y, S, n, m, nk, Mp, b0, b1, xb, Wb, silu, ns, nb, tr);
  else sum_fwd_t<T, K, false>(x, grid, Cp, y, S, n, m, nk, Mp, b0, b1, xb, Wb, 0, ns, nb, tr);
}

// gy row of one sample as zero-padded vectors.
template <typename T>
inline void load_padded(const T* src, int64_t m, int64_t Mp, T* dst) {
  std::memcpy(dst, src, m * sizeof(T));
  for (int64_t o = m; o < Mp; ++o) dst[o] = T(0);
}

// Backward of one block: gx[s,i] = sum_r D[s,i,r] <Cp[i, J+r], gy[s]>; gCp[i, J+r] += V[s,i,r] gy[s];
// with BASE also gx[s,i] += dbq[s,i] <wb[i], gy[s]> and gwb[i] += bq[s,i] gy[s] (dbq: the base
// function's derivative on the block's samples).
template <typename T, int K, bool PLANAR, bool BASE, typename JT>
inline void backward_block(const JT* J, const T* V, const T* D, const T* cb, const T* gyb, T* gxb, T* gcb,
                           int64_t sb, int64_t n, int64_t m, int64_t P, int64_t Mp, T* gpad, const T* bq,
                           const T* dbq, const T* wb, T* gwb) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t nv = Mp / L;
  for (int64_t q = 0; q < sb; ++q) {
    load_padded<T>(gyb + q * m, m, Mp, gpad);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = (i * P + J[q * n + i]) * Mp;
      if (gxb) {
        vec w = vzero<T>();
        for (int64_t c = 0; c < nv; ++c) {
          const vec g = vload<T>(gpad + c * L);
          vec t = vzero<T>();
          for (int r = 0; r <= K; ++r) t += D[at<K, PLANAR>(q, i, r, n)] * vload<T>(cb + off + r * Mp + c * L);
          if (BASE) t += dbq[q * n + i] * vload<T>(wb + i * Mp + c * L);
          w += t * g;
        }
        gxb[q * n + i] = hsum(w);
      }
      if (gcb) {
        for (int64_t c = 0; c < nv; ++c) {
          const vec g = vload<T>(gpad + c * L);
          for (int r = 0; r <= K; ++r) {
            T* p = gcb + off + r * Mp + c * L;
            vstore<T>(p, vload<T>(p) + V[at<K, PLANAR>(q, i, r, n)] * g);
          }
          if (BASE) {
            T* p = gwb + i * Mp + c * L;
            vstore<T>(p, vload<T>(p) + bq[q * n + i] * g);
          }
        }
      }
    }
  }
}

// The same backward for outputs that fit one vector (Mp == L: the zoos' hidden layers), with the
// samples of every input grouped by interval first (a counting sort of the block), so that each
// group keeps its k+1 coefficient rows (and the base weights) in registers for the input
// gradient, and sums its k+1 gradient rows (and the base weights' gradient, over the whole
// block) in registers, storing each once per group instead of once per sample: measured on the
// zoo's hidden layer, the per-sample read-modify-writes and row loads bound the plain backward.
// gyp: the block's gy rows, zero-padded to Mp (sb, Mp); ord, cnt: scratch of sb P and P entries.
template <typename T, int K, bool BASE, typename JT>
inline void backward_block_grouped(const JT* J, const T* V, const T* D, const T* cb, const T* gyp, T* gxb, T* gcb,
                                   int64_t sb, int64_t n, int64_t P, const T* bq, const T* dbq, const T* wb, T* gwb,
                                   int32_t* ord, int32_t* cnt) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < P; ++j) cnt[j] = 0;
    for (int64_t q = 0; q < sb; ++q) {  // one pass: group j's samples at ord[j * sb : j * sb + cnt[j]]
      const int64_t j = J[q * n + i];
      ord[j * sb + cnt[j]++] = int32_t(q);
    }
    vec accb = vzero<T>();
    const vec wv = BASE ? vload<T>(wb + i * L) : vzero<T>();
    for (int64_t j = 0; j < P; ++j) {
      if (!cnt[j]) continue;
      int64_t t = j * sb;
      const int64_t end = t + cnt[j];
      const T* rows = cb + (i * P + j) * L;
      vec crow[K + 1], acc[K + 1];
      for (int r = 0; r <= K; ++r) {
        crow[r] = vload<T>(rows + r * L);
        acc[r] = vzero<T>();
      }
      for (; t < end; ++t) {
        const int64_t q = ord[t];
        const vec g = vload<T>(gyp + q * L);
        if (gxb) {
          vec u = vzero<T>();
          for (int r = 0; r <= K; ++r) u += D[at<K, true>(q, i, r, n)] * crow[r];
          if (BASE) u += dbq[q * n + i] * wv;
          gxb[q * n + i] = hsum(u * g);
        }
        for (int r = 0; r <= K; ++r) acc[r] += V[at<K, true>(q, i, r, n)] * g;
        if (BASE) accb += bq[q * n + i] * g;
      }
      if (gcb) {
        T* grow = gcb + (i * P + j) * L;
        for (int r = 0; r <= K; ++r) vstore<T>(grow + r * L, vload<T>(grow + r * L) + acc[r]);
      }
    }
    if (BASE) vstore<T>(gwb + i * L, vload<T>(gwb + i * L) + accb);
  }
}

template <typename T, int K, bool BASE>
void sum_bwd_t(const T* x, const T* grid, const T* Cp, const T* gy, T* gx, T* gCp, int64_t S, int64_t n, int64_t m,
               int64_t nk, int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* dxb, const T* Wb, T* gWb,
               int silu, const T* ns, int64_t gsb, int64_t gss, int64_t gso) {
  const int64_t P = nk + K - 1;
  // outputs in one vector: the grouped backward, on larger blocks (more samples per group)
  const bool grouped = m > 1 && Mp == VT<T>::L && gCp;
  const int64_t SBk = grouped ? SBG : SB;
  std::vector<typename VT<T>::I> J(SBk * n);
  std::vector<T> V(SBk * n * (K + 1)), D(SBk * n * (K + 1)), gpad(grouped ? SBk * Mp : Mp);
  std::vector<T> sv(silu ? SBk * n : 0), sd(silu ? SBk * n : 0);
  std::vector<int32_t> ord(grouped ? SBk * P : 0), cnt(grouped ? P : 0);
  std::vector<T> gblk(SBk * m);  // the block's gy (any strides), times the node scale
  Knots<T> kn;
  for (int64_t b = b0; b < b1; ++b) {
    kn.load(grid + b * n * nk, n, nk);
    for (int64_t s0 = 0; s0 < S; s0 += SBk) {
      const int64_t sb = S - s0 < SBk ? S - s0 : SBk;
      basis_block<T, K>(x + b * S * n, grid + b * n * nk, kn, n, nk, s0, sb, J.data(), V.data(),
                        gx ? D.data() : nullptr);
      const T* bq = BASE ? xb + (b * S + s0) * n : nullptr;
      const T* dbq = BASE && !silu ? dxb + (b * S + s0) * n : nullptr;
      if (BASE && silu) {
        silu_block<T>(x + (b * S + s0) * n, bq, sb * n, sv.data(), sd.data());
        bq = sv.data();
        dbq = sd.data();
      }
      const T* wb = BASE ? Wb + b * n * Mp : nullptr;
      T* gwb = BASE ? gWb + b * n * Mp : nullptr;
      // the block's gy as (sb, m) rows; with the node map, the gradient of the sum is gy times
      // the node scale
      const T* gsrc = gy + b * gsb + s0 * gss;
      for (int64_t q = 0; q < sb; ++q)
        for (int64_t o = 0; o < m; ++o) gblk[q * m + o] = gsrc[q * gss + o * gso] * (ns ? ns[b * Mp + o] : T(1));
      const T* gyq = gblk.data();
      if (grouped) {
        for (int64_t q = 0; q < sb; ++q) load_padded<T>(gyq + q * m, m, Mp, gpad.data() + q * Mp);
        backward_block_grouped<T, K, BASE>(J.data(), V.data(), D.data(), Cp + b * n * P * Mp, gpad.data(),
                                           gx ? gx + (b * S + s0) * n : nullptr, gCp + b * n * P * Mp, sb, n, P, bq,
                                           dbq, wb, gwb, ord.data(), cnt.data());
      } else if (m == 1)
        backward_block_m1<T, K, BASE>(J.data(), V.data(), D.data(), Cp + b * n * P * Mp, gyq,
                                      gx ? gx + (b * S + s0) * n : nullptr, gCp ? gCp + b * n * P * Mp : nullptr, sb,
                                      n, P, Mp, bq, dbq, wb, gwb);
      else
        backward_block<T, K, true, BASE>(J.data(), V.data(), D.data(), Cp + b * n * P * Mp, gyq,
                                         gx ? gx + (b * S + s0) * n : nullptr, gCp ? gCp + b * n * P * Mp : nullptr,
                                         sb, n, m, P, Mp, gpad.data(), bq, dbq, wb, gwb);
    }
  }
}

// With the base term (xb, dxb (B, S, n) values and derivatives, Wb (B, n, Mp) weights, gWb their
// gradient, accumulated into); gx and gCp and gWb are computed together: all or none null.
template <typename T, int K>
void sum_bwd(const T* x, const T* grid, const T* Cp, const T* gy, T* gx, T* gCp, int64_t S, int64_t n, int64_t m,
             int64_t nk, int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* dxb, const T* Wb, T* gWb,
             int silu, const T* ns, int64_t gsb, int64_t gss, int64_t gso) {
  if (xb)
    sum_bwd_t<T, K, true>(x, grid, Cp, gy, gx, gCp, S, n, m, nk, Mp, b0, b1, xb, dxb, Wb, gWb, silu, ns, gsb, gss, gso);
  else
    sum_bwd_t<T, K, false>(x, grid, Cp, gy, gx, gCp, S, n, m, nk, Mp, b0, b1, xb, dxb, Wb, gWb, 0, ns, gsb, gss, gso);
}

// Inputs and grid shared by every model (a zoo's first layer): J (S, n) and V (S, n, K+1) are given.
// (Measured and not kept: two or four models at a time sharing the loads of J and V, and blocks of 16
// inputs so that their rows stay in L1: both slower on the zoo shapes.)
// With the base term: its values xb (S, n) (shared) and weights Wb (B, n, Mp) (both null: none).
template <typename T, int K>
void shared_fwd(const int32_t* J, const T* V, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
                int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* Wb) {
  const int64_t P = nk + K - 1;
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t s0 = 0; s0 < S; s0 += SB) {
      const int64_t sb = S - s0 < SB ? S - s0 : SB;
      if (xb)
        accumulate_block<T, K, false, true>(J + s0 * n, V + s0 * n * (K + 1), Cp + b * n * P * Mp,
                                            y + (b * S + s0) * m, sb, n, m, P, Mp, xb + s0 * n, Wb + b * n * Mp);
      else
        accumulate_block<T, K, false, false>(J + s0 * n, V + s0 * n * (K + 1), Cp + b * n * P * Mp,
                                             y + (b * S + s0) * m, sb, n, m, P, Mp, nullptr, nullptr);
    }
}

// Its backward: the samples of every input are given grouped by interval (order (n, S), the
// values in that order Vs (n, S, K+1), group g = [off[i, g], off[i, g+1]), nk - 1 groups per
// input), so each active row's gradient is summed in registers over its group and stored once.
// gy is padded to Mp outputs: gyp (B, S, Mp).
// With the base term, gWb (B, n, Mp) += sum_s xb[s, i] gy[s] (two chains over the samples).
template <typename T, int K>
void shared_bwd(const int32_t* order, const T* Vs, const int64_t* off, const T* gyp, T* gCp, int64_t S, int64_t n,
                int64_t nk, int64_t Mp, int64_t b0, int64_t b1, const T* xb, T* gWb) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t P = nk + K - 1, nv = Mp / L;
  for (int64_t b = b0; b < b1; ++b) {
    const T* gb = gyp + b * S * Mp;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t* oi = order + i * S;
      const T* vi = Vs + i * S * (K + 1);
      const int64_t* oo = off + i * nk;
      for (int64_t j = 0; j < nk - 1; ++j) {
        if (oo[j] == oo[j + 1]) continue;
        T* grow = gCp + ((b * n + i) * P + j) * Mp;
        for (int64_t c = 0; c < nv; ++c) {
          vec acc[2][K + 1];  // two sets of chains (even and odd samples), as in accumulate_block
          for (int r = 0; r <= K; ++r) acc[0][r] = acc[1][r] = vzero<T>();
          int64_t t = oo[j];
          for (; t + 1 < oo[j + 1]; t += 2) {
            const vec g0 = vload<T>(gb + int64_t(oi[t]) * Mp + c * L);
            const vec g1 = vload<T>(gb + int64_t(oi[t + 1]) * Mp + c * L);
            for (int r = 0; r <= K; ++r) {
              acc[0][r] += vi[t * (K + 1) + r] * g0;
              acc[1][r] += vi[(t + 1) * (K + 1) + r] * g1;
            }
          }
          if (t < oo[j + 1]) {
            const vec g = vload<T>(gb + int64_t(oi[t]) * Mp + c * L);
            for (int r = 0; r <= K; ++r) acc[0][r] += vi[t * (K + 1) + r] * g;
          }
          for (int r = 0; r <= K; ++r) {
            T* p = grow + r * Mp + c * L;
            vstore<T>(p, vload<T>(p) + (acc[0][r] + acc[1][r]));
          }
        }
      }
    }
    if (xb) {  // the base weights' gradient: IB inputs at a time share each loaded gy row
      constexpr int64_t IB = 8;
      for (int64_t c = 0; c < nv; ++c)
        for (int64_t i0 = 0; i0 < n; i0 += IB) {
          const int64_t ib = n - i0 < IB ? n - i0 : IB;
          vec acc[IB];
          for (int64_t u = 0; u < IB; ++u) acc[u] = vzero<T>();
          if (ib == IB) {
            for (int64_t q = 0; q < S; ++q) {
              const vec g = vload<T>(gb + q * Mp + c * L);
              for (int64_t u = 0; u < IB; ++u) acc[u] += xb[q * n + i0 + u] * g;
            }
          } else {
            for (int64_t q = 0; q < S; ++q) {
              const vec g = vload<T>(gb + q * Mp + c * L);
              for (int64_t u = 0; u < ib; ++u) acc[u] += xb[q * n + i0 + u] * g;
            }
          }
          for (int64_t u = 0; u < ib; ++u) {
            T* p = gWb + (b * n + i0 + u) * Mp + c * L;
            vstore<T>(p, vload<T>(p) + acc[u]);
          }
        }
    }
  }
}

// Inputs shared by every model with few distinct values per input (a zoo's first layer on
// quantised data: pixel levels, the coordinates of an INR's image grid). The distinct (input,
// value) pairs are the rows r = 0 .. R-1: row r has input inp[r], interval Jd[r], active values
// Vd (R, K+1) and base value bd[r]; each (sample, input) has one row. Per model the table
// Tb[r] = sum_p Vd[r, p] Cp[inp[r], Jd[r] + p] + bd[r] Wb[inp[r]] (R, Mp) is built in a
// thread-local buffer, then y[s] = sum over the sample's rows of Tb: (K+2) R vector FMAs and at
// most S n vector adds per model instead of (K+2) S n vector FMAs (table_fwd below: the samples
// sparse around a reference row per input). The coefficients come in their own layout C (B, n, m,
// nb), with an optional per-edge scale sc (B, n, m), and are padded (and scaled) per model in a
// buffer (no padded copy of the whole batch). With the node affine map ns, nb (B, Mp) (both or
// neither) the output is ns y[s] + nb, by scaling the table and starting the sum at nb (one pass
// over the output instead of three).

// One model's coefficients coef (n, m, nb), times the per-edge scale sc (n, m) if given, as padded
// rows (n, P, Mp) (the layout of Cp above) in a caller's buffer; and the adjoint: from the
// gradient of those rows gCp, gcoef = sc gCp (unpadded) and gsc = sum_p coef gCp (written).
template <typename T, int K>
inline void pad_rows(const T* coef, const T* sc, T* Cp, int64_t n, int64_t m, int64_t nb, int64_t Mp) {
  const int64_t P = nb + 2 * K;
  std::memset(Cp, 0, sizeof(T) * n * P * Mp);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < m; ++o) {
      const T f = sc ? sc[i * m + o] : T(1);
      for (int64_t p = 0; p < nb; ++p) Cp[(i * P + p + K) * Mp + o] = f * coef[(i * m + o) * nb + p];
    }
}
template <typename T, int K>
inline void unpad_rows(const T* gCp, const T* coef, const T* sc, T* gcoef, T* gsc, int64_t n, int64_t m, int64_t nb,
                       int64_t Mp) {
  const int64_t P = nb + 2 * K;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < m; ++o) {
      const T f = sc ? sc[i * m + o] : T(1);
      T acc = T(0);
      for (int64_t p = 0; p < nb; ++p) {
        const T g = gCp[(i * P + p + K) * Mp + o];
        gcoef[(i * m + o) * nb + p] = f * g;
        acc += coef[(i * m + o) * nb + p] * g;
      }
      if (gsc) gsc[i * m + o] = acc;
    }
}

// init + rows[ids[0]] + ... + rows[ids[cnt-1]] (vectors at column offset off of rows of Mp), in
// four add chains so that the loads overlap.
template <typename T>
inline typename VT<T>::v gather_sum(const T* rows, const int32_t* ids, int64_t cnt, int64_t Mp, int64_t off,
                                    typename VT<T>::v init) {
  typedef typename VT<T>::v vec;
  vec a0 = init, a1 = vzero<T>(), a2 = vzero<T>(), a3 = vzero<T>();
  int64_t t = 0;
  for (; t + 3 < cnt; t += 4) {
    a0 += vload<T>(rows + int64_t(ids[t]) * Mp + off);
    a1 += vload<T>(rows + int64_t(ids[t + 1]) * Mp + off);
    a2 += vload<T>(rows + int64_t(ids[t + 2]) * Mp + off);
    a3 += vload<T>(rows + int64_t(ids[t + 3]) * Mp + off);
  }
  for (; t < cnt; ++t) a0 += vload<T>(rows + int64_t(ids[t]) * Mp + off);
  return (a0 + a1) + (a2 + a3);
}

template <typename T, int K>
inline void table_build(const int32_t* Jd, const T* Vd, const int32_t* inp, const T* bd, const T* cb, const T* wb,
                        const T* nsb, T* Tb, int64_t nk, int64_t Mp, int64_t R) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t P = nk + K - 1, nv = Mp / L;
  for (int64_t r = 0; r < R; ++r) {
    const T* row = cb + (int64_t(inp[r]) * P + Jd[r]) * Mp;
    for (int64_t c = 0; c < nv; ++c) {
      vec a = vzero<T>();
      for (int p = 0; p <= K; ++p) a += Vd[r * (K + 1) + p] * vload<T>(row + p * Mp + c * L);
      if (bd) a += bd[r] * vload<T>(wb + int64_t(inp[r]) * Mp + c * L);
      if (nsb) a *= vload<T>(nsb + c * L);
      vstore<T>(Tb + r * Mp + c * L, a);
    }
  }
}

// The samples are given sparse: per input its most common value's row ref[i] (the reference), and
// per sample only its other rows, sidx[sptr[s] : sptr[s+1]] (on image data most pairs are the
// background level: 52 % of the digits pairs, 80 % of MNIST's). Since
// y[s] = sum_i Tb[ref[i]] + sum over the sample's other rows r of (Tb[r] - Tb[ref[inp[r]]]),
// the reference rows are summed once per model and every other row holds its difference.
template <typename T, int K>
void table_fwd(const int64_t* sptr, const int32_t* sidx, const int32_t* ref, const int32_t* Jd, const T* Vd,
               const int32_t* inp, const T* bd, const T* C, const T* sc, const T* Wb, const T* ns, const T* nb, T* y,
               int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t R, int64_t b0, int64_t b1) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t P = nk + K - 1, nv = Mp / L, nbf = nk - K - 1;
  std::vector<T> Tb(R * Mp), Cp(n * P * Mp), base(Mp);
  for (int64_t b = b0; b < b1; ++b) {
    pad_rows<T, K>(C + b * n * m * nbf, sc ? sc + b * n * m : nullptr, Cp.data(), n, m, nbf, Mp);
    table_build<T, K>(Jd, Vd, inp, bd, Cp.data(), bd ? Wb + b * n * Mp : nullptr, ns ? ns + b * Mp : nullptr,
                      Tb.data(), nk, Mp, R);
    T* tb = Tb.data();
    for (int64_t c = 0; c < nv; ++c) {
      vec a = nb ? vload<T>(nb + b * Mp + c * L) : vzero<T>();
      for (int64_t i = 0; i < n; ++i) a += vload<T>(tb + int64_t(ref[i]) * Mp + c * L);
      vstore<T>(base.data() + c * L, a);
    }
    for (int64_t r = 0; r < R; ++r) {
      const int64_t r0 = ref[inp[r]];
      if (r != r0)
        for (int64_t c = 0; c < nv; ++c)
          vstore<T>(tb + r * Mp + c * L, vload<T>(tb + r * Mp + c * L) - vload<T>(tb + r0 * Mp + c * L));
    }
    for (int64_t s = 0; s < S; ++s) {
      const int32_t* ir = sidx + sptr[s];
      const int64_t cnt = sptr[s + 1] - sptr[s];
      T* ys = y + (b * S + s) * m;
      for (int64_t c = 0; c < nv; ++c) {
        const vec acc = gather_sum<T>(tb, ir, cnt, Mp, c * L, vload<T>(base.data() + c * L));
        const int64_t w = (m - c * L) < L ? (m - c * L) : L;
        if (w == L) vstore<T>(ys + c * L, acc);
        else { T tmp[L]; vstore<T>(tmp, acc); std::memcpy(ys + c * L, tmp, w * sizeof(T)); }
      }
    }
  }
}

// Its backward: order lists the samples of every row but the reference rows at [roff[r],
// roff[r+1]) (the reference rows' groups are empty); the row's output gradient sum gs[r] = sum of
// gyp over them (gyp (B, S, Mp)) is summed in registers; a reference row's is the sum over all
// samples minus its input's other rows'. Each gs[r] is then (times ns) spread onto its K+1
// coefficient rows (a per-model buffer of padded rows, written out to gC (B, n, m, nb) at the
// end) and its base weight: gCp[inp, Jd + p] += Vd[r, p] ns gs[r], gWb[inp] += bd[r] ns gs[r]
// (gWb accumulated into). With the node map also gns += Tb[r] gs[r] (the unscaled table, rebuilt
// here) and gnb += the sum over all samples.
template <typename T, int K>
void table_bwd(const int32_t* order, const int64_t* roff, const int32_t* ref, const int32_t* Jd, const T* Vd,
               const int32_t* inp, const T* bd, const T* C, const T* sc, const T* Wb, const T* ns, const T* gyp, T* gC,
               T* gsc, T* gWb, T* gns, T* gnb, int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t R,
               int64_t b0, int64_t b1) {
  typedef typename VT<T>::v vec;
  constexpr int L = VT<T>::L;
  const int64_t P = nk + K - 1, nv = Mp / L, nbf = nk - K - 1;
  std::vector<T> Tb(ns ? R * Mp : 0), Cp(ns ? n * P * Mp : 0), gCp(n * P * Mp), G(Mp), Gi(n * Mp);
  for (int64_t b = b0; b < b1; ++b) {
    const T* gb = gyp + b * S * Mp;
    T* gcb = gCp.data();
    std::memset(gcb, 0, sizeof(T) * n * P * Mp);
    std::memset(Gi.data(), 0, sizeof(T) * n * Mp);
    T* gwb = bd ? gWb + b * n * Mp : nullptr;
    if (ns) {
      pad_rows<T, K>(C + b * n * m * nbf, sc ? sc + b * n * m : nullptr, Cp.data(), n, m, nbf, Mp);
      table_build<T, K>(Jd, Vd, inp, bd, Cp.data(), bd ? Wb + b * n * Mp : nullptr, nullptr, Tb.data(), nk, Mp, R);
    }
    for (int64_t c = 0; c < nv; ++c) {  // the sum over all samples
      vec a0 = vzero<T>(), a1 = vzero<T>();
      int64_t q = 0;
      for (; q + 1 < S; q += 2) {
        a0 += vload<T>(gb + q * Mp + c * L);
        a1 += vload<T>(gb + (q + 1) * Mp + c * L);
      }
      if (q < S) a0 += vload<T>(gb + q * Mp + c * L);
      vstore<T>(G.data() + c * L, a0 + a1);
      if (ns) vstore<T>(gnb + b * Mp + c * L, vload<T>(gnb + b * Mp + c * L) + (a0 + a1));
    }
    auto spread = [&](int64_t r, int64_t c, vec g) {
      if (ns) {
        T* q = gns + b * Mp + c * L;
        vstore<T>(q, vload<T>(q) + vload<T>(Tb.data() + r * Mp + c * L) * g);
        g *= vload<T>(ns + b * Mp + c * L);
      }
      T* row = gcb + (int64_t(inp[r]) * P + Jd[r]) * Mp;
      for (int p = 0; p <= K; ++p) {
        T* q = row + p * Mp + c * L;
        vstore<T>(q, vload<T>(q) + Vd[r * (K + 1) + p] * g);
      }
      if (gwb) {
        T* q = gwb + int64_t(inp[r]) * Mp + c * L;
        vstore<T>(q, vload<T>(q) + bd[r] * g);
      }
    };
    for (int64_t r = 0; r < R; ++r) {
      if (r == ref[inp[r]]) continue;
      const int64_t t0 = roff[r], t1 = roff[r + 1];
      for (int64_t c = 0; c < nv; ++c) {
        const vec g = gather_sum<T>(gb, order + t0, t1 - t0, Mp, c * L, vzero<T>());
        T* gi = Gi.data() + int64_t(inp[r]) * Mp + c * L;
        vstore<T>(gi, vload<T>(gi) + g);
        spread(r, c, g);
      }
    }
    for (int64_t i = 0; i < n; ++i)  // the reference rows: all samples minus the input's other rows
      for (int64_t c = 0; c < nv; ++c)
        spread(ref[i], c, vload<T>(G.data() + c * L) - vload<T>(Gi.data() + i * Mp + c * L));
    unpad_rows<T, K>(gcb, C + b * n * m * nbf, sc ? sc + b * n * m : nullptr, gC + b * n * m * nbf,
                     sc ? gsc + b * n * m : nullptr, n, m, nbf, Mp);
  }
}

// The kernels' buffers are std::vectors: an allocation that fails returns -4 (no exception may
// leave an OpenMP region or cross into ctypes).
#define WSK_CASES(FN, ...)                        \
  try {                                           \
    switch (k) {                                  \
      case 1: FN<T, 1>(__VA_ARGS__); return 0;    \
      case 2: FN<T, 2>(__VA_ARGS__); return 0;    \
      case 3: FN<T, 3>(__VA_ARGS__); return 0;    \
      case 4: FN<T, 4>(__VA_ARGS__); return 0;    \
      case 5: FN<T, 5>(__VA_ARGS__); return 0;    \
      default: return -1;                         \
    }                                             \
  } catch (const std::bad_alloc&) {               \
    return -4;                                    \
  }

template <typename T>
int check(int64_t m, int64_t Mp) {
  return (Mp % VT<T>::L != 0 || Mp < m) ? -2 : 0;
}

template <typename T>
int d_sum_fwd(int k, const T* x, const T* grid, const T* Cp, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,
              int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* Wb, int silu, const T* ns, const T* nb,
              int tr) {
  if (check<T>(m, Mp)) return -2;
  if (!ns != !nb) return -3;
  WSK_CASES(sum_fwd, x, grid, Cp, y, S, n, m, nk, Mp, b0, b1, xb, Wb, silu, ns, nb, tr)
}

template <typename T>
int d_sum_bwd(int k, const T* x, const T* grid, const T* Cp, const T* gy, T* gx, T* gCp, int64_t S, int64_t n,
              int64_t m, int64_t nk, int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* dxb, const T* Wb,
              T* gWb, int silu, const T* ns, int64_t gsb, int64_t gss, int64_t gso) {
  if (check<T>(m, Mp)) return -2;
  if (xb && !((dxb || silu) && Wb && gWb && gx && gCp)) return -3;
  WSK_CASES(sum_bwd, x, grid, Cp, gy, gx, gCp, S, n, m, nk, Mp, b0, b1, xb, dxb, Wb, gWb, silu, ns, gsb, gss, gso)
}

template <typename T>
int d_shared_fwd(int k, const int32_t* J, const T* V, const T* Cp, T* y, int64_t S, int64_t n, int64_t m,
                 int64_t nk, int64_t Mp, int64_t b0, int64_t b1, const T* xb, const T* Wb) {
  if (check<T>(m, Mp)) return -2;
  WSK_CASES(shared_fwd, J, V, Cp, y, S, n, m, nk, Mp, b0, b1, xb, Wb)
}

template <typename T>
int d_shared_bwd(int k, const int32_t* order, const T* Vs, const int64_t* off, const T* gyp, T* gCp, int64_t S,
                 int64_t n, int64_t nk, int64_t Mp, int64_t b0, int64_t b1, const T* xb, T* gWb) {
  if (check<T>(Mp, Mp)) return -2;
  WSK_CASES(shared_bwd, order, Vs, off, gyp, gCp, S, n, nk, Mp, b0, b1, xb, gWb)
}

template <typename T>
int d_table_fwd(int k, const int64_t* sptr, const int32_t* sidx, const int32_t* ref, const int32_t* Jd, const T* Vd,
                const int32_t* inp, const T* bd, const T* C, const T* sc, const T* Wb, const T* ns, const T* nb, T* y,
                int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t R, int64_t b0, int64_t b1) {
  if (check<T>(m, Mp)) return -2;
  if ((bd && !Wb) || (!ns != !nb)) return -3;
  WSK_CASES(table_fwd, sptr, sidx, ref, Jd, Vd, inp, bd, C, sc, Wb, ns, nb, y, S, n, m, nk, Mp, R, b0, b1)
}

template <typename T>
int d_table_bwd(int k, const int32_t* order, const int64_t* roff, const int32_t* ref, const int32_t* Jd, const T* Vd,
                const int32_t* inp, const T* bd, const T* C, const T* sc, const T* Wb, const T* ns, const T* gyp, T* gC,
                T* gsc, T* gWb, T* gns, T* gnb, int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t R,
                int64_t b0, int64_t b1) {
  if (check<T>(m, Mp)) return -2;
  if ((bd && !(gWb && Wb)) || (ns && !(gns && gnb)) || (sc && !gsc)) return -3;
  WSK_CASES(table_bwd, order, roff, ref, Jd, Vd, inp, bd, C, sc, Wb, ns, gyp, gC, gsc, gWb, gns, gnb, S, n, m, nk, Mp,
            R, b0, b1)
}

}  // namespace

// Each entry point splits the model axis over nt OpenMP threads. _native.py links against the
// libgomp that torch itself loads (torch/lib), so these are torch's own intra-op threads (no second
// pool spinning next to them); built without OpenMP, the entry points run serially.
#ifdef _OPENMP
#include <omp.h>
#define WSK_PARALLEL(B, CALL)                                   \
  int rc = 0;                                                   \
  _Pragma("omp parallel num_threads(nt) reduction(|:rc)") {     \
    const int64_t t = omp_get_thread_num(), T = omp_get_num_threads(); \
    const int64_t b0 = (B) * t / T, b1 = (B) * (t + 1) / T;     \
    rc |= CALL;                                                 \
  }                                                             \
  return rc;
#else
#define WSK_PARALLEL(B, CALL) \
  (void)nt;                   \
  const int64_t b0 = 0, b1 = (B); \
  return CALL;
#endif

#define WSK_EXPORT(T, SUF)                                                                                     \
  extern "C" int wsk_sum_fwd_##SUF(int nt, int k, const T* x, const T* grid, const T* Cp, T* y, int64_t S,       \
                                   int64_t n, int64_t m, int64_t nk, int64_t Mp, const T* xb, const T* Wb,     \
                                   int silu, const T* ns, const T* nb, int tr, int64_t B) {                    \
    WSK_PARALLEL(B, d_sum_fwd<T>(k, x, grid, Cp, y, S, n, m, nk, Mp, b0, b1, xb, Wb, silu, ns, nb, tr))        \
  }                                                                                                            \
  extern "C" int wsk_sum_bwd_##SUF(int nt, int k, const T* x, const T* grid, const T* Cp, const T* gy, T* gx,    \
                                   T* gCp, int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp,            \
                                   const T* xb, const T* dxb, const T* Wb, T* gWb, int silu, const T* ns,      \
                                   int64_t gsb, int64_t gss, int64_t gso, int64_t B) {                         \
    WSK_PARALLEL(B, d_sum_bwd<T>(k, x, grid, Cp, gy, gx, gCp, S, n, m, nk, Mp, b0, b1, xb, dxb, Wb, gWb, silu,  \
                                 ns, gsb, gss, gso))                                                           \
  }                                                                                                            \
  extern "C" int wsk_shared_fwd_##SUF(int nt, int k, const int32_t* J, const T* V, const T* Cp, T* y,           \
                                      int64_t S, int64_t n, int64_t m, int64_t nk, int64_t Mp, const T* xb,    \
                                      const T* Wb, int64_t B) {                                                \
    WSK_PARALLEL(B, d_shared_fwd<T>(k, J, V, Cp, y, S, n, m, nk, Mp, b0, b1, xb, Wb))                          \
  }                                                                                                            \
  extern "C" int wsk_shared_bwd_##SUF(int nt, int k, const int32_t* order, const T* Vs, const int64_t* off,     \
                                      const T* gyp, T* gCp, int64_t S, int64_t n, int64_t nk, int64_t Mp,      \
                                      const T* xb, T* gWb, int64_t B) {                                        \
    WSK_PARALLEL(B, d_shared_bwd<T>(k, order, Vs, off, gyp, gCp, S, n, nk, Mp, b0, b1, xb, gWb))               \
  }                                                                                                            \
  extern "C" int wsk_table_fwd_##SUF(int nt, int k, const int64_t* sptr, const int32_t* sidx,                 \
                                     const int32_t* ref, const int32_t* Jd, const T* Vd, const int32_t* inp,  \
                                     const T* bd, const T* C, const T* sc, const T* Wb, const T* ns,          \
                                     const T* nb, T* y, int64_t S, int64_t n, int64_t m, int64_t nk,          \
                                     int64_t Mp, int64_t R, int64_t B) {                                      \
    WSK_PARALLEL(B, d_table_fwd<T>(k, sptr, sidx, ref, Jd, Vd, inp, bd, C, sc, Wb, ns, nb, y, S, n, m, nk, Mp, \
                                   R, b0, b1))                                                                \
  }                                                                                                            \
  extern "C" int wsk_table_bwd_##SUF(int nt, int k, const int32_t* order, const int64_t* roff,                 \
                                     const int32_t* ref, const int32_t* Jd, const T* Vd, const int32_t* inp,  \
                                     const T* bd, const T* C, const T* sc, const T* Wb, const T* ns,          \
                                     const T* gyp, T* gC, T* gsc, T* gWb, T* gns, T* gnb, int64_t S,          \
                                     int64_t n, int64_t m, int64_t nk, int64_t Mp, int64_t R, int64_t B) {    \
    WSK_PARALLEL(B, d_table_bwd<T>(k, order, roff, ref, Jd, Vd, inp, bd, C, sc, Wb, ns, gyp, gC, gsc, gWb, gns, \
                                   gnb, S, n, m, nk, Mp, R, b0, b1))                                          \
  }
  
WSK_EXPORT(float, f32)
WSK_EXPORT(double, f64)
