/* Arm semihosting: file I/O and exit through the debugger, no drivers needed. Under lsnn's
 * QEMU runner the debugger is lsnn itself, which serves input.bin, output.bin and the console. */
#ifndef LSNN_SEMIHOST_H
#define LSNN_SEMIHOST_H
#include <stdint.h>

int sh_open(const char *path, int mode); /* mode 1: read binary, 5: write binary; -1 on error */
int sh_read(int fd, void *buf, uint32_t n);        /* bytes read (0 at the end), -1 on error */
int sh_write(int fd, const void *buf, uint32_t n); /* 0 when all n bytes were written */
int sh_close(int fd);
void sh_puts(const char *s);
void sh_exit(int code) __attribute__((noreturn));
#endif
