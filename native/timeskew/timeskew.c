/*
 * faultline-timeskew: makes one process's vDSO clock_gettime, gettimeofday and time return the
 * real time plus an offset, and takes that back out. A short-lived process: every ptrace call
 * for a target happens on its single thread, and it detaches before it exits. No policy here:
 * which processes, which clocks and which offset are decided by the agent (agent/faults/time-skew).
 *
 *   faultline-timeskew inspect PID|self
 *       read only (no ptrace): the [vdso] mapping, the addresses and first 16 bytes of its
 *       clock_gettime, gettimeofday and time, and whether a Faultline page is behind them.
 *   faultline-timeskew inject PID START_TIME VDSO OFFSET_NS CLOCK_MASK SYMBOL=HEX [SYMBOL=HEX ...]
 *       stops every thread (PTRACE_SEIZE + PTRACE_INTERRUPT), checks that the [vdso] starts at
 *       VDSO and that each SYMBOL's entry holds exactly HEX, maps one page (an mmap syscall run
 *       by a stopped thread) within a rel32 jump of the vDSO, or reuses the Faultline page an
 *       earlier injection left there, fills it (page.S), writes `jmp rel32` (e9) over the first
 *       5 bytes of each SYMBOL, and detaches. clock_gettime must be among the SYMBOLs.
 *   faultline-timeskew restore PID START_TIME VDSO ADDRESS=HEX [ADDRESS=HEX ...]
 *       stops every thread; where the bytes at ADDRESS are a jmp into a Faultline page, writes
 *       HEX back (the original bytes). Bytes that are already HEX are left alone, and so are bytes
 *       that are neither (someone else's). The page stays mapped but unreachable: a thread may
 *       still be inside it (even under a signal handler), and unmapping it would crash that thread.
 *       The next inject into the same process reuses it.
 *
 * START_TIME is the process's start time (/proc/<pid>/stat field 22); once its threads are
 * stopped the helper checks it and, if the pid now belongs to another process, detaches without
 * touching anything ("gone").
 *
 * Output: one JSON line on stdout, {"ok":true,...} (exit 0) or {"ok":false,"error":CODE,
 * "message":...} (exit 1). Error codes: gone, traced, no-vdso, unsupported-vdso, vdso-moved,
 * mismatch, busy, no-room, timeout, failed. Usage errors exit 2.
 *
 * x86-64 only (the Makefile does not build it elsewhere).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

#define PAGE 4096UL
#define JMP_LEN 5
#define MAX_PATCHES 8
#define EXPECT_MAX 32
#define STOP_TIMEOUT_MS 2000
#define BUSY_RETRIES 200

/* page.S */
extern const unsigned char fl_page_start[], fl_page_end[], fl_real_clock_gettime[];
extern const unsigned char fl_fake_clock_gettime[], fl_fake_gettimeofday[], fl_fake_time[];
#define PAGE_OFF(sym) ((uint64_t)((sym) - fl_page_start))
#define OFF_SEC 8
#define OFF_NSEC 16
#define OFF_MASK 24
#define STUB_LEN 32
static const char MAGIC[8] = {'F', 'L', 'T', 'S', 'K', 'E', 'W', '1'};

static const struct {
	const char *name, *vdso_name;
	const unsigned char *fake;
} functions[] = {
	{"clock_gettime", "__vdso_clock_gettime", fl_fake_clock_gettime},
	{"gettimeofday", "__vdso_gettimeofday", fl_fake_gettimeofday},
	{"time", "__vdso_time", fl_fake_time},
};
#define NFUNCS (sizeof functions / sizeof functions[0])

/* ---- output ------------------------------------------------------------------------------ */

static void hex(char *out, const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
	out[2 * n] = 0;
}

static int unhex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return (int)(n / 2);
}

struct fail {
	const char *code;
	char message[400];
};

static int failf(struct fail *f, const char *code, const char *fmt, ...)
{
	va_list ap;
	f->code = code;
	va_start(ap, fmt);
	vsnprintf(f->message, sizeof f->message, fmt, ap);
	va_end(ap);
	return -1;
}

static int print_fail(const struct fail *f)
{
	printf("{\"ok\":false,\"error\":\"%s\",\"message\":\"", f->code);
	for (const char *p = f->message; *p; p++)
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if ((unsigned char)*p >= 0x20)
			putchar(*p);
	printf("\"}\n");
	return 1;
}

/* ---- the target's memory ------------------------------------------------------------------- */

static pid_t target;
static uint64_t target_start_time;
static int mem_fd = -1;

static int mem_read(uint64_t addr, void *buf, size_t n)
{
	return pread(mem_fd, buf, n, (off_t)addr) == (ssize_t)n ? 0 : -1;
}

/* /proc/<pid>/mem writes with FOLL_FORCE: they reach the read-only vDSO and our r-x page. */
static int mem_write(uint64_t addr, const void *buf, size_t n)
{
	return pwrite(mem_fd, buf, n, (off_t)addr) == (ssize_t)n ? 0 : -1;
}

