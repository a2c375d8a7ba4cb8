// The ALIF layer of shared/spec/ops.md over a whole sequence, forward and backward (BPTT with the
// pseudo-derivative of Bellec et al. 2018), each one call: the kernels behind lsnn.reference.fused.
//
// Forward, for t = 0 .. T-1, elementwise over [B, H] except the products (float32, the operation
// order of reference/functional.py, so that every value is the eager reference's):
//
//     a = rho * a + (1 - rho) * z
//     A = thr + beta * a
//     I = X[t] W^T + z R^T                 (both products summed over the nonzero entries only)
//     v = (alpha * v + (1 - alpha) * I) - A * z
//     m = (r == 0);  s = H(v - A) * m
//     r = s ? n_refractory : max(r - 1, 0);  z = s
//
// Backward, for t = T-1 .. 0, with gv, ga, gz the gradients of the state after step t (those of the
// final state to begin with) and gZ, gV, gA those of the outputs:
//
//     gz' = gz + gZ[t] + gc;  gv' = gv + gV[t];  gA' = gA[t]     (gc: see alif_backward)
//     psi = 0.3 * max(0, 1 - |(v - A) / A|) / A      dz/dv = psi * m, dz/dA = -psi * m
//     gv' += gz' * psi * m;  gA' -= gz' * psi * m
//     gI = (1 - alpha) * gv'                           (kept for the weight gradients)
//     gA' -= gv' * z_prev
//     ga' = ga + beta * gA'
//     gv = alpha * gv';  ga = rho * ga'
//     gz = (1 - rho) * ga' - A * gv' + gI R
//
// (gz reaches the loss only through dz/dv of step t - 1, so gI R is summed only where that is not
// zero: a fifth of the neurons or fewer in sMNIST training.)
//
// then gX = gI W, gW = sum_t gI[t]^T X[t] and gR = sum_t gI[t]^T z_prev[t], the last two summed
// over the nonzero inputs and spikes only. Compile with -ffp-contract=off: a fused multiply-add
// would round differently from the eager reference.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace {

// The large buffers of one call (Z, V, A, the refractory mask, gI: [T, B, H] each) come from this
// pool and return to it when torch frees them. A fresh 47 MB tensor (sMNIST: 840 x 64 x 220) costs
// ~20 ms of page faults on every call, because glibc maps each block above 32 MB anew and unmaps
// it on free: as much as the forward pass's arithmetic. Blocks are reused by exact size; at most
// LIMIT bytes wait in the pool, the rest is freed.
class Pool {
 public:
  at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype) {
    size_t bytes = at::elementSize(dtype);
    for (auto s : sizes) bytes *= static_cast<size_t>(s);
    bytes = std::max<size_t>((bytes + ALIGN - 1) / ALIGN * ALIGN, ALIGN);
    void* p = take(bytes);
    if (p == nullptr) p = std::aligned_alloc(ALIGN, bytes);
    TORCH_CHECK(p != nullptr, "lsnn fused ALIF: out of memory allocating ", bytes, " bytes");
    return at::from_blob(p, sizes, [this, bytes](void* q) { give(q, bytes); }, at::TensorOptions().dtype(dtype));
  }

 private:
  static constexpr size_t ALIGN = 64, LIMIT = size_t(1) << 30;
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t held_ = 0;

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    held_ -= bytes;
    return p;
  }

  void give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_ + bytes > LIMIT) {
      std::free(p);
      return;
    }
    free_.emplace(bytes, p);
    held_ += bytes;
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may be freed after the module unloads
  return *p;
}

constexpr float GAMMA = 0.3f;  // reference/surrogate.py

// Bit j set where x[j] != 0, j < 16.
inline uint32_t nonzero_mask16(const float* __restrict x) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask(_mm512_loadu_ps(x), _mm512_setzero_ps(), _CMP_NEQ_UQ);
#elif defined(__AVX__)
  const __m256 zero = _mm256_setzero_ps();
  const uint32_t lo = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x), zero, _CMP_NEQ_UQ));
  const uint32_t hi = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8), zero, _CMP_NEQ_UQ));
  return lo | (hi << 8);
#else
  uint32_t mask = 0;
  for (int j = 0; j < 16; ++j) mask |= static_cast<uint32_t>(x[j] != 0.f) << j;
  return mask;
#endif
}

