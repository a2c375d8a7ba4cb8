/* The floor of a batch-1 LSTM-128 sequence on one core: what the compiled CPU kernel
 * (targets/cpu/lstm.py) is measured against; not a test.
 *
 *     gcc -O3 -march=native bench/benchmarks/lstm_l2_floor.c -o /tmp/lstm_l2_floor && /tmp/lstm_l2_floor
 *
 * At batch 1 every step reads all of R^T (128 x 512 floats, 256 KiB: more than L1, all in L2)
 * for one matrix-vector product, so a sequence of T = 840 steps streams 220 MB from L2. This
 * prints, best of 30 (AVX-512 needed):
 *   - the core's read bandwidth from L2 (a 256 KiB buffer read over and over) and the time those
 *     220 MB take at it;
 *   - the recurrent product alone (gates = P + h @ R^T, four gates of 16 units in 4 vector
 *     registers over all k), with R^T as ONNX gives it, [H, 4H] (a block reads 64 bytes of
 *     each gate from rows 2 KiB apart), and blocked as the kernel takes it since 2026-12-01
 *     ([H/16, H, 4, 16], lsnn.targets.cpu.lstm.recurrent_layout: read in order);
 *   - the kernel's step: blocked, with the LSTM cell of each block computed from its registers
 *     while the next block's rows stream in, and the new h into the other half of a two-step
 *     buffer.
 * The cell's tanh and sigmoid are the same rational functions as lsnn.targets.cpu.fastmath
 * (coefficients rounded: the time, not the values, is what counts here).
 */
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifndef __AVX512F__
#error "AVX-512 needed: build with -march=native on an AVX-512 machine"
#endif

#define H 128
#define G (4 * H)
#define STEPS 840
#define CHUNK 64 /* rows of P, as the kernel's ROWS at batch 1 */

static float RT[H * G] __attribute__((aligned(64)));  /* [H, 4H] */
static float RTb[H * G] __attribute__((aligned(64))); /* [H/16, H, 4, 16] */
static float P[CHUNK * G] __attribute__((aligned(64)));
static float hs[2][H] __attribute__((aligned(64)));
static float cs[H] __attribute__((aligned(64)));
static int buf[256 * 1024 / 4] __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline __m512 tanh16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-7.9053f)), _mm512_set1_ps(7.9053f));
    __m512 x2 = _mm512_mul_ps(x, x), p = _mm512_set1_ps(-2.76e-16f), q = _mm512_set1_ps(1.198e-6f);
    static const float a[] = {2.0e-13f, -8.6e-11f, 5.12e-8f, 1.486e-5f, 6.37e-4f, 4.89e-3f};
    static const float b[] = {1.185e-4f, 2.268e-3f, 4.89e-3f};
    for (int i = 0; i < 6; i++) p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(a[i]));
    for (int i = 0; i < 3; i++) q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(b[i]));
    return _mm512_div_ps(_mm512_mul_ps(x, p), q);
}

static inline __m512 sigmoid16(__m512 x) {
    __m512 half = _mm512_set1_ps(0.5f);
    return _mm512_fmadd_ps(half, tanh16(_mm512_mul_ps(half, x)), half);
}

/* the cell of units u .. u+16 from gates i, o, f, g; h into hn and into P's row (the readout's) */
static inline void cell(float *p, float *hn, int u, __m512 i, __m512 o, __m512 f, __m512 g) {
    __m512 c = _mm512_fmadd_ps(sigmoid16(f), _mm512_load_ps(cs + u), _mm512_mul_ps(sigmoid16(i), tanh16(g)));
    __m512 h = _mm512_mul_ps(sigmoid16(o), tanh16(c));
    _mm512_store_ps(cs + u, c);
    _mm512_store_ps(hn + u, h);
    _mm512_store_ps(p + u, h);
}

/* gates of units u .. u+16 (columns u, H+u, 2H+u, 3H+u): P's row plus h @ R^T, k in order; row k
 * of the four gates at r(k) + 0, 1, 2, 3 times `gate` */
#define GATES(p, h, u, r, gate)                                                                  \
    __m512 a0 = _mm512_load_ps(p + u), a1 = _mm512_load_ps(p + H + u),                          \
           a2 = _mm512_load_ps(p + 2 * H + u), a3 = _mm512_load_ps(p + 3 * H + u);               \
    for (int k = 0; k < H; k++) {                                                                \
        __m512 hk = _mm512_set1_ps(h[k]);                                                        \
        const float *rk = r;                                                                     \
        a0 = _mm512_fmadd_ps(hk, _mm512_load_ps(rk), a0);                                        \
        a1 = _mm512_fmadd_ps(hk, _mm512_load_ps(rk + gate), a1);                                 \
        a2 = _mm512_fmadd_ps(hk, _mm512_load_ps(rk + 2 * gate), a2);                             \
        a3 = _mm512_fmadd_ps(hk, _mm512_load_ps(rk + 3 * gate), a3);                             \
    }