struct mapping {
	uint64_t start, end;
	char perms[5];
	unsigned long inode;
	int vdso, stack, named;
};
static struct mapping *maps;
static size_t nmaps;

static int read_maps(struct fail *f)
{
	char path[64], line[4096];
	snprintf(path, sizeof path, "/proc/%d/maps", target);
	FILE *fp = fopen(path, "re");
	if (!fp)
		return failf(f, errno == ENOENT || errno == ESRCH ? "gone" : "failed", "%s: %s", path, strerror(errno));
	free(maps);
	maps = NULL;
	nmaps = 0;
	size_t cap = 0;
	while (fgets(line, sizeof line, fp)) {
		struct mapping m = {0};
		char name[4096] = "";
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %*s %*s %lu %4095[^\n]", &m.start, &m.end, m.perms, &m.inode, name) < 4)
			continue;
		m.vdso = strstr(name, "[vdso]") != NULL;
		m.stack = strstr(name, "[stack") != NULL;
		m.named = name[0] != 0 && name[strspn(name, " ")] != 0;
		if (nmaps == cap) {
			cap = cap ? 2 * cap : 256;
			maps = realloc(maps, cap * sizeof *maps);
			if (!maps)
				abort();
		}
		maps[nmaps++] = m;
	}
	fclose(fp);
	if (nmaps == 0)
		return failf(f, "gone", "process %d has no mappings (it exited)", target);
	return 0;
}

static const struct mapping *vdso_mapping(void)
{
	for (size_t i = 0; i < nmaps; i++)
		if (maps[i].vdso)
			return &maps[i];
	return NULL;
}

/* ---- the vDSO image ------------------------------------------------------------------------ */

struct vdso {
	uint64_t base, end;
	unsigned char *image;
	size_t size;
	uint64_t offset[NFUNCS]; /* 0: not found */
	uint64_t syscall_insn;   /* address of a `syscall` (0f 05) in the vDSO, or 0 */
	int displaced;           /* bytes of clock_gettime relocatable into the stub, or 0 */
};

/*
 * The length of one instruction from the small set compilers put in a function prologue, for
 * moving clock_gettime's first instructions into the stub. Nothing RIP-relative and no branch:
 * anything else returns 0 and the stub uses the clock_gettime syscall instead.
 */
static int prologue_insn_len(const unsigned char *p)
{
	int rex = (p[0] & 0xf0) == 0x40;
	const unsigned char *q = p + rex;
	if (p[0] == 0xf3 && p[1] == 0x0f && p[2] == 0x1e && p[3] == 0xfa)
		return 4; /* endbr64 */
	if (p[0] == 0x90)
		return 1; /* nop */
	if (q[0] >= 0x50 && q[0] <= 0x57)
		return rex + 1; /* push r64 */
	if ((q[0] == 0x89 || q[0] == 0x8b || q[0] == 0x31 || q[0] == 0x33 || q[0] == 0x85) && (q[1] & 0xc0) == 0xc0)
		return rex + 2; /* mov / xor / test reg, reg */
	if (q[0] == 0x83 && (q[1] & 0xc0) == 0xc0)
		return rex + 3; /* add / or / and / sub / xor / cmp reg, imm8 */
	if (q[0] == 0x81 && (q[1] & 0xc0) == 0xc0)
		return rex + 6; /* the same with imm32 */
	return 0;
}

