/* Bare-metal start-up for Cortex-M: vector table, FPU on, .data copied, .bss zeroed, main(). */
#include <stdint.h>

#include "semihost.h"

extern uint32_t __stack_top__, __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
int main(void);

void Reset_Handler(void) {
  *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: CP10 and CP11 (FPU, Helium) full access */
  __asm__ volatile("dsb\n\tisb");
  for (uint32_t *s = &__data_load__, *d = &__data_start__; d < &__data_end__;) *d++ = *s++;
  for (uint32_t *d = &__bss_start__; d < &__bss_end__;) *d++ = 0;
  sh_exit(main());
}

void Fault_Handler(void) {
  sh_puts("lsnn: hard fault\n");
  sh_exit(3);
}

void Default_Handler(void) {
  sh_puts("lsnn: unexpected interrupt\n");
  sh_exit(3);
}

void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((section(".vectors"), used)) void (*const lsnn_vectors[16])(void) = {
    (void (*)(void))&__stack_top__, Reset_Handler, Default_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    SysTick_Handler};
