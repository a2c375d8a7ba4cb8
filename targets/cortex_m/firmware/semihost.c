#include "semihost.h"

#include <string.h>

static int sh_call(int op, void *arg) {
  register int r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

int sh_open(const char *path, int mode) {
  uint32_t a[3] = {(uint32_t)path, (uint32_t)mode, (uint32_t)strlen(path)};
  return sh_call(0x01, a);
}

int sh_read(int fd, void *buf, uint32_t n) {
  uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n};
  int left = sh_call(0x06, a); /* bytes not read */
  return left < 0 || (uint32_t)left > n ? -1 : (int)(n - (uint32_t)left);
}

int sh_write(int fd, const void *buf, uint32_t n) {
  uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n};
  return sh_call(0x05, a);
}

int sh_close(int fd) {
  uint32_t a[1] = {(uint32_t)fd};
  return sh_call(0x02, a);
}

void sh_puts(const char *s) { sh_call(0x04, (void *)s); }

void sh_exit(int code) {
  uint32_t a[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
  sh_call(0x20, a); /* SYS_EXIT_EXTENDED: the exit status reaches the host */
  for (;;) {
  }
}
