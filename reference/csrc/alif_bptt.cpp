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
//     gz' = gz + gZ[t];  gv' = gv + gV[t];  gA' = gA[t]
//     psi = 0.3 * max(0, 1 - |(v - A) / A|)          dz/dv = psi * m, dz/dA = -psi * m
//     gv' += gz' * psi * m;  gA' -= gz' * psi * m
//     gI = (1 - alpha) * gv'                           (kept for the weight gradients)
//     gA' -= gv' * z_prev
//     ga' = ga + beta * gA'
//     gv = alpha * gv';  ga = rho * ga'
//     gz = (1 - rho) * ga' - A * gv' + gI R
//
// then gX = gI W, gW = sum_t gI[t]^T X[t] and gR = sum_t gI[t]^T z_prev[t], the last two summed
// over the nonzero inputs and spikes only. Compile with -ffp-contract=off: a fused multiply-add
// would round differently from the eager reference.
#include <torch/extension.h>

#include <ATen/Parallel.h>

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

// f(k, x[k]) for every nonzero x[k], k ascending; blocks of 16 zeros are passed over at once
// (spikes and sMNIST inputs are a few percent ones).
template <class F>
inline void for_nonzero(const float* __restrict x, int64_t K, F&& f) {
  constexpr int64_t BLOCK = 16;
  int64_t k = 0;
  for (; k + BLOCK <= K; k += BLOCK) {
    int any = 0;
    for (int64_t j = 0; j < BLOCK; ++j) any |= x[k + j] != 0.f;
    if (!any) continue;
    for (int64_t j = k; j < k + BLOCK; ++j)
      if (x[j] != 0.f) f(j, x[j]);
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

// One step back of one batch row: gv, ga (in place) from after step t to before it; gI of the step
// and gzp, the part of the previous spikes' gradient other than gI R.
void backward_row(int64_t H, const Neurons& p, const float* __restrict gz, const float* __restrict gZ,
                  const float* __restrict gV, const float* __restrict gA, const float* __restrict V,
                  const float* __restrict A, const uint8_t* __restrict M, const float* __restrict zp,
                  float* __restrict gv, float* __restrict ga, float* __restrict gI, float* __restrict gzp) {
  const float *__restrict alpha = p.alpha, *__restrict rho = p.rho, *__restrict beta = p.beta;
  const float *__restrict om_alpha = p.om_alpha.data(), *__restrict om_rho = p.om_rho.data();
  for (int64_t j = 0; j < H; ++j) {
    const float gzt = gz[j] + gZ[j];
    const float th = A[j];
    const float x = 1.f - std::fabs((V[j] - th) / th);
    const float psi = GAMMA * (x < 0.f ? 0.f : x);
    const float d = M[j] != 0 ? gzt * psi : 0.f;
    const float gvt = gv[j] + gV[j] + d;
    const float gAt = (gA[j] - d) - gvt * zp[j];
    const float gat = ga[j] + beta[j] * gAt;
    gI[j] = om_alpha[j] * gvt;
    ga[j] = rho[j] * gat;
    gzp[j] = om_rho[j] * gat - gvt * th;
    gv[j] = alpha[j] * gvt;
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
  for (int64_t i = 0; i < n; ++i) {
    ones += x[i] == 1.f;
    others += (x[i] != 0.f) & (x[i] != 1.f);
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
// for; the gradients of the outputs may be None (zero).
std::vector<at::Tensor> alif_backward(
    const std::optional<at::Tensor>& gZ, const std::optional<at::Tensor>& gV, const std::optional<at::Tensor>& gA,
    const std::optional<at::Tensor>& gvT, const std::optional<at::Tensor>& gaT, const std::optional<at::Tensor>& gzT,
    const at::Tensor& X, const at::Tensor& W, const at::Tensor& R, const at::Tensor& beta, const at::Tensor& alpha,
    const at::Tensor& rho, const at::Tensor& z0, const at::Tensor& Z, const at::Tensor& V, const at::Tensor& A,
    const at::Tensor& M, bool event, bool need_X, bool need_W, bool need_R, bool need_state) {
  const int64_t T = X.size(0), B = X.size(1), I = X.size(2), H = W.size(0), BH = B * H;
  auto state_grad = [&](const std::optional<at::Tensor>& g) {
    return g.has_value() && g->defined() ? g->contiguous().clone() : at::zeros({B, H}, X.options());
  };
  at::Tensor gv = state_grad(gvT), ga = state_grad(gaT), gz = state_grad(gzT), gzp = at::empty({B, H}, X.options());
  at::Tensor GI = pool().empty({T, B, H}, at::kFloat);
  const Neurons p(alpha, rho, beta, 0.0, 0);
  const std::vector<float> zeros(H, 0.f);
  const float* zero = zeros.data();
  const float *pgZ = ptr_or_null(gZ), *pgV = ptr_or_null(gV), *pgA = ptr_or_null(gA);
  float *pgv = gv.data_ptr<float>(), *pga = ga.data_ptr<float>(), *pgzp = gzp.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * BH;
    const float* zp = t > 0 ? Z.data_ptr<float>() + o - BH : z0.data_ptr<float>();
    const float *Vt = V.data_ptr<float>() + o, *At = A.data_ptr<float>() + o, *pgz = gz.data_ptr<float>();
    const uint8_t* Mt = M.data_ptr<uint8_t>() + o;
    float* GIt = GI.data_ptr<float>() + o;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i = b * H;
        backward_row(H, p, pgz + i, pgZ ? pgZ + o + i : zero, pgV ? pgV + o + i : zero, pgA ? pgA + o + i : zero,
                     Vt + i, At + i, Mt + i, zp + i, pgv + i, pga + i, GIt + i, pgzp + i);
      }
    });
    if (t > 0 || need_state) at::addmm_out(gz, gzp, GI[t], R);
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

// LI (shared/spec/ops.md), forward: y = alpha * y + (1 - alpha) * (X[t] W^T + bias), the product
// summed over the nonzero inputs (event) or one matmul, then the reference's elementwise order.
std::vector<at::Tensor> li_forward(const at::Tensor& X, const at::Tensor& W, const at::Tensor& alpha,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& y0, bool event) {
  const int64_t T = X.size(0), B = X.size(1), I = X.size(2), O = W.size(0), BO = B * O;
  at::Tensor Y = at::empty({T, B, O}, X.options()), y = y0.clone();
  at::Tensor C = event ? at::empty({B, O}, X.options()) : at::matmul(X, W.t()).contiguous();
  const at::Tensor WT = W.t().contiguous();
  const float *pal = alpha.data_ptr<float>(), *pb = ptr_or_null(bias);
  std::vector<float> om(O);
  for (int64_t o = 0; o < O; ++o) om[o] = 1.f - pal[o];
  float* py = y.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* d = C.data_ptr<float>();
    if (event) sparse_rows(X.data_ptr<float>() + t * B * I, B, I, WT.data_ptr<float>(), O, C.data_ptr<float>());
    else d += t * BO;
    float* Yt = Y.data_ptr<float>() + t * BO;
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
// gradient of X[t] W^T + bias); g = alpha g. Then gX = gD W, gW = sum gD^T X (over the nonzero
// inputs when event), gbias = sum gD, gy0 = g. Undefined where not asked for.
std::vector<at::Tensor> li_backward(const std::optional<at::Tensor>& gY, const std::optional<at::Tensor>& gyT,
                                    const at::Tensor& X, const at::Tensor& W, const at::Tensor& alpha, bool event,
                                    bool need_X, bool need_W, bool need_bias, bool need_y0) {
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
  if (need_W) {
    if (event) {
      at::Tensor gWT = at::zeros({I, O}, X.options());
      sparse_outer(X.data_ptr<float>(), pGD, T * B, I, O, gWT.data_ptr<float>());
      out[1] = gWT.t().contiguous();
    } else {
      out[1] = at::mm(GD2.t(), X.reshape({T * B, I}));
    }
  }
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
