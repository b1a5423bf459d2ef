/* vmm/cpu.c - see cpu.h. */
#include "cpu.h"

#include <signal.h>

bool cpu_exc_has_error_code(unsigned v)
{
	return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
}

const char *cpu_exc_name(unsigned v)
{
	static const char *const names[32] = {
		"#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
		"#BR bound range", "#UD invalid opcode", "#NM device not available",
		"#DF double fault", "coprocessor overrun", "#TS invalid TSS",
		"#NP segment not present", "#SS stack fault", "#GP general protection",
		"#PF page fault", "reserved-15", "#MF x87 floating point", "#AC alignment check",
		"#MC machine check", "#XM SIMD floating point", "#VE virtualization",
		"#CP control protection", "reserved-22", "reserved-23", "reserved-24",
		"reserved-25", "reserved-26", "reserved-27", "#HV", "#VC", "#SX security",
		"reserved-31",
	};
	return v < 32 ? names[v] : "interrupt";
}

int cpu_exc_signal(unsigned v)
{
	switch (v) {
	case 0:
	case 16:
	case 19:
		return SIGFPE;
	case 1:
	case 3:
		return SIGTRAP;
	case 6:
		return SIGILL;
	case 11:
	case 12:
	case 17:
		return SIGBUS;
	default:
		return SIGSEGV;
	}
}