static int load_vdso(struct vdso *v, struct fail *f)
{
	const struct mapping *m = vdso_mapping();
	if (!m)
		return failf(f, "no-vdso", "process %d has no [vdso] mapping (vdso=0 on the kernel command line?)", target);
	v->base = m->start;
	v->end = m->end;
	v->size = m->end - m->start;
	if (v->size > (1 << 20))
		return failf(f, "unsupported-vdso", "[vdso] of %zu bytes is larger than any known vDSO", v->size);
	v->image = malloc(v->size);
	if (!v->image)
		abort();
	if (mem_read(v->base, v->image, v->size))
		return failf(f, errno == ESRCH || errno == EIO ? "gone" : "failed", "reading the [vdso] of %d: %s", target, strerror(errno));

	const unsigned char *img = v->image;
	const Elf64_Ehdr *eh = (const void *)img;
	if (v->size < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG))
		return failf(f, "unsupported-vdso", "the [vdso] of %d is not an ELF image", target);
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64)
		return failf(f, "unsupported-vdso", "the [vdso] of %d is not x86-64 ELF64 (a 32-bit or x32 process)", target);
	if (eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_phentsize != sizeof(Elf64_Phdr) ||
	    eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > v->size ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > v->size)
		return failf(f, "unsupported-vdso", "the [vdso] ELF headers of %d are out of bounds", target);

	/* st_value is a link-time address: the image is mapped from file offset 0 at base. */
	const Elf64_Phdr *ph = (const void *)(img + eh->e_phoff), *load = NULL;
	for (int i = 0; i < eh->e_phnum && !load; i++)
		if (ph[i].p_type == PT_LOAD)
			load = &ph[i];
	const Elf64_Shdr *sh = (const void *)(img + eh->e_shoff), *dynsym = NULL;
	for (int i = 0; i < eh->e_shnum && !dynsym; i++)
		if (sh[i].sh_type == SHT_DYNSYM)
			dynsym = &sh[i];
	if (!load || !dynsym || dynsym->sh_link >= eh->e_shnum || dynsym->sh_offset + dynsym->sh_size > v->size)
		return failf(f, "unsupported-vdso", "the [vdso] of %d has no dynamic symbol table", target);
	const Elf64_Shdr *strtab = &sh[dynsym->sh_link];
	if (strtab->sh_offset + strtab->sh_size > v->size)
		return failf(f, "unsupported-vdso", "the [vdso] string table of %d is out of bounds", target);
	const Elf64_Sym *sym = (const void *)(img + dynsym->sh_offset);
	size_t nsyms = dynsym->sh_size / sizeof *sym;
	const char *names = (const char *)img + strtab->sh_offset;

	for (size_t k = 0; k < NFUNCS; k++) {
		for (int pass = 0; pass < 2 && !v->offset[k]; pass++) {
			const char *want = pass == 0 ? functions[k].vdso_name : functions[k].name;
			for (size_t i = 0; i < nsyms; i++) {
				if (sym[i].st_name >= strtab->sh_size || sym[i].st_shndx == SHN_UNDEF || ELF64_ST_TYPE(sym[i].st_info) != STT_FUNC)
					continue;
				const char *name = names + sym[i].st_name;
				if (!memchr(name, 0, strtab->sh_size - sym[i].st_name) || strcmp(name, want))
					continue;
				uint64_t off = sym[i].st_value - load->p_vaddr + load->p_offset;
				if (off >= 1 && off + EXPECT_MAX <= v->size)
					v->offset[k] = off;
				break;
			}
		}
	}
	for (size_t i = 0; i + 1 < v->size; i++)
		if (img[i] == 0x0f && img[i + 1] == 0x05) {
			v->syscall_insn = v->base + i;
			break;
		}
	if (v->offset[0]) {
		int n = 0, len;
		while (n < JMP_LEN && (len = prologue_insn_len(img + v->offset[0] + n)) > 0)
			n += len;
		v->displaced = n >= JMP_LEN && n + JMP_LEN <= (int)STUB_LEN ? n : 0;
	}
	return 0;
}

static int find_function(const char *name)
{
	for (size_t k = 0; k < NFUNCS; k++)
		if (!strcmp(functions[k].name, name))
			return (int)k;
	return -1;
}

/* Whether the 5 bytes at `b` (read at address `at`) jump into a page that starts with MAGIC. */
static int jumps_to_our_page(const unsigned char *b, uint64_t at, uint64_t *page)
{
	if (b[0] != 0xe9)
		return 0;
	int32_t rel;
	memcpy(&rel, b + 1, 4);
	uint64_t dest = at + JMP_LEN + (int64_t)rel;
	char magic[8];
	if (mem_read(dest & ~(PAGE - 1), magic, sizeof magic) || memcmp(magic, MAGIC, sizeof magic))
		return 0;
	if (page)
		*page = dest & ~(PAGE - 1);
	return 1;
}

/* ---- threads ------------------------------------------------------------------------------- */

struct thread {
	pid_t tid;
	int nsigs;
	int sigs[8]; /* signals dequeued while we held the thread: delivered again at detach */
};
static struct thread *threads;
static size_t nthreads, threads_cap;

