/* vmm/ptrace/stub_blob.S - the stub program (vmm/ptrace/stub/stub.c, built
 * on its own into STUB_ELF) as bytes in libvmm: forkvm starts it from a
 * memfd, so it needs no file on the host nor in a jail. */
	.section .rodata.forkvm_stub, "a"
	.balign 16
	.globl ptrace_stub_elf
ptrace_stub_elf:
	.incbin STUB_ELF
	.globl ptrace_stub_elf_end
ptrace_stub_elf_end:
	.section .note.GNU-stack, "", @progbits