// f(k, x[k]) for every nonzero x[k], k ascending (spikes and sMNIST inputs are a few percent ones).
// Blocks of 16 are compared at once into a bit mask whose set bits are then visited, so that
// neither the zeros nor unpredictable branches per element cost time.
template <class F>
inline void for_nonzero(const float* __restrict x, int64_t K, F&& f) {
  constexpr int64_t BLOCK = 16;
  int64_t k = 0;
  for (; k + BLOCK <= K; k += BLOCK) {
    uint32_t mask = nonzero_mask16(x + k);
    while (mask != 0) {
      const int j = __builtin_ctz(mask);
      f(k + j, x[k + j]);
      mask &= mask - 1;
    }
  }
  for (; k < K; ++k)
    if (x[k] != 0.f) f(k, x[k]);
}

// out[b, :] = sum over k with z[b, k] != 0 of z[b, k] * MT[k, :], in the order of k (the order in
// which a GEMM micro-kernel sums, so for 0/1 inputs the result is the one torch's mm gives wherever
// MKL keeps k in one block).
void sparse_rows(const float* z, int64_t B, int64_t K, const float* MT, int64_t N, float* out) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* __restrict o = out + b * N;
      std::fill(o, o + N, 0.f);
      for_nonzero(z + b * K, K, [&](int64_t k, float zk) {
        const float* __restrict m = MT + k * N;
        for (int64_t j = 0; j < N; ++j) o[j] += zk * m[j];
      });
    }
  });
}

// acc[k, :] += x[r, k] * g[r, :] over the nonzero x[r, k] of `rows` rows: the transposed weight
// gradient g^T x, event-driven.
void sparse_outer(const float* x, const float* g, int64_t rows, int64_t K, int64_t N, float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict gr = g + r * N;
    for_nonzero(x + r * K, K, [&](int64_t k, float xk) {
      float* __restrict a = acc + k * N;
      for (int64_t j = 0; j < N; ++j) a[j] += xk * gr[j];
    });
  }
}

// The per-neuron constants, with 1 - alpha and 1 - rho rounded once as the reference does.
struct Neurons {
  const float *alpha, *rho, *beta;
  std::vector<float> om_alpha, om_rho;
  float thr, n_refractory;

  Neurons(const at::Tensor& alpha_, const at::Tensor& rho_, const at::Tensor& beta_, double thr_, int64_t nref)
      : alpha(alpha_.data_ptr<float>()), rho(rho_.data_ptr<float>()), beta(beta_.data_ptr<float>()),
        om_alpha(alpha_.numel()), om_rho(rho_.numel()), thr(static_cast<float>(thr_)),
        n_refractory(static_cast<float>(nref)) {
    for (int64_t j = 0; j < alpha_.numel(); ++j) om_alpha[j] = 1.f - alpha[j];
    for (int64_t j = 0; j < rho_.numel(); ++j) om_rho[j] = 1.f - rho[j];
  }
};

// One step of one batch row (branch-free, so that it vectorises): the state v, a, z, r in place,
// this step's outputs to Z, V, A and the refractory mask to M.
void forward_row(int64_t H, const Neurons& p, const float* __restrict cur, const float* __restrict rec,
                 float* __restrict v, float* __restrict a, float* __restrict z, float* __restrict r,
                 float* __restrict Z, float* __restrict V, float* __restrict A, uint8_t* __restrict M) {
  const float *__restrict alpha = p.alpha, *__restrict rho = p.rho, *__restrict beta = p.beta;
  const float *__restrict om_alpha = p.om_alpha.data(), *__restrict om_rho = p.om_rho.data();
  for (int64_t j = 0; j < H; ++j) {
    const float zp = z[j];
    const float an = rho[j] * a[j] + om_rho[j] * zp;
    const float th = p.thr + beta[j] * an;
    const float in = cur[j] + rec[j];
    const float vn = (alpha[j] * v[j] + om_alpha[j] * in) - th * zp;
    const bool free = r[j] == 0.f;
    const float s = ((vn > th) & free) ? 1.f : 0.f;
    const float rd = r[j] - 1.f;
    r[j] = s > 0.f ? p.n_refractory : (rd < 0.f ? 0.f : rd);
    a[j] = an;
    v[j] = vn;
    z[j] = s;
    Z[j] = s;
    V[j] = vn;
    A[j] = th;
    M[j] = free;
  }
}