static void sleep_us(long us)
{
	struct timespec ts = {0, us * 1000};
	nanosleep(&ts, NULL);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* waitpid for one thread with a deadline: 0 stopped (status set), 1 exited, -1 timeout or error. */
static int wait_thread(pid_t tid, int *status)
{
	long deadline = now_ms() + STOP_TIMEOUT_MS;
	for (int spin = 0;; spin++) {
		pid_t r = waitpid(tid, status, __WALL | WNOHANG);
		if (r == tid)
			return WIFSTOPPED(*status) ? 0 : 1;
		if (r < 0)
			return errno == ECHILD ? 1 : -1;
		if (now_ms() > deadline)
			return -1;
		if (spin < 200)
			sched_yield();
		else
			sleep_us(100);
	}
}

static void remember_signal(struct thread *t, int sig)
{
	if (t->nsigs < (int)(sizeof t->sigs / sizeof t->sigs[0]))
		t->sigs[t->nsigs++] = sig;
}

/*
 * After PTRACE_INTERRUPT a thread reports PTRACE_EVENT_STOP (also for a group-stop, which the
 * detach keeps), or a signal-delivery-stop if a signal came first: that signal is kept and
 * delivered again at detach.
 */
static int note_stop(struct thread *t, int status)
{
	if (status >> 16 == 0)
		remember_signal(t, WSTOPSIG(status));
	return 0;
}

static char thread_state(pid_t tid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/task/%d/stat", target, tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 'X';
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 'X';
	buf[n] = 0;
	char *close_paren = strrchr(buf, ')');
	return close_paren && close_paren[1] ? close_paren[2] : 'X';
}

/* Field 22 of /proc/<pid>/stat: with the pid it names one process for ever. */
static uint64_t start_time_of(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void detach_all(void)
{
	for (size_t i = 0; i < nthreads; i++) {
		struct thread *t = &threads[i];
		ptrace(PTRACE_DETACH, t->tid, NULL, (void *)(long)(t->nsigs ? t->sigs[0] : 0));
		for (int s = 1; s < t->nsigs; s++)
			syscall(SYS_tgkill, target, t->tid, t->sigs[s]);
	}
	nthreads = 0;
}

/* Seizes and stops every thread, scanning /proc/<pid>/task until no new thread shows up. */
static int attach_all(struct fail *f)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", target);
	for (;;) {
		int added = 0;
		DIR *d = opendir(path);
		if (!d) {
			detach_all();
			return failf(f, "gone", "process %d does not exist", target);
		}
		struct dirent *e;
		while ((e = readdir(d))) {
			pid_t tid = (pid_t)atoi(e->d_name);
			if (tid <= 0)
				continue;
			size_t i;
			for (i = 0; i < nthreads && threads[i].tid != tid; i++)
				;
			if (i < nthreads)
				continue;
			char state = thread_state(tid);
			if (state == 'Z' || state == 'X')
				continue; /* an exited thread (or a zombie leader) never stops */
			if (ptrace(PTRACE_SEIZE, tid, NULL, NULL)) {
				if (errno == ESRCH || thread_state(tid) == 'Z' || thread_state(tid) == 'X')
					continue;
				int err = errno;
				closedir(d);
				detach_all();
				return failf(f, err == EPERM ? "traced" : "failed", "PTRACE_SEIZE of thread %d: %s%s", tid, strerror(err),
					     err == EPERM ? " (is it already traced by a debugger or another tool?)" : "");
			}
			if (nthreads == threads_cap) {
				threads_cap = threads_cap ? 2 * threads_cap : 64;
				threads = realloc(threads, threads_cap * sizeof *threads);
				if (!threads)
					abort();
			}
			struct thread *t = &threads[nthreads];
			memset(t, 0, sizeof *t);
			t->tid = tid;
			int status = 0, r = 1;
			if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) == 0)
				r = wait_thread(tid, &status);
			else if (errno != ESRCH)
				r = -1;
			if (r == 1)
				continue; /* exited meanwhile */
			nthreads++; /* from here it is detached with the others, stopped or not */
			if (r < 0) {
				closedir(d);
				detach_all();
				return failf(f, "timeout", "thread %d of %d did not stop within %d ms (uninterruptible sleep?)", tid, target,
					     STOP_TIMEOUT_MS);
			}
			note_stop(t, status);
			added++;
		}
		closedir(d);
		if (!added)
			break;
	}
	if (nthreads == 0)
		return failf(f, "gone", "process %d has no live threads (it exited)", target);
	/* Stopped, it cannot exit and free its pid: this is the moment to check whose pid it is. */
	uint64_t st = start_time_of(target);
	if (target_start_time && st != target_start_time) {
		detach_all();
		return failf(f, "gone", "pid %d now belongs to another process (start time %" PRIu64 ", expected %" PRIu64 ")", target, st,
			     target_start_time);
	}
	return 0;
}

/* Whether some stopped thread is inside one of the windows (addr, addr + JMP_LEN). */
static int thread_in_windows(const uint64_t *addrs, int n, pid_t *who)
{
	for (size_t i = 0; i < nthreads; i++) {
		struct user_regs_struct regs;
		if (ptrace(PTRACE_GETREGS, threads[i].tid, NULL, &regs))
			continue;
		for (int k = 0; k < n; k++)
			if (regs.rip > addrs[k] && regs.rip < addrs[k] + JMP_LEN) {
				*who = threads[i].tid;
				return 1;
			}
	}
	return 0;
}

/*
 * Runs one syscall in the target on a stopped thread: its registers are saved, pointed at a
 * `syscall` instruction of the vDSO with orig_rax = -1 (so the kernel does not restart an
 * interrupted syscall over ours), single-stepped over it, then restored exactly; an interrupted
 * syscall of the thread is restarted as if nothing happened.
 */
