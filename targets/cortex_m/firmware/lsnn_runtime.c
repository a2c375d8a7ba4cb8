/* A static, last-in-first-out workspace for TVM kernels: no heap. */
#include "lsnn_runtime.h"

#ifndef LSNN_WORKSPACE_BYTES
#define LSNN_WORKSPACE_BYTES 8192
#endif

static uint8_t lsnn_workspace[LSNN_WORKSPACE_BYTES > 0 ? LSNN_WORKSPACE_BYTES : 8] __attribute__((aligned(8)));
static uint32_t lsnn_workspace_top;

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code, int dtype_bits) {
  (void)device_type, (void)device_id, (void)dtype_code, (void)dtype_bits;
  uint32_t n = (uint32_t)((nbytes + 7u) & ~7u);
  if (nbytes > LSNN_WORKSPACE_BYTES || lsnn_workspace_top + n > LSNN_WORKSPACE_BYTES) return 0;
  void *p = lsnn_workspace + lsnn_workspace_top;
  lsnn_workspace_top += n;
  return p;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr) {
  (void)device_type, (void)device_id;
  uint32_t off = (uint32_t)((uint8_t *)ptr - lsnn_workspace);
  if (off >= lsnn_workspace_top) return -1;
  lsnn_workspace_top = off;
  return 0;
}

__attribute__((weak)) void lsnn_kernel_error(void) {
  for (;;) {
  }
}