// The pseudo-derivative dz/dv of one step of one batch row, gated by the refractory mask:
// P = m * 0.3 * max(0, 1 - |(v - A) / A|) / A (reference/surrogate.py).
void surrogate_row(int64_t H, const float* __restrict V, const float* __restrict A, const uint8_t* __restrict M,
                   float* __restrict P) {
  for (int64_t j = 0; j < H; ++j) {
    const float x = 1.f - std::fabs((V[j] - A[j]) / A[j]);
    const float psi = GAMMA * (x < 0.f ? 0.f : x);
    P[j] = M[j] != 0 ? psi / A[j] : 0.f;
  }
}

// One step back of one batch row: gv, ga (in place) from after step t to before it; gI of the step
// and gzp, the part of the previous spikes' gradient other than gI R. P is the step's dz/dv
// (surrogate_row); gc a gradient of the spikes that is the same at every step and row.
void backward_row(int64_t H, const Neurons& p, const float* __restrict gz, const float* __restrict gZ,
                  const float* __restrict gc, const float* __restrict gV, const float* __restrict gA,
                  const float* __restrict A, const float* __restrict P, const float* __restrict zp,
                  float* __restrict gv, float* __restrict ga, float* __restrict gI, float* __restrict gzp) {
  const float *__restrict alpha = p.alpha, *__restrict rho = p.rho, *__restrict beta = p.beta;
  const float *__restrict om_alpha = p.om_alpha.data(), *__restrict om_rho = p.om_rho.data();
  for (int64_t j = 0; j < H; ++j) {
    const float gzt = (gz[j] + gZ[j]) + gc[j];
    const float d = gzt * P[j];
    const float gvt = gv[j] + gV[j] + d;
    const float gAt = (gA[j] - d) - gvt * zp[j];
    const float gat = ga[j] + beta[j] * gAt;
    gI[j] = om_alpha[j] * gvt;
    ga[j] = rho[j] * gat;
    gzp[j] = om_rho[j] * gat - gvt * A[j];
    gv[j] = alpha[j] * gvt;
  }
}

// out[i] = sum_k g[k] r[i][k] for the N <= 4 rows r[i] (vectorised, g loaded once for all of them;
// the order of the sum is not the reference's, which the gradients are not held to).
template <int N>
inline void dots(const float* __restrict g, const float* const* r, int64_t n, float* out) {
#if defined(__AVX512F__)
  __m512 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = n - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - k)) - 1);
    const __m512 gk = _mm512_maskz_loadu_ps(m, g + k);
    for (int i = 0; i < N; ++i) acc[i] = _mm512_fmadd_ps(gk, _mm512_maskz_loadu_ps(m, r[i] + k), acc[i]);
  }
  for (int i = 0; i < N; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
#else
  for (int i = 0; i < N; ++i) {
    float acc[16] = {0.f};
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
      for (int l = 0; l < 16; ++l) acc[l] += g[k + l] * r[i][k + l];
    float s = 0.f;
    for (; k < n; ++k) s += g[k] * r[i][k];
    for (int l = 0; l < 16; ++l) s += acc[l];
    out[i] = s;
  }
#endif
}

// gz = gzp + gI R, the gradient of the previous step's spikes, where it is used: only where that
// step's dz/dv (P) is not zero, for the spikes reach the loss only through it (elsewhere gz = gzp).
// Up to the fraction `dense_above` of them, dot products of gI's rows with R's columns (R^T's
// rows), else one matmul.
void spike_grad(const at::Tensor& gzp, const at::Tensor& gI, const at::Tensor& R, const at::Tensor& RT,
                const float* P, double dense_above, at::Tensor& gz) {
  const int64_t B = gz.size(0), H = gz.size(1);
  int64_t used = 0;
  for (int64_t i = 0; i < B * H; ++i) used += P[i] != 0.f;
  if (used > dense_above * B * H) {
    at::addmm_out(gz, gzp, gI, R);
    return;
  }
  const float *pzp = gzp.data_ptr<float>(), *pgI = gI.data_ptr<float>(), *pRT = RT.data_ptr<float>();
  float* pgz = gz.data_ptr<float>();
  std::copy(pzp, pzp + B * H, pgz);
  std::vector<int64_t> js(H);
  for (int64_t b = 0; b < B; ++b) {
    const float* g = pgI + b * H;
    float* out = pgz + b * H;
    int64_t n = 0;
    for_nonzero(P + b * H, H, [&](int64_t j, float) { js[n++] = j; });
    int64_t q = 0;
    for (; q + 4 <= n; q += 4) {
      const float* r[4] = {pRT + js[q] * H, pRT + js[q + 1] * H, pRT + js[q + 2] * H, pRT + js[q + 3] * H};
      float d[4];
      dots<4>(g, r, H, d);
      for (int i = 0; i < 4; ++i) out[js[q + i]] += d[i];
    }
    for (; q < n; ++q) {
      const float* r[1] = {pRT + js[q] * H};
      float d[1];
      dots<1>(g, r, H, d);
      out[js[q]] += d[0];
    }
  }
}