static int remote_syscall(struct thread *t, uint64_t insn, long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
			  uint64_t a6, int64_t *result, struct fail *f)
{
	struct user_regs_struct saved, regs;
	if (ptrace(PTRACE_GETREGS, t->tid, NULL, &saved))
		return failf(f, "failed", "PTRACE_GETREGS of %d: %s", t->tid, strerror(errno));
	regs = saved;
	regs.rax = (uint64_t)nr;
	regs.orig_rax = (uint64_t)-1;
	regs.rdi = a1;
	regs.rsi = a2;
	regs.rdx = a3;
	regs.r10 = a4;
	regs.r8 = a5;
	regs.r9 = a6;
	regs.rip = insn;
	if (ptrace(PTRACE_SETREGS, t->tid, NULL, &regs))
		return failf(f, "failed", "PTRACE_SETREGS of %d: %s", t->tid, strerror(errno));
	for (int step = 0;; step++) {
		int status = 0;
		if (step == 16 || ptrace(PTRACE_SINGLESTEP, t->tid, NULL, NULL)) {
			ptrace(PTRACE_SETREGS, t->tid, NULL, &saved);
			return failf(f, "failed", "single-stepping thread %d over the syscall failed", t->tid);
		}
		int r = wait_thread(t->tid, &status);
		if (r == 1)
			return failf(f, "gone", "thread %d exited during the injected syscall", t->tid);
		if (r < 0) {
			/* still running the syscall: nothing safe remains but to wait for it */
			while ((r = waitpid(t->tid, &status, __WALL)) < 0 && errno == EINTR)
				;
			if (r < 0 || !WIFSTOPPED(status))
				return failf(f, "gone", "thread %d exited during the injected syscall", t->tid);
		}
		if (ptrace(PTRACE_GETREGS, t->tid, NULL, &regs))
			return failf(f, "failed", "PTRACE_GETREGS of %d: %s", t->tid, strerror(errno));
		int event = status >> 16, sig = WSTOPSIG(status);
		if (event == 0 && sig == SIGTRAP && regs.rip == insn + 2) {
			*result = (int64_t)regs.rax;
			break;
		}
		if (event == 0 && sig != SIGTRAP)
			remember_signal(t, sig); /* dequeued before the step: delivered at detach */
		if (regs.rip != insn) {
			ptrace(PTRACE_SETREGS, t->tid, NULL, &saved);
			return failf(f, "failed", "thread %d stopped at 0x%llx instead of after the injected syscall", t->tid, regs.rip);
		}
	}
	if (ptrace(PTRACE_SETREGS, t->tid, NULL, &saved))
		return failf(f, "failed", "restoring the registers of thread %d: %s", t->tid, strerror(errno));
	return 0;
}

/* ---- inject -------------------------------------------------------------------------------- */

static int64_t distance(uint64_t a, uint64_t b)
{
	return a > b ? (int64_t)(a - b) : (int64_t)(b - a);
}

/*
 * Free pages within a rel32 jump of the vDSO, nearest first: one page from each gap between
 * mappings, keeping a page of distance from both neighbours (no VMA merge) and clear of the
 * stack's guard gap.
 */
static size_t candidate_pages(uint64_t vdso, uint64_t *out, size_t max)
{
	const uint64_t reach = (1ULL << 31) - (1ULL << 20);
	uint64_t lo_limit = vdso > reach ? vdso - reach : 0x10000, hi_limit = vdso + reach;
	if (hi_limit > 0x7ffffffff000ULL)
		hi_limit = 0x7ffffffff000ULL;
	size_t n = 0;
	for (size_t i = 0; i <= nmaps; i++) {
		uint64_t lo = i == 0 ? 0x10000 : maps[i - 1].end + PAGE;
		uint64_t hi = i == nmaps ? 0x7ffffffff000ULL : maps[i].start - PAGE;
		if (i < nmaps && maps[i].stack)
			hi = maps[i].start > (2ULL << 20) ? maps[i].start - (2ULL << 20) : 0;
		if (lo < lo_limit)
			lo = lo_limit;
		if (hi > hi_limit)
			hi = hi_limit;
		if (hi < lo + PAGE)
			continue;
		uint64_t cand = hi - PAGE <= vdso ? hi - PAGE : lo;
		size_t j;
		if (n < max)
			j = n++;
		else if (distance(cand, vdso) < distance(out[max - 1], vdso))
			j = max - 1;
		else
			continue;
		out[j] = cand; /* insertion sort by distance to the vDSO */
		for (; j > 0 && distance(out[j], vdso) < distance(out[j - 1], vdso); j--) {
			uint64_t tmp = out[j];
			out[j] = out[j - 1];
			out[j - 1] = tmp;
		}
	}
	return n;
}

/* A Faultline page an earlier injection left behind (anonymous, r-x, one page, MAGIC, same code). */
static uint64_t reusable_page(uint64_t vdso, const unsigned char *code)
{
	size_t code_off = PAGE_OFF(fl_fake_clock_gettime), code_len = (size_t)(fl_page_end - fl_fake_clock_gettime);
	unsigned char buf[PAGE];
	for (size_t i = 0; i < nmaps; i++) {
		const struct mapping *m = &maps[i];
		if (m->end - m->start != PAGE || strcmp(m->perms, "r-xp") || m->inode || m->named)
			continue;
		if (distance(m->start, vdso) > (1LL << 31) - (1LL << 20) || mem_read(m->start, buf, PAGE))
			continue;
		if (!memcmp(buf, MAGIC, sizeof MAGIC) && !memcmp(buf + code_off, code + code_off, code_len))
			return m->start;
	}
	return 0;
}

static int put_rel32_jmp(unsigned char *at, uint64_t from, uint64_t to)
{
	int64_t rel = (int64_t)(to - (from + JMP_LEN));
	if (rel > INT32_MAX || rel < INT32_MIN)
		return -1;
	int32_t r32 = (int32_t)rel;
	at[0] = 0xe9;
	memcpy(at + 1, &r32, 4);
	return 0;
}

