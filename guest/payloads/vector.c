/* guest/payloads/vector.c - test payload: holds a pattern in every vector
 * register (ymm0-15 with AVX, else xmm0-15) for ROUNDS rounds of SPIN
 * iterations, and checks the registers after each round in assembly (no
 * call that could clobber them), printing "round ok" with a raw write.
 * A snapshot and restore in the middle must leave the registers intact.
 * Usage: vector [ROUNDS [SPIN]]. Exits 0 if intact, 1 if not. */
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rdi = pattern (16 x 32 bytes, then 64 bytes of scratch), rsi = rounds,
 * rdx = spin. Returns 0, or the number of rounds left at a mismatch. Only
 * caller-saved registers are used; syscall clobbers rcx and r11. */
long vec_run_sse(void *pattern, long rounds, long spin);
long vec_run_avx(void *pattern, long rounds, long spin);

#define LOAD_SSE(n) "movdqa " #n "*32(%r8), %xmm" #n "\n"
#define CHECK_SSE(n)                                \
	"movdqu %xmm" #n ", 512(%r8)\n"             \
	"mov 512(%r8), %rax\n cmp " #n "*32(%r8), %rax\n jne 9f\n" \
	"mov 520(%r8), %rax\n cmp " #n "*32+8(%r8), %rax\n jne 9f\n"
#define LOAD_AVX(n) "vmovdqa " #n "*32(%r8), %ymm" #n "\n"
#define CHECK_AVX(n)                                                  \
	"vmovdqu %ymm" #n ", 512(%r8)\n"                              \
	"mov 512(%r8), %rax\n cmp " #n "*32(%r8), %rax\n jne 9f\n"    \
	"mov 520(%r8), %rax\n cmp " #n "*32+8(%r8), %rax\n jne 9f\n"  \
	"mov 528(%r8), %rax\n cmp " #n "*32+16(%r8), %rax\n jne 9f\n" \
	"mov 536(%r8), %rax\n cmp " #n "*32+24(%r8), %rax\n jne 9f\n"
#define ALL(m) m(0) m(1) m(2) m(3) m(4) m(5) m(6) m(7) m(8) m(9) m(10) m(11) m(12) m(13) m(14) m(15)

#define RUN_BODY(LOAD, CHECK)                                                       \
	"mov %rdi, %r8\n mov %rsi, %r9\n mov %rdx, %r10\n" ALL(LOAD)                  \
	"1: mov %r10, %rax\n"                                                        \
	"2: dec %rax\n jnz 2b\n" ALL(CHECK)                                          \
	"mov $1, %eax\n mov $1, %edi\n lea msg_ok(%rip), %rsi\n mov $9, %edx\n syscall\n" \
	"dec %r9\n jnz 1b\n xor %eax, %eax\n ret\n"                                  \
	"9: mov %r9, %rax\n ret\n"

__asm__(".text\n.globl vec_run_sse\nvec_run_sse:\n" RUN_BODY(LOAD_SSE, CHECK_SSE)
	".globl vec_run_avx\nvec_run_avx:\n" RUN_BODY(LOAD_AVX, CHECK_AVX)
	".section .rodata\nmsg_ok: .ascii \"round ok\\n\"\n.text\n");

static int have_avx(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)) || !(c & (1u << 28)))
		return 0;
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6;
}

int main(int argc, char **argv)
{
	static uint8_t pat[16 * 32 + 64] __attribute__((aligned(32)));
	long rounds = argc > 1 ? atol(argv[1]) : 30, spin = argc > 2 ? atol(argv[2]) : 100000000;
	int avx = have_avx();

	for (size_t i = 0; i < 16 * 32; i++)
		pat[i] = (uint8_t)(i * 7 + 13);
	printf("vector: %s registers, %ld rounds\n", avx ? "ymm0-15 (AVX)" : "xmm0-15 (SSE)", rounds);
	fflush(stdout);
	long left = avx ? vec_run_avx(pat, rounds, spin) : vec_run_sse(pat, rounds, spin);
	if (left) {
		printf("vector registers CORRUPTED at round %ld\n", rounds - left + 1);
		return 1;
	}
	printf("vector registers intact after %ld rounds\n", rounds);
	return 0;
}
