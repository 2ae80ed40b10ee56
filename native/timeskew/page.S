/*
 * The page faultline-timeskew maps into a target process (PROT_READ|PROT_EXEC, one 4 KiB page,
 * within a rel32 jump of the vDSO). The helper copies the bytes from fl_page_start to
 * fl_page_end into it, then fills in the data words and the real_clock_gettime stub.
 * Every reference below is RIP-relative inside this section, so the assembler resolves it and
 * the bytes run wherever the page lands.
 *
 * The vDSO's clock_gettime, gettimeofday and time each get a 5-byte `jmp rel32` (e9) at their
 * entry to the fake_* function here. The fakes keep the System V ABI the vDSO offers (callee-
 * saved rbx, rbp, r12-r15; only scratch registers clobbered), so Go's and glibc's direct calls
 * into the vDSO keep working.
 *
 * Layout (offsets are part of the helper's contract, see timeskew.c):
 *   +0   magic "FLTSKEW1"       recognises a Faultline page (restore checks it before writing)
 *   +8   offset seconds         int64; offset = seconds + nanoseconds, 0 <= nanoseconds < 1e9
 *   +16  offset nanoseconds     int64
 *   +24  clock mask             bit N set: clockid N is skewed (clockids 0..63)
 *   +64  real_clock_gettime     32 bytes: the vDSO clock_gettime's displaced first instructions
 *                               + jmp back, or (default) the clock_gettime syscall
 *   +96  fake_clock_gettime, fake_gettimeofday, fake_time
 */
	.section .rodata.faultline_page, "a"
	.balign 16
	.globl fl_page_start, fl_page_end, fl_real_clock_gettime
	.globl fl_fake_clock_gettime, fl_fake_gettimeofday, fl_fake_time

fl_page_start:
	.ascii "FLTSKEW1"
offset_sec:
	.quad 0
offset_nsec:
	.quad 0
clock_mask:
	.quad 0
	.org fl_page_start + 64, 0

/* int real_clock_gettime(clockid_t, struct timespec *): the unskewed clock. */
fl_real_clock_gettime:
	mov $228, %eax			/* SYS_clock_gettime; clockid and ts are still in edi, rsi */
	syscall
	ret
	.org fl_page_start + 96, 0xcc

/* int clock_gettime(clockid_t clockid, struct timespec *ts) */
fl_fake_clock_gettime:
	endbr64
	push %rbx
	push %r12
	sub $8, %rsp			/* entry rsp = 8 mod 16: two pushes and 8 align the call */
	mov %edi, %ebx			/* clockid, zero-extended: negative (CPU, fd) clocks become > 63 */
	mov %rsi, %r12
	call fl_real_clock_gettime
	test %eax, %eax
	jnz 1f				/* an error (-errno): return it untouched */
	cmp $63, %ebx
	ja 1f
	mov clock_mask(%rip), %rdx
	bt %rbx, %rdx
	jnc 1f				/* this clock is not skewed */
	mov (%r12), %rcx
	add offset_sec(%rip), %rcx
	mov 8(%r12), %rdx
	add offset_nsec(%rip), %rdx	/* 0 <= nsec < 2e9 */
	cmp $999999999, %rdx
	jle 2f
	sub $1000000000, %rdx
	inc %rcx
2:	mov %rcx, (%r12)
	mov %rdx, 8(%r12)
	xor %eax, %eax
1:	add $8, %rsp
	pop %r12
	pop %rbx
	ret

/* int gettimeofday(struct timeval *tv, struct timezone *tz): CLOCK_REALTIME in microseconds. */
fl_fake_gettimeofday:
	endbr64
	push %rbx
	push %r12
	sub $24, %rsp			/* a struct timespec at 0(%rsp); the call stays aligned */
	mov %rdi, %rbx
	mov %rsi, %r12
	test %r12, %r12
	jz 1f
	xor %edi, %edi			/* tz wanted: the kernel fills it (gettimeofday(NULL, tz)) */
	mov %r12, %rsi
	mov $96, %eax			/* SYS_gettimeofday */
	syscall
	test %rax, %rax
	jnz 9f
1:	test %rbx, %rbx
	jz 8f
	xor %edi, %edi			/* CLOCK_REALTIME */
	mov %rsp, %rsi
	call fl_fake_clock_gettime
	test %eax, %eax
	jnz 9f
	mov (%rsp), %rax
	mov %rax, (%rbx)
	mov 8(%rsp), %rax
	imul $0x10624dd3, %rax, %rax	/* nsec / 1000 for nsec < 2^32, as the vDSO does it */
	shr $38, %rax
	mov %rax, 8(%rbx)
8:	xor %eax, %eax
9:	add $24, %rsp
	pop %r12
	pop %rbx
	ret

/* time_t time(time_t *tloc): the vDSO's time() reads the coarse realtime clock, so this does too. */
fl_fake_time:
	endbr64
	push %rbx
	sub $16, %rsp
	mov %rdi, %rbx
	mov $5, %edi			/* CLOCK_REALTIME_COARSE */
	mov %rsp, %rsi
	call fl_fake_clock_gettime
	movslq %eax, %rax
	test %rax, %rax
	jnz 1f				/* cannot happen for the coarse clock; return -errno like the syscall */
	mov (%rsp), %rax
	test %rbx, %rbx
	jz 1f
	mov %rax, (%rbx)
1:	add $16, %rsp
	pop %rbx
	ret
fl_page_end:
	.section .note.GNU-stack, "", @progbits