struct patch {
	int func;
	uint64_t address;
	unsigned char expect[EXPECT_MAX];
	int expect_len;
	unsigned char jmp[JMP_LEN];
};

static int do_inject(uint64_t want_vdso, int64_t offset_ns, uint64_t mask, struct patch *p, int np, struct fail *f)
{
	struct vdso v = {0};
	if (read_maps(f) || load_vdso(&v, f))
		return -1;
	if (v.base != want_vdso)
		return failf(f, "vdso-moved", "the [vdso] of %d is at 0x%" PRIx64 ", not 0x%" PRIx64 " (it exec'd)", target, v.base, want_vdso);
	uint64_t addrs[MAX_PATCHES];
	for (int i = 0; i < np; i++) {
		if (!v.offset[p[i].func])
			return failf(f, "unsupported-vdso", "the vDSO of %d does not export %s", target, functions[p[i].func].name);
		p[i].address = addrs[i] = v.base + v.offset[p[i].func];
	}
	if (!v.syscall_insn)
		return failf(f, "unsupported-vdso", "the vDSO of %d holds no syscall instruction to run mmap with", target);

	/* Stop every thread where none is in the middle of the bytes about to change. */
	pid_t busy = 0;
	for (int attempt = 0;; attempt++) {
		if (attach_all(f))
			return -1;
		if (!thread_in_windows(addrs, np, &busy))
			break;
		detach_all();
		if (attempt == BUSY_RETRIES)
			return failf(f, "busy", "thread %d stayed inside a vDSO function entry for %d attempts", busy, BUSY_RETRIES);
		sleep_us(1000);
	}
	/* From here on the threads are stopped: re-read what could have changed meanwhile. */
	if (read_maps(f)) {
		detach_all();
		return -1;
	}
	if (!vdso_mapping() || vdso_mapping()->start != v.base) {
		detach_all();
		return failf(f, "vdso-moved", "the [vdso] of %d moved while attaching (it exec'd)", target);
	}
	for (int i = 0; i < np; i++) {
		unsigned char now[EXPECT_MAX];
		if (mem_read(p[i].address, now, (size_t)p[i].expect_len)) {
			detach_all();
			return failf(f, "gone", "reading %s of %d: %s", functions[p[i].func].name, target, strerror(errno));
		}
		if (memcmp(now, p[i].expect, (size_t)p[i].expect_len)) {
			char got[2 * EXPECT_MAX + 1];
			hex(got, now, (size_t)p[i].expect_len);
			int ours = jumps_to_our_page(now, p[i].address, NULL);
			detach_all();
			return failf(f, "mismatch", "%s of %d holds %s, not the expected bytes: %s", functions[p[i].func].name, target, got,
				     ours ? "it is already skewed by Faultline" : "another tool (a debugger, another chaos tool) changed it");
		}
	}

	/* The page: the code of page.S, the offset and mask, and the real_clock_gettime stub. */
	unsigned char page[PAGE];
	memset(page, 0xcc, sizeof page);
	memcpy(page, fl_page_start, (size_t)(fl_page_end - fl_page_start));
	int64_t sec = offset_ns / 1000000000, nsec = offset_ns % 1000000000;
	if (nsec < 0) {
		nsec += 1000000000;
		sec -= 1;
	}
	memcpy(page + OFF_SEC, &sec, 8);
	memcpy(page + OFF_NSEC, &nsec, 8);
	memcpy(page + OFF_MASK, &mask, 8);

	uint64_t at = reusable_page(v.base, page);
	int reused = at != 0;
	struct thread *runner = &threads[0];
	if (!reused) {
		uint64_t cands[16];
		size_t nc = candidate_pages(v.base, cands, 16);
		for (size_t i = 0; i < nc && !at; i++) {
			int64_t r = 0;
			if (remote_syscall(runner, v.syscall_insn, SYS_mmap, cands[i], PAGE, PROT_READ | PROT_EXEC,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, (uint64_t)-1, 0, &r, f)) {
				detach_all();
				return -1;
			}
			if ((uint64_t)r == cands[i])
				at = cands[i];
			else if (r > 0) /* a kernel without MAP_FIXED_NOREPLACE put it elsewhere */
				remote_syscall(runner, v.syscall_insn, SYS_munmap, (uint64_t)r, PAGE, 0, 0, 0, 0, &r, f);
		}
		if (!at) {
			detach_all();
			return failf(f, "no-room", "no free page within 2 GiB of the [vdso] of %d", target);
		}
	}
	uint64_t stub = at + PAGE_OFF(fl_real_clock_gettime);
	uint64_t cgt = v.base + v.offset[0];
	if (v.displaced) {
		memset(page + PAGE_OFF(fl_real_clock_gettime), 0xcc, STUB_LEN);
		memcpy(page + PAGE_OFF(fl_real_clock_gettime), v.image + v.offset[0], (size_t)v.displaced);
		put_rel32_jmp(page + PAGE_OFF(fl_real_clock_gettime) + v.displaced, stub + (uint64_t)v.displaced, cgt + (uint64_t)v.displaced);
	}
	int bad = 0;
	for (int i = 0; i < np; i++)
		bad |= put_rel32_jmp(p[i].jmp, p[i].address, at + PAGE_OFF(functions[p[i].func].fake));
	unsigned char check[PAGE];
	if (bad || mem_write(at, page, PAGE) || mem_read(at, check, PAGE) || memcmp(check, page, PAGE)) {
		int64_t r;
		if (!reused)
			remote_syscall(runner, v.syscall_insn, SYS_munmap, at, PAGE, 0, 0, 0, 0, &r, f);
		detach_all();
		return failf(f, "failed", "writing the page at 0x%" PRIx64 " in %d: %s", at, target, bad ? "out of jump range" : strerror(errno));
	}

	/* The jumps. On any failure the ones already written are put back. */
	for (int i = 0; i < np; i++) {
		unsigned char now[JMP_LEN];
		if (mem_write(p[i].address, p[i].jmp, JMP_LEN) || mem_read(p[i].address, now, JMP_LEN) || memcmp(now, p[i].jmp, JMP_LEN)) {
			int err = errno;
			for (int j = i; j >= 0; j--)
				mem_write(p[j].address, p[j].expect, JMP_LEN);
			detach_all();
			return failf(f, "failed", "patching %s of %d: %s", functions[p[i].func].name, target, strerror(err));
		}
	}
	size_t stopped = nthreads;
	detach_all();

	printf("{\"ok\":true,\"pid\":%d,\"threads\":%zu,\"vdso\":\"0x%" PRIx64 "\",\"page\":\"0x%" PRIx64 "\",\"pageReused\":%s,", target, stopped, v.base, at,
	       reused ? "true" : "false");
	printf("\"relocation\":\"%s\",\"displaced\":%d,\"patches\":[", v.displaced ? "displaced" : "syscall", v.displaced);
	for (int i = 0; i < np; i++) {
		char orig[2 * EXPECT_MAX + 1], jmp[2 * JMP_LEN + 1];
		hex(orig, p[i].expect, (size_t)p[i].expect_len);
		hex(jmp, p[i].jmp, JMP_LEN);
		printf("%s{\"symbol\":\"%s\",\"address\":\"0x%" PRIx64 "\",\"original\":\"%s\",\"patched\":\"%s\"}", i ? "," : "", functions[p[i].func].name,
		       p[i].address, orig, jmp);
	}
	printf("]}\n");
	return 0;
}