const float* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<float>() : nullptr;
}

}  // namespace

// True where X holds spikes: every value 0 or 1, at most a quarter of them 1. Then the input
// product is summed over the spikes (exactly what a dense product gives); otherwise it is one matmul.
bool event_driven_inputs(const at::Tensor& X) {
  const float* __restrict x = X.data_ptr<float>();
  const int64_t n = X.numel();
  int64_t ones = 0, others = 0;
  constexpr int64_t BLOCK = 1 << 16;  // counted in 32 bits per block, so that the loop vectorises
  for (int64_t k0 = 0; k0 < n; k0 += BLOCK) {
    const int64_t k1 = std::min(n, k0 + BLOCK);
    int32_t o = 0, e = 0;
    for (int64_t i = k0; i < k1; ++i) {
      o += x[i] == 1.f;
      e += (x[i] != 0.f) & (x[i] != 1.f);
    }
    ones += o;
    others += e;
  }
  return others == 0 && ones * 4 <= n;
}

// (Z, V, A, final_v, final_a, final_z, final_r, M) with M[t] = (r == 0) before step t, the
// refractory mask the backward pass needs. All inputs contiguous float32 on the CPU.
std::vector<at::Tensor> alif_forward(const at::Tensor& X, const at::Tensor& W, const at::Tensor& R,
                                     const at::Tensor& beta, const at::Tensor& alpha, const at::Tensor& rho,
                                     const at::Tensor& v0, const at::Tensor& a0, const at::Tensor& z0,
                                     const at::Tensor& r0, double thr, int64_t n_refractory, bool event) {
  const int64_t T = X.size(0), B = X.size(1), I = X.size(2), H = W.size(0), BH = B * H;
  at::Tensor Z = pool().empty({T, B, H}, at::kFloat), V = pool().empty({T, B, H}, at::kFloat);
  at::Tensor A = pool().empty({T, B, H}, at::kFloat), M = pool().empty({T, B, H}, at::kByte);
  at::Tensor v = v0.clone(), a = a0.clone(), z = z0.clone(), r = r0.clone();
  at::Tensor C = event ? at::empty({B, H}, X.options()) : at::matmul(X, W.t()).contiguous();
  at::Tensor WT = W.t().contiguous(), RT = R.t().contiguous(), rec = at::empty({B, H}, X.options());
  const Neurons p(alpha, rho, beta, thr, n_refractory);
  float *pv = v.data_ptr<float>(), *pa = a.data_ptr<float>(), *pz = z.data_ptr<float>(), *pr = r.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* cur;
    if (event) {
      sparse_rows(X.data_ptr<float>() + t * B * I, B, I, WT.data_ptr<float>(), H, C.data_ptr<float>());
      cur = C.data_ptr<float>();
    } else {
      cur = C.data_ptr<float>() + t * BH;
    }
    sparse_rows(pz, B, H, RT.data_ptr<float>(), H, rec.data_ptr<float>());
    const float* prec = rec.data_ptr<float>();
    float *Zt = Z.data_ptr<float>() + t * BH, *Vt = V.data_ptr<float>() + t * BH, *At = A.data_ptr<float>() + t * BH;
    uint8_t* Mt = M.data_ptr<uint8_t>() + t * BH;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i = b * H;
        forward_row(H, p, cur + i, prec + i, pv + i, pa + i, pz + i, pr + i, Zt + i, Vt + i, At + i, Mt + i);
      }
    });
  }
  return {Z, V, A, v, a, z, r, M};
}

