/* What TVM-generated kernels need at run time: a workspace for scratch arrays of 1 KiB or more. */
#ifndef LSNN_RUNTIME_H
#define LSNN_RUNTIME_H
#include <stdint.h>

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code, int dtype_bits);
int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr);
/* Called when the workspace is too small (LSNN_WORKSPACE_BYTES); weak, override it to report. */
void lsnn_kernel_error(void);
#endif