/* ---- restore ------------------------------------------------------------------------------- */

static int do_restore(uint64_t want_vdso, struct patch *p, int np, struct fail *f)
{
	if (read_maps(f))
		return -1;
	const struct mapping *m = vdso_mapping();
	if (!m || m->start != want_vdso) {
		/* exec replaced the whole address space: nothing of ours is left in it */
		printf("{\"ok\":true,\"pid\":%d,\"threads\":0,\"result\":\"vdso-moved\",\"patches\":[]}\n", target);
		return 0;
	}
	for (int i = 0; i < np; i++)
		if (p[i].address < m->start || p[i].address + (uint64_t)p[i].expect_len > m->end)
			return failf(f, "failed", "address 0x%" PRIx64 " is outside the [vdso] of %d", p[i].address, target);
	if (attach_all(f))
		return -1;
	if (read_maps(f)) {
		detach_all();
		return -1;
	}
	if (!vdso_mapping() || vdso_mapping()->start != want_vdso) {
		detach_all();
		printf("{\"ok\":true,\"pid\":%d,\"threads\":0,\"result\":\"vdso-moved\",\"patches\":[]}\n", target);
		return 0;
	}
	const char *result[MAX_PATCHES];
	int restored = 0, foreign = 0;
	for (int i = 0; i < np; i++) {
		unsigned char now[EXPECT_MAX];
		if (mem_read(p[i].address, now, (size_t)p[i].expect_len)) {
			int err = errno;
			detach_all();
			return failf(f, err == ESRCH || err == EIO ? "gone" : "failed", "reading 0x%" PRIx64 " in %d: %s", p[i].address, target, strerror(err));
		}
		if (!memcmp(now, p[i].expect, (size_t)p[i].expect_len)) {
			result[i] = "clean";
		} else if (jumps_to_our_page(now, p[i].address, NULL)) {
			if (mem_write(p[i].address, p[i].expect, (size_t)p[i].expect_len) || mem_read(p[i].address, now, (size_t)p[i].expect_len) ||
			    memcmp(now, p[i].expect, (size_t)p[i].expect_len)) {
				int err = errno;
				detach_all();
				return failf(f, "failed", "writing the original bytes back at 0x%" PRIx64 " in %d: %s", p[i].address, target, strerror(err));
			}
			result[i] = "restored";
			restored++;
		} else {
			result[i] = "foreign";
			foreign++;
		}
	}
	size_t stopped = nthreads;
	detach_all();
	printf("{\"ok\":true,\"pid\":%d,\"threads\":%zu,\"result\":\"%s\",\"patches\":[", target, stopped,
	       restored ? "restored" : foreign ? "foreign" : "clean");
	for (int i = 0; i < np; i++)
		printf("%s{\"address\":\"0x%" PRIx64 "\",\"result\":\"%s\"}", i ? "," : "", p[i].address, result[i]);
	printf("]}\n");
	return 0;
}