// Gradients (X, W, R, initial_v, initial_a, initial_z) of the loss, each undefined where not asked
// for; the gradients of the outputs may be None (zero). gc [H], where given, is a gradient of Z that
// is the same at every step and batch row (that of a mean over them: the firing-rate regulariser),
// added to gZ without its T x B copies. dense_above: see spike_grad.
std::vector<at::Tensor> alif_backward(
    const std::optional<at::Tensor>& gZ, const std::optional<at::Tensor>& gV, const std::optional<at::Tensor>& gA,
    const std::optional<at::Tensor>& gc, const std::optional<at::Tensor>& gvT, const std::optional<at::Tensor>& gaT,
    const std::optional<at::Tensor>& gzT, const at::Tensor& X, const at::Tensor& W, const at::Tensor& R, const at::Tensor& beta, const at::Tensor& alpha,
    const at::Tensor& rho, const at::Tensor& z0, const at::Tensor& Z, const at::Tensor& V, const at::Tensor& A,
    const at::Tensor& M, bool event, double dense_above, bool need_X, bool need_W, bool need_R, bool need_state) {
  const int64_t T = X.size(0), B = X.size(1), I = X.size(2), H = W.size(0), BH = B * H;
  auto state_grad = [&](const std::optional<at::Tensor>& g) {
    return g.has_value() && g->defined() ? g->contiguous().clone() : at::zeros({B, H}, X.options());
  };
  at::Tensor gv = state_grad(gvT), ga = state_grad(gaT), gz = state_grad(gzT), gzp = at::empty({B, H}, X.options());
  at::Tensor GI = pool().empty({T, B, H}, at::kFloat);
  const Neurons p(alpha, rho, beta, 0.0, 0);
  const std::vector<float> zeros(H, 0.f);
  const float* zero = zeros.data();
  const float *pgZ = ptr_or_null(gZ), *pgV = ptr_or_null(gV), *pgA = ptr_or_null(gA), *pgc = ptr_or_null(gc);
  if (pgc == nullptr) pgc = zero;
  const at::Tensor RT = R.t().contiguous();
  at::Tensor P = at::empty({B, H}, X.options());  // dz/dv of the step being taken back
  float *pgv = gv.data_ptr<float>(), *pga = ga.data_ptr<float>(), *pgzp = gzp.data_ptr<float>(),
        *pP = P.data_ptr<float>();
  auto surrogate = [&](int64_t t) {
    const int64_t o = t * BH;
    for (int64_t b = 0; b < B; ++b)
      surrogate_row(H, V.data_ptr<float>() + o + b * H, A.data_ptr<float>() + o + b * H,
                    M.data_ptr<uint8_t>() + o + b * H, pP + b * H);
  };
  surrogate(T - 1);
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * BH;
    const float* zp = t > 0 ? Z.data_ptr<float>() + o - BH : z0.data_ptr<float>();
    const float *At = A.data_ptr<float>() + o, *pgz = gz.data_ptr<float>();
    float* GIt = GI.data_ptr<float>() + o;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i = b * H;
        backward_row(H, p, pgz + i, pgZ ? pgZ + o + i : zero, pgc, pgV ? pgV + o + i : zero,
                     pgA ? pgA + o + i : zero, At + i, pP + i, zp + i, pgv + i, pga + i, GIt + i, pgzp + i);
      }
    });
    if (t > 0) {
      surrogate(t - 1);
      spike_grad(gzp, GI[t], R, RT, pP, dense_above, gz);
    } else if (need_state) {
      at::addmm_out(gz, gzp, GI[t], R);
    }
  }
  std::vector<at::Tensor> out(6);
  const at::Tensor GI2 = GI.view({T * B, H});
  if (need_X) out[0] = at::matmul(GI, W);
  if (need_W) {
    if (event) {
      at::Tensor gWT = at::zeros({I, H}, X.options());
      sparse_outer(X.data_ptr<float>(), GI.data_ptr<float>(), T * B, I, H, gWT.data_ptr<float>());
      out[1] = gWT.t().contiguous();
    } else {
      out[1] = at::mm(GI2.t(), X.reshape({T * B, I}));
    }
  }
  if (need_R) {
    at::Tensor gRT = at::zeros({H, H}, X.options());
    sparse_outer(z0.data_ptr<float>(), GI.data_ptr<float>(), B, H, H, gRT.data_ptr<float>());
    if (T > 1) sparse_outer(Z.data_ptr<float>(), GI.data_ptr<float>() + BH, (T - 1) * B, H, H, gRT.data_ptr<float>());
    out[2] = gRT.t().contiguous();
  }
  if (need_state) {
    out[3] = gv;
    out[4] = ga;
    out[5] = gz;
  }
  return out;
}

