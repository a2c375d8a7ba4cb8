/* Test harness for QEMU: sequences in from input.bin, outputs to output.bin (semihosting;
 * lsnn's QEMU runner serves these two files and the console, and nothing else).
 *
 * input.bin: header (6 x uint32: magic "LSNI", sequences, steps, input, output and state
 * sizes), then per sequence the initial state and `steps` input frames (float32).
 * output.bin: per sequence `steps` output frames and the final state, then a trailer
 * (magic "LSNE", SysTick ticks spent in lsnn_step as two uint32, steps run).
 * SysTick runs from the core clock; under `qemu -icount shift=0` one instruction is
 * one nanosecond, so ticks count instructions exactly (1e9 / clock per tick). */
#include <stdint.h>
#include <string.h>

#include "lsnn_model.h"
#include "lsnn_runtime.h"
#include "semihost.h"

#define MAGIC_IN 0x494E534Cu  /* "LSNI" */
#define MAGIC_END 0x454E534Cu /* "LSNE" */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define IO_BYTES 16384 /* input and output pass through buffers: few host calls */

static float x[LSNN_INPUT_SIZE > 0 ? LSNN_INPUT_SIZE : 1];
static float y[LSNN_OUTPUT_SIZE > 0 ? LSNN_OUTPUT_SIZE : 1];
static float state[LSNN_STATE_SIZE > 0 ? LSNN_STATE_SIZE : 1];
static volatile uint32_t wraps;

void SysTick_Handler(void) { wraps++; }

static uint64_t ticks(void) {
  uint32_t hi, lo;
  do {
    hi = wraps;
    lo = SYST_CVR;
  } while (hi != wraps);
  return ((uint64_t)hi << 24) + (0xFFFFFFu - lo);
}

/* A host call stops the emulated core, and QEMU's clock may move on meanwhile. After one, the
 * next step restarts SysTick from its reload value: the ticks counted from then on depend only
 * on the instructions run since, so every run of the same input counts the same. */
static int host_called;

static void restart_systick(void) {
  SYST_CVR = 0;
  while (SYST_CVR == 0) {
  }
  host_called = 0;
}

static void fail(const char *msg) {
  sh_puts("lsnn: ");
  sh_puts(msg);
  sh_puts("\n");
  sh_exit(2);
}

void lsnn_kernel_error(void) { fail("kernel workspace too small (raise LSNN_WORKSPACE_BYTES)"); }

static struct {
  uint8_t data[IO_BYTES];
  uint32_t pos, len;
  int fd;
} in;
static struct {
  uint8_t data[IO_BYTES];
  uint32_t len;
  int fd;
} out;

static void get(void *p, uint32_t n) {
  for (uint8_t *d = p; n;) {
    if (in.pos == in.len) {
      int got = sh_read(in.fd, in.data, IO_BYTES);
      host_called = 1;
      if (got <= 0) fail("input.bin ended early");
      in.pos = 0;
      in.len = (uint32_t)got;
    }
    uint32_t k = n < in.len - in.pos ? n : in.len - in.pos;
    memcpy(d, in.data + in.pos, k);
    in.pos += k, d += k, n -= k;
  }
}

static void flush(void) {
  if (out.len && sh_write(out.fd, out.data, out.len) != 0) fail("cannot write output.bin");
  host_called = 1;
  out.len = 0;
}

static void put(const void *p, uint32_t n) {
  for (const uint8_t *s = p; n;) {
    if (out.len == IO_BYTES) flush();
    uint32_t k = n < IO_BYTES - out.len ? n : IO_BYTES - out.len;
    memcpy(out.data + out.len, s, k);
    out.len += k, s += k, n -= k;
  }
}

int main(void) {
  uint32_t h[6];
  in.fd = sh_open("input.bin", 1);
  if (in.fd < 0) fail("cannot open input.bin");
  out.fd = sh_open("output.bin", 5);
  if (out.fd < 0) fail("cannot create output.bin");
  get(h, sizeof h);
  if (h[0] != MAGIC_IN) fail("input.bin is not an lsnn input file");
  if (h[3] != LSNN_INPUT_SIZE || h[4] != LSNN_OUTPUT_SIZE || h[5] != LSNN_STATE_SIZE)
    fail("input.bin was written for another model (sizes differ)");
  SYST_RVR = 0xFFFFFFu;
  SYST_CSR = 7; /* core clock, interrupt on wrap, enabled */
  restart_systick();
  uint64_t spent = 0;
  lsnn_init();
  for (uint32_t s = 0; s < h[1]; s++) {
    get(state, LSNN_STATE_SIZE * sizeof(float));
    lsnn_load_state(state);
    for (uint32_t t = 0; t < h[2]; t++) {
      get(x, LSNN_INPUT_SIZE * sizeof(float));
      if (host_called) restart_systick();
      uint64_t t0 = ticks();
      lsnn_step(x, y);
      spent += ticks() - t0;
      put(y, LSNN_OUTPUT_SIZE * sizeof(float));
    }
    lsnn_save_state(state);
    put(state, LSNN_STATE_SIZE * sizeof(float));
  }
  uint32_t trailer[4] = {MAGIC_END, (uint32_t)spent, (uint32_t)(spent >> 32), h[1] * h[2]};
  put(trailer, sizeof trailer);
  flush();
  sh_close(out.fd);
  sh_close(in.fd);
  return 0;
}
