/* Adam over fp32 master weights whose gradients arrive in bf16, writing the bf16 copies, in one
 * pass over memory. Loaded by components/train/native.py; used by precision.MasterWeightAdam.
 *
 * Why C: torch has no kernel that reads a bf16 gradient, updates fp32 Adam state and writes a
 * bf16 copy. Composed from torch kernels (widen the gradient, fused Adam, narrow the master: the
 * fallback in precision.py) the same bytes move through three kernels and ~200 calls a step; on
 * the prod model a bf16 step is 2-4 ms (1-3%) faster, measured step against step in one process.
 *
 * The arithmetic is that of torch's fused CPU Adam for float (FusedAdamKernel.cpp, vectorized
 * path) operation for operation, with fused multiply-adds exactly where it has them (compiled
 * with -ffp-contract=off so the compiler adds none), so masters, Adam state and copies are
 * bit-identical to bf16 autocast + torch.optim.Adam(fused=True). (For a tensor whose size is not
 * a multiple of 16 x threads torch runs its last elements through a scalar loop that rounds
 * once more; there the two may differ in the last bit.)
 *
 * Built without -march: the update loop is compiled for x86-64-v4 (AVX-512) and x86-64-v3
 * (AVX2 + FMA) and picked at load time, so one build serves every x86-64 machine;
 * recap_master_adam_supported() says whether this CPU has a vector clone.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  float lerp_weight;           /* 1 - beta1 */
  float beta2;
  float sq_weight;             /* 1 - beta2 */
  float bias_correction2_sqrt; /* sqrt(1 - beta2^step) */
  float eps;
  float neg_step_size;         /* -lr / (1 - beta1^step) */
  float weight_decay;
  int32_t maximize;
} adam_hyper;

typedef struct {
  int64_t count;
  const int64_t* sizes;
  float* const* masters;
  const uint16_t* const* grads;
  float* const* exp_avgs;
  float* const* exp_avg_sqs;
  uint16_t* const* copies;
  const adam_hyper* hyper;
  int64_t begin, end; /* this worker's share: elements counted across the tensors in order */
} share;

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
static void update(int64_t n, float* restrict p, const uint16_t* restrict g, float* restrict m, float* restrict v,
                   uint16_t* restrict c, adam_hyper h) {
  const int small = fabsf(h.lerp_weight) < 0.5f; /* torch's lerp picks its formula the same way */
  const float coeff = small ? h.lerp_weight : h.lerp_weight - 1.0f;
  const float sign = h.maximize ? -1.0f : 1.0f;
  for (int64_t i = 0; i < n; i++) {
    const uint32_t grad_bits = (uint32_t)g[i] << 16; /* bf16 -> fp32 is exact */
    float grad;
    memcpy(&grad, &grad_bits, sizeof grad);
    grad *= sign;
    if (h.weight_decay != 0.0f) grad = fmaf(p[i], h.weight_decay, grad);
    const float m0 = m[i];
    const float exp_avg = fmaf(coeff, grad - m0, small ? m0 : grad);
    const float exp_avg_sq = fmaf(h.sq_weight * grad, grad, v[i] * h.beta2);
    m[i] = exp_avg;
    v[i] = exp_avg_sq;
    const float master = p[i] + (h.neg_step_size * exp_avg) / (sqrtf(exp_avg_sq) / h.bias_correction2_sqrt + h.eps);
    p[i] = master;
    uint32_t bits; /* fp32 -> bf16, round to nearest even, NaN -> quiet NaN: c10::BFloat16's rule */
    memcpy(&bits, &master, sizeof bits);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    c[i] = (uint16_t)((bits & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
  }
}

static void* run_share(void* arg) {
  const share* s = (const share*)arg;
  int64_t offset = 0;
  for (int64_t t = 0; t < s->count && offset < s->end; offset += s->sizes[t], t++) {
    const int64_t lo = s->begin > offset ? s->begin - offset : 0;
    const int64_t hi = s->end - offset < s->sizes[t] ? s->end - offset : s->sizes[t];
    if (lo < hi)
      update(hi - lo, s->masters[t] + lo, s->grads[t] + lo, s->exp_avgs[t] + lo, s->exp_avg_sqs[t] + lo,
             s->copies[t] + lo, s->hyper[t]);
  }
  return NULL;
}

int recap_master_adam_supported(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* Updates `count` tensors, their elements split evenly over `threads` threads (the caller's among
 * them); every element's result is the same however the split falls. */
void recap_master_adam_bf16(int64_t count, const int64_t* sizes, float* const* masters, const uint16_t* const* grads,
                            float* const* exp_avgs, float* const* exp_avg_sqs, uint16_t* const* copies,
                            const adam_hyper* hyper, int32_t threads) {
  enum { MAX_THREADS = 64 };
  threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
  int64_t total = 0;
  for (int64_t t = 0; t < count; t++) total += sizes[t];
  share shares[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int32_t k = 0; k < threads; k++) {
    /* boundaries on multiples of 16 elements: whole cache lines of fp32 per thread */
    const int64_t begin = k == 0 ? 0 : shares[k - 1].end;
    const int64_t end = k == threads - 1 ? total : (total * (k + 1) / threads) / 16 * 16;
    shares[k] = (share){count, sizes, masters, grads, exp_avgs, exp_avg_sqs, copies, hyper, begin, end < begin ? begin : end};
  }
  for (int32_t k = 1; k < threads; k++) started[k] = pthread_create(&ids[k], NULL, run_share, &shares[k]) == 0;
  run_share(&shares[0]);
  for (int32_t k = 1; k < threads; k++) {
    if (started[k]) pthread_join(ids[k], NULL);
    else run_share(&shares[k]); /* no thread to be had: this one does the share */
  }
}
