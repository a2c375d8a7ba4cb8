/* What two threads of plain C get from this machine's cores at once, against one alone: the
 * ceiling of "all cores" for code like the compiled kernels'; not a test.
 *
 *     gcc -O2 -march=native -pthread bench/benchmarks/two_core_ceiling.c -o /tmp/two_core_ceiling && /tmp/two_core_ceiling
 *
 * Each loop runs once on one thread, then on two threads at once (the same work on each); the
 * line gives how much longer the pair took. 1.00 is two real cores to ourselves: two threads
 * then do twice the work in the same time. On a shared host the figure moves with what else
 * runs there, and it differs by kind of code:
 *   - vector FMAs, independent chains that keep the FMA units busy (what the kernels' row loops
 *     and register tiles do), 512-bit (with AVX-512) and 256-bit;
 *   - scalar integer arithmetic in dependent chains (little use of shared units).
 * A figure of 1.25 means two threads of that code cannot do better than x1.6 one thread's
 * throughput at that moment, however the work is split.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#define ROUNDS 5
#define N 20000000L

static volatile float sink_f;
static volatile long sink_i;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#ifdef __AVX512F__
static void *fma512(void *unused) {
    __m512 x[12], m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-6f);
    for (int i = 0; i < 12; i++) x[i] = _mm512_set1_ps(i * 0.1f);
    for (long n = 0; n < N; n++)
        for (int i = 0; i < 12; i++) x[i] = _mm512_fmadd_ps(x[i], m, c);
    float s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(x[i]);
    sink_f = s;
    return unused;
}
#endif

static void *fma256(void *unused) {
    __m256 x[12], m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-6f);
    for (int i = 0; i < 12; i++) x[i] = _mm256_set1_ps(i * 0.1f);
    for (long n = 0; n < N; n++)
        for (int i = 0; i < 12; i++) x[i] = _mm256_fmadd_ps(x[i], m, c);
    float s = 0;
    for (int i = 0; i < 12; i++) s += x[i][0];
    sink_f = s;
    return unused;
}

static void *scalar(void *unused) {
    long a = 1, b = 2, c = 3, d = 4;
    for (long n = 0; n < 6 * N; n++) {
        a = a * 3 + n;
        b = b * 5 + n;
        c ^= a + n;
        d += b ^ n;
    }
    sink_i = a + b + c + d;
    return unused;
}

static double timed(void *(*f)(void *), int two) {
    pthread_t other;
    double t = now();
    if (two) pthread_create(&other, NULL, f, NULL);
    f(NULL);
    if (two) pthread_join(other, NULL);
    return now() - t;
}

int main(void) {
    struct { const char *name; void *(*f)(void *); } loops[] = {
#ifdef __AVX512F__
        {"512-bit FMA", fma512},
#endif
        {"256-bit FMA", fma256},
        {"scalar integer", scalar},
    };
    int n_loops = sizeof loops / sizeof loops[0];
    printf("two threads at once take x longer than one alone, %d rounds:\n", ROUNDS);
    for (int k = 0; k < n_loops; k++) {
        printf("  %-15s", loops[k].name);
        for (int r = 0; r < ROUNDS; r++) {
            double one = timed(loops[k].f, 0), two = timed(loops[k].f, 1);
            printf(" %.2f", two / one);
        }
        printf("\n");
    }
    return 0;
}