/* ---- inspect ------------------------------------------------------------------------------- */

static int do_inspect(struct fail *f)
{
	struct vdso v = {0};
	if (read_maps(f) || load_vdso(&v, f))
		return -1;
	printf("{\"ok\":true,\"pid\":%d,\"vdso\":\"0x%" PRIx64 "\",\"vdsoEnd\":\"0x%" PRIx64 "\",\"relocation\":\"%s\",\"displaced\":%d,\"symbols\":[", target,
	       v.base, v.end, v.displaced ? "displaced" : "syscall", v.displaced);
	int first = 1;
	for (size_t k = 0; k < NFUNCS; k++) {
		if (!v.offset[k])
			continue;
		char bytes[2 * 16 + 1];
		uint64_t page = 0;
		hex(bytes, v.image + v.offset[k], 16);
		int ours = jumps_to_our_page(v.image + v.offset[k], v.base + v.offset[k], &page);
		printf("%s{\"symbol\":\"%s\",\"address\":\"0x%" PRIx64 "\",\"offset\":%" PRIu64 ",\"bytes\":\"%s\",\"ours\":%s", first ? "" : ",",
		       functions[k].name, v.base + v.offset[k], v.offset[k], bytes, ours ? "true" : "false");
		if (ours)
			printf(",\"page\":\"0x%" PRIx64 "\"", page);
		printf("}");
		first = 0;
	}
	printf("]}\n");
	return 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int usage(void)
{
	fprintf(stderr, "usage: faultline-timeskew inspect PID|self\n"
			"       faultline-timeskew inject PID START_TIME VDSO OFFSET_NS CLOCK_MASK SYMBOL=HEX...\n"
			"       faultline-timeskew restore PID START_TIME VDSO ADDRESS=HEX...\n");
	return 2;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || *end || end == s ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct fail f = {0};
	if (argc < 3)
		return usage();
	const char *mode = argv[1];
	if (!strcmp(mode, "inspect") && !strcmp(argv[2], "self")) {
		target = getpid();
	} else {
		uint64_t pid;
		if (parse_u64(argv[2], &pid) || pid < 1 || pid > 4194304)
			return usage();
		target = (pid_t)pid;
	}

	/*
	 * Nothing may interrupt us between stopping a thread and detaching it: block every signal
	 * that can be blocked (a write to a closed stdout then fails with EPIPE instead of killing us).
	 */
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);

	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", target);
	mem_fd = open(path, (strcmp(mode, "inspect") ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (mem_fd < 0)
	{
		failf(&f, errno == ENOENT || errno == ESRCH ? "gone" : "failed", "%s: %s", path, strerror(errno));
		return print_fail(&f);
	}

	int rc;
	if (!strcmp(mode, "inspect") && argc == 3) {
		rc = do_inspect(&f);
	} else if (!strcmp(mode, "inject") && argc >= 8 && argc - 7 <= MAX_PATCHES) {
		uint64_t vdso, mask;
		char *end;
		errno = 0;
		long long offset_ns = strtoll(argv[5], &end, 10);
		if (parse_u64(argv[3], &target_start_time) || parse_u64(argv[4], &vdso) || errno || *end || parse_u64(argv[6], &mask))
			return usage();
		struct patch p[MAX_PATCHES];
		int np = 0, have_cgt = 0;
		for (int i = 7; i < argc; i++, np++) {
			char *eq = strchr(argv[i], '=');
			if (!eq)
				return usage();
			*eq = 0;
			memset(&p[np], 0, sizeof p[np]);
			p[np].func = find_function(argv[i]);
			p[np].expect_len = unhex(eq + 1, p[np].expect, EXPECT_MAX);
			if (p[np].func < 0 || p[np].expect_len < JMP_LEN)
				return usage();
			have_cgt |= p[np].func == 0;
		}
		if (!have_cgt)
			return usage();
		rc = do_inject(vdso, offset_ns, mask, p, np, &f);
	} else if (!strcmp(mode, "restore") && argc >= 6 && argc - 5 <= MAX_PATCHES) {
		uint64_t vdso;
		if (parse_u64(argv[3], &target_start_time) || parse_u64(argv[4], &vdso))
			return usage();
		struct patch p[MAX_PATCHES];
		int np = 0;
		for (int i = 5; i < argc; i++, np++) {
			char *eq = strchr(argv[i], '=');
			if (!eq)
				return usage();
			*eq = 0;
			memset(&p[np], 0, sizeof p[np]);
			if (parse_u64(argv[i], &p[np].address))
				return usage();
			p[np].expect_len = unhex(eq + 1, p[np].expect, EXPECT_MAX);
			if (p[np].expect_len < JMP_LEN)
				return usage();
		}
		rc = do_restore(vdso, p, np, &f);
	} else {
		return usage();
	}
	if (rc)
		return print_fail(&f);
	return fflush(stdout) == 0 ? 0 : 1;
}
