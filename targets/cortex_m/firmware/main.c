/* Test harness for QEMU: sequences in from input.bin, outputs to output.bin (semihosting).
 *
 * input.bin: header (6 x uint32: magic "LSNI", sequences, steps, input, output and state
 * sizes), then per sequence the initial state and `steps` input frames (float32).
 * output.bin: per sequence `steps` output frames and the final state, then a trailer
 * (magic "LSNE", SysTick ticks spent in lsnn_step as two uint32, steps run).
 * SysTick runs from the core clock; under `qemu -icount shift=0` one instruction is
 * one nanosecond, so ticks count instructions exactly (1e9 / clock per tick). */
#include <stdint.h>

#include "lsnn_model.h"
#include "lsnn_runtime.h"
#include "semihost.h"

#define MAGIC_IN 0x494E534Cu  /* "LSNI" */
#define MAGIC_END 0x454E534Cu /* "LSNE" */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

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

static void fail(const char *msg) {
  sh_puts("lsnn: ");
  sh_puts(msg);
  sh_puts("\n");
  sh_exit(2);
}

void lsnn_kernel_error(void) { fail("kernel workspace too small (raise LSNN_WORKSPACE_BYTES)"); }

static void get(int fd, void *p, uint32_t n) {
  if (n && sh_read(fd, p, n) != 0) fail("input.bin ended early");
}

static void put(int fd, const void *p, uint32_t n) {
  if (n && sh_write(fd, p, n) != 0) fail("cannot write output.bin");
}

int main(void) {
  uint32_t h[6];
  int in = sh_open("input.bin", 1);
  if (in < 0) fail("cannot open input.bin");
  int out = sh_open("output.bin", 5);
  if (out < 0) fail("cannot create output.bin");
  get(in, h, sizeof h);
  if (h[0] != MAGIC_IN) fail("input.bin is not an lsnn input file");
  if (h[3] != LSNN_INPUT_SIZE || h[4] != LSNN_OUTPUT_SIZE || h[5] != LSNN_STATE_SIZE)
    fail("input.bin was written for another model (sizes differ)");
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7; /* core clock, interrupt on wrap, enabled */
  while (SYST_CVR == 0) {
  }
  uint64_t spent = 0;
  lsnn_init();
  for (uint32_t s = 0; s < h[1]; s++) {
    get(in, state, LSNN_STATE_SIZE * sizeof(float));
    lsnn_load_state(state);
    for (uint32_t t = 0; t < h[2]; t++) {
      get(in, x, LSNN_INPUT_SIZE * sizeof(float));
      uint64_t t0 = ticks();
      lsnn_step(x, y);
      spent += ticks() - t0;
      put(out, y, LSNN_OUTPUT_SIZE * sizeof(float));
    }
    lsnn_save_state(state);
    put(out, state, LSNN_STATE_SIZE * sizeof(float));
  }
  uint32_t trailer[4] = {MAGIC_END, (uint32_t)spent, (uint32_t)(spent >> 32), h[1] * h[2]};
  put(out, trailer, sizeof trailer);
  sh_close(out);
  sh_close(in);
  return 0;
}