#define STRIDED(u) (RT + k * G + (u))            /* [H, 4H]: gates H floats apart */
#define BLOCKED(u) (RTb + ((u) / 16 * H + k) * 64) /* [H/16, H, 4, 16]: gates 16 floats apart */

static void product_strided(void) {
    for (int t = 0; t < STEPS; t++) {
        float *p = P + (t % CHUNK) * G;
        for (int u = 0; u < H; u += 16) {
            GATES(p, hs[0], u, STRIDED(u), H)
            _mm512_store_ps(p + u, a0), _mm512_store_ps(p + H + u, a1);
            _mm512_store_ps(p + 2 * H + u, a2), _mm512_store_ps(p + 3 * H + u, a3);
        }
    }
}

static void product_blocked(void) {
    for (int t = 0; t < STEPS; t++) {
        float *p = P + (t % CHUNK) * G;
        for (int u = 0; u < H; u += 16) {
            GATES(p, hs[0], u, BLOCKED(u), 16)
            _mm512_store_ps(p + u, a0), _mm512_store_ps(p + H + u, a1);
            _mm512_store_ps(p + 2 * H + u, a2), _mm512_store_ps(p + 3 * H + u, a3);
        }
    }
}

static void step_blocked(void) {
    for (int t = 0; t < STEPS; t++) {
        float *p = P + (t % CHUNK) * G;
        for (int u = 0; u < H; u += 16) {
            GATES(p, hs[t & 1], u, BLOCKED(u), 16)
            cell(p, hs[(t & 1) ^ 1], u, a0, a1, a2, a3);
        }
    }
}

static double l2_read_gbs(void) {
    const int n = sizeof buf / sizeof buf[0], reps = 4000;
    __m512i s = _mm512_setzero_si512(), s1 = s, s2 = s, s3 = s;
    double t = now();
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < n; i += 64) {
            s = _mm512_xor_si512(s, _mm512_load_si512(buf + i));
            s1 = _mm512_xor_si512(s1, _mm512_load_si512(buf + i + 16));
            s2 = _mm512_xor_si512(s2, _mm512_load_si512(buf + i + 32));
            s3 = _mm512_xor_si512(s3, _mm512_load_si512(buf + i + 48));
        }
    t = now() - t;
    volatile int sink = _mm512_reduce_add_epi32(_mm512_xor_si512(_mm512_xor_si512(s, s1), _mm512_xor_si512(s2, s3)));
    (void)sink;
    return (double)reps * sizeof buf / t / 1e9;
}

int main(void) {
    for (int i = 0; i < H * G; i++) RT[i] = ((i * 2654435761u) % 1000) * 1e-4f - 0.05f;
    for (int u = 0; u < H / 16; u++)
        for (int k = 0; k < H; k++)
            for (int g = 0; g < 4; g++)
                for (int j = 0; j < 16; j++) RTb[((u * H + k) * 4 + g) * 16 + j] = RT[k * G + g * H + u * 16 + j];
    for (int i = 0; i < (int)(sizeof buf / sizeof buf[0]); i++) buf[i] = i;
    double gbs = 0;
    for (int r = 0; r < 5; r++) {
        double g = l2_read_gbs();
        if (g > gbs) gbs = g;
    }
    printf("L2 read: %.1f GB/s; all of R^T every step: %.3f ms per sequence\n", gbs,
           (double)STEPS * sizeof RT / gbs / 1e6);
    void (*run[])(void) = {product_strided, product_blocked, step_blocked};
    const char *name[] = {"recurrent product alone, R^T [H, 4H]", "recurrent product alone, R^T blocked",
                          "the kernel's step (blocked, cell per block)"};
    double best[3] = {1e9, 1e9, 1e9};
    for (int r = 0; r < 30; r++)
        for (int v = 0; v < 3; v++) {
            for (int i = 0; i < CHUNK * G; i++) P[i] = 0.01f;
            memset(hs, 0, sizeof hs), memset(cs, 0, sizeof cs);
            double t = now();
            run[v]();
            t = now() - t;
            if (t < best[v]) best[v] = t;
        }
    for (int v = 0; v < 3; v++) printf("%s: %.3f ms per sequence\n", name[v], best[v] * 1e3);
    return 0;
}