// LI (shared/spec/ops.md), forward: y = alpha * y + (1 - alpha) * (X[t] W^T + bias), the product one
// matmul over the whole sequence (the reference's own call, so the same values; the outputs are too
// few for spikes to pay: a spike adds a row of O weights but costs its scan of X), then the
// reference's elementwise order.
std::vector<at::Tensor> li_forward(const at::Tensor& X, const at::Tensor& W, const at::Tensor& alpha,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& y0) {
  const int64_t T = X.size(0), B = X.size(1), O = W.size(0), BO = B * O;
  at::Tensor Y = at::empty({T, B, O}, X.options()), y = y0.clone();
  const at::Tensor C = at::matmul(X, W.t()).contiguous();
  const float *pal = alpha.data_ptr<float>(), *pb = ptr_or_null(bias), *pC = C.data_ptr<float>();
  std::vector<float> om(O);
  for (int64_t o = 0; o < O; ++o) om[o] = 1.f - pal[o];
  float *py = y.data_ptr<float>(), *pY = Y.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* d = pC + t * BO;
    float* Yt = pY + t * BO;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t o = 0; o < O; ++o) {
        const int64_t i = b * O + o;
        const float drive = om[o] * (pb ? d[i] + pb[o] : d[i]);
        py[i] = pal[o] * py[i] + drive;
        Yt[i] = py[i];
      }
    }
  }
  return {Y, y};
}

// LI backward: with g the gradient of y after step t, g += gY[t]; gD[t] = (1 - alpha) g (the
// gradient of X[t] W^T + bias); g = alpha g. Then gX = gD W, gW = sum gD^T X (one matmul each: with
// O outputs a spike's share is O products, less than finding it costs), gbias = sum gD, gy0 = g.
// Undefined where not asked for.
std::vector<at::Tensor> li_backward(const std::optional<at::Tensor>& gY, const std::optional<at::Tensor>& gyT,
                                    const at::Tensor& X, const at::Tensor& W, const at::Tensor& alpha, bool need_X, bool need_W, bool need_bias, bool need_y0) {
  const int64_t T = X.size(0), B = X.size(1), I = X.size(2), O = W.size(0), BO = B * O;
  at::Tensor g = gyT.has_value() && gyT->defined() ? gyT->contiguous().clone() : at::zeros({B, O}, X.options());
  at::Tensor GD = at::empty({T, B, O}, X.options());
  const float *pal = alpha.data_ptr<float>(), *pgY = ptr_or_null(gY);
  float *pg = g.data_ptr<float>(), *pGD = GD.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t o = 0; o < O; ++o) {
        const int64_t i = b * O + o;
        const float gt = pgY ? pg[i] + pgY[t * BO + i] : pg[i];
        pGD[t * BO + i] = (1.f - pal[o]) * gt;
        pg[i] = pal[o] * gt;
      }
    }
  }
  std::vector<at::Tensor> out(4);
  const at::Tensor GD2 = GD.view({T * B, O});
  if (need_X) {
    out[0] = pool().empty({T, B, I}, at::kFloat);
    at::Tensor gX2 = out[0].view({T * B, I});
    at::mm_out(gX2, GD2, W);
  }
  if (need_W) out[1] = at::mm(GD2.t(), X.reshape({T * B, I}));
  if (need_bias) out[2] = GD2.sum(0);
  if (need_y0) out[3] = g;
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("li_forward", &li_forward, "LI over a sequence: (Y, final y)");
  m.def("li_backward", &li_backward, "BPTT of the LI layer: grads of (X, W, bias, initial y)");
  m.def("event_driven_inputs", &event_driven_inputs, "whether X holds sparse spikes (0/1, at most 1/4 ones)");
  m.def("forward", &alif_forward, "ALIF over a sequence: (Z, V, A, final v, a, z, r, refractory mask)");
  m.def("backward", &alif_backward, "BPTT of the ALIF layer: grads of (X, W, R, initial v, a, z)");
}
