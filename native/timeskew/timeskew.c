/*
 * faultline-timeskew: the mechanism of time-skew, and nothing else. It stops every thread of one
 * process with ptrace, writes a page and 5-byte jumps into its vDSO (or the original bytes back),
 * and detaches. Every address, every expected byte and every decision comes from the agent
 * (agent/faults/time-skew/): it parses the process's maps and vDSO ELF, picks the page address
 * and the bytes, and journals them before this runs. This program only checks, while the threads
 * are stopped, that memory still holds exactly what it was told, and refuses otherwise.
 *
 *   faultline-timeskew inject PID START_TIME OFFSET_NS CLOCK_MASK SYSCALL_ADDR DISPLACED REUSE_PAGE PAGES PATCH...
 *       PATCH = FUNCTION:ADDRESS:HEX, FUNCTION 0 clock_gettime (required), 1 gettimeofday, 2 time.
 *       Each ADDRESS must hold exactly HEX (the original bytes, at least 5); it gets `jmp rel32` (e9)
 *       to that function's replacement in the page. The page is REUSE_PAGE when that address holds
 *       a Faultline page with this build's code (an earlier skew left it: 0 for none), else the
 *       first of PAGES (comma-separated, nearest first) that an mmap(MAP_FIXED_NOREPLACE) run by a
 *       stopped thread at the `syscall` instruction SYSCALL_ADDR gets. DISPLACED > 0: that many
 *       first bytes of clock_gettime (within its HEX) are moved into the page's real_clock_gettime
 *       stub, followed by a jump back; 0: the stub uses the clock_gettime syscall.
 *   faultline-timeskew restore PID START_TIME PATCH...
 *       PATCH = ADDRESS:HEX. Where the bytes at ADDRESS jump into a Faultline page, HEX is written
 *       back. Bytes that are already HEX, or neither (someone else's), are left alone. The page
 *       stays mapped but unreachable: a thread may still be inside it.
 *
 * START_TIME is the process's start time (/proc/<pid>/stat field 22): once its threads are
 * stopped the helper checks it, and if the pid now belongs to another process it detaches without
 * touching anything.
 *
 * Output, one line on stdout:
 *   inject:  ok PAGE REUSED THREADS                     (REUSED 0 or 1)
 *   restore: ok THREADS RESULT...                       (per PATCH: restored, clean, foreign, unmapped)
 *   refusal: err CODE MESSAGE                           exit 1; nothing of the process was changed
 * CODE: gone, traced, vdso-moved, mismatch, skewed, busy, no-room, timeout, failed. Usage errors exit 2.
 *
 * x86-64 only (the Makefile does not build it elsewhere).
 */
#define _GNU_SOURCE
#include <dirent.h>
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
#define MAX_PAGES 16
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
static const unsigned char *const fakes[] = {fl_fake_clock_gettime, fl_fake_gettimeofday, fl_fake_time};
#define NFUNCS (sizeof fakes / sizeof fakes[0])

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

/* Whether the 5 bytes at `b` (read at address `at`) jump into a page that starts with MAGIC. */
static int jumps_to_our_page(const unsigned char *b, uint64_t at)
{
	if (b[0] != 0xe9)
		return 0;
	int32_t rel;
	memcpy(&rel, b + 1, 4);
	uint64_t dest = at + JMP_LEN + (int64_t)rel;
	char magic[8];
	return !mem_read(dest & ~(PAGE - 1), magic, sizeof magic) && !memcmp(magic, MAGIC, sizeof magic);
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

/*
 * Nothing may interrupt us between stopping a thread and detaching it: every signal that can be
 * blocked is (a write to a closed stdout then fails with EPIPE instead of killing us).
 */
static int open_mem(struct fail *f)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", target);
	mem_fd = open(path, O_RDWR | O_CLOEXEC);
	if (mem_fd < 0)
		return failf(f, errno == ENOENT || errno == ESRCH ? "gone" : "failed", "%s: %s", path, strerror(errno));
	return 0;
}

struct patch {
	int func;
	uint64_t address;
	unsigned char expect[EXPECT_MAX];
	int expect_len;
	unsigned char jmp[JMP_LEN];
};

/* Whether `at` holds a Faultline page with the code of this build (an earlier skew's, reusable). */
static int is_our_page(uint64_t at, const unsigned char *page)
{
	size_t code_off = PAGE_OFF(fl_fake_clock_gettime), code_len = (size_t)(fl_page_end - fl_fake_clock_gettime);
	unsigned char buf[PAGE];
	return at && !mem_read(at, buf, PAGE) && !memcmp(buf, MAGIC, sizeof MAGIC) && !memcmp(buf + code_off, page + code_off, code_len);
}

static int do_inject(int64_t offset_ns, uint64_t mask, uint64_t syscall_insn, int displaced, uint64_t reuse, const uint64_t *pages, int npages,
		     struct patch *p, int np, struct fail *f)
{
	uint64_t addrs[MAX_PATCHES];
	for (int i = 0; i < np; i++)
		addrs[i] = p[i].address;

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
	/* From here on the threads are stopped: memory is what it is, and must be what we were told. */
	for (int i = 0; i < np; i++) {
		unsigned char now[EXPECT_MAX];
		if (mem_read(p[i].address, now, (size_t)p[i].expect_len)) {
			int err = errno;
			detach_all();
			if (err == EIO) /* not mapped: exec replaced the address space since the agent read it */
				return failf(f, "vdso-moved", "0x%" PRIx64 " of %d is no longer mapped (it exec'd)", p[i].address, target);
			return failf(f, "gone", "reading 0x%" PRIx64 " of %d: %s", p[i].address, target, strerror(err));
		}
		if (memcmp(now, p[i].expect, (size_t)p[i].expect_len)) {
			int ours = jumps_to_our_page(now, p[i].address);
			detach_all();
			if (ours)
				return failf(f, "skewed", "0x%" PRIx64 " of %d already jumps into a Faultline page: it is already skewed by Faultline", p[i].address, target);
			return failf(f, "mismatch", "0x%" PRIx64 " of %d does not hold the expected bytes: another tool (a debugger, another chaos tool) changed it",
				     p[i].address, target);
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

	uint64_t at = is_our_page(reuse, page) ? reuse : 0;
	int reused = at != 0;
	struct thread *runner = &threads[0];
	for (int i = 0; i < npages && !at; i++) {
		int64_t r = 0;
		if (remote_syscall(runner, syscall_insn, SYS_mmap, pages[i], PAGE, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
				   (uint64_t)-1, 0, &r, f)) {
			detach_all();
			return -1;
		}
		if ((uint64_t)r == pages[i])
			at = pages[i];
		else if (r > 0) /* a kernel without MAP_FIXED_NOREPLACE put it elsewhere */
			remote_syscall(runner, syscall_insn, SYS_munmap, (uint64_t)r, PAGE, 0, 0, 0, 0, &r, f);
	}
	if (!at) {
		detach_all();
		return failf(f, "no-room", "none of the %d pages offered within 2 GiB of the [vdso] of %d could be mapped", npages, target);
	}
	uint64_t stub = at + PAGE_OFF(fl_real_clock_gettime);
	if (displaced) {
		memset(page + PAGE_OFF(fl_real_clock_gettime), 0xcc, STUB_LEN);
		memcpy(page + PAGE_OFF(fl_real_clock_gettime), p[0].expect, (size_t)displaced);
		put_rel32_jmp(page + PAGE_OFF(fl_real_clock_gettime) + displaced, stub + (uint64_t)displaced, p[0].address + (uint64_t)displaced);
	}
	int bad = 0;
	for (int i = 0; i < np; i++)
		bad |= put_rel32_jmp(p[i].jmp, p[i].address, at + PAGE_OFF(fakes[p[i].func]));
	unsigned char check[PAGE];
	if (bad || mem_write(at, page, PAGE) || mem_read(at, check, PAGE) || memcmp(check, page, PAGE)) {
		int64_t r;
		if (!reused)
			remote_syscall(runner, syscall_insn, SYS_munmap, at, PAGE, 0, 0, 0, 0, &r, f);
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
			return failf(f, "failed", "patching 0x%" PRIx64 " of %d: %s", p[i].address, target, strerror(err));
		}
	}
	size_t stopped = nthreads;
	detach_all();
	printf("ok 0x%" PRIx64 " %d %zu\n", at, reused, stopped);
	return 0;
}

/* ---- restore ------------------------------------------------------------------------------- */

static int do_restore(struct patch *p, int np, struct fail *f)
{
	if (attach_all(f))
		return -1;
	const char *result[MAX_PATCHES];
	for (int i = 0; i < np; i++) {
		unsigned char now[EXPECT_MAX];
		if (mem_read(p[i].address, now, (size_t)p[i].expect_len)) {
			int err = errno;
			if (err == EIO) { /* not mapped: exec replaced the address space, nothing of ours is left */
				result[i] = "unmapped";
				continue;
			}
			detach_all();
			return failf(f, err == ESRCH ? "gone" : "failed", "reading 0x%" PRIx64 " in %d: %s", p[i].address, target, strerror(err));
		}
		if (!memcmp(now, p[i].expect, (size_t)p[i].expect_len)) {
			result[i] = "clean";
		} else if (jumps_to_our_page(now, p[i].address)) {
			if (mem_write(p[i].address, p[i].expect, (size_t)p[i].expect_len) || mem_read(p[i].address, now, (size_t)p[i].expect_len) ||
			    memcmp(now, p[i].expect, (size_t)p[i].expect_len)) {
				int err = errno;
				detach_all();
				return failf(f, "failed", "writing the original bytes back at 0x%" PRIx64 " in %d: %s", p[i].address, target, strerror(err));
			}
			result[i] = "restored";
		} else {
			result[i] = "foreign";
		}
	}
	size_t stopped = nthreads;
	detach_all();
	printf("ok %zu", stopped);
	for (int i = 0; i < np; i++)
		printf(" %s", result[i]);
	printf("\n");
	return 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int usage(void)
{
	fprintf(stderr, "usage: faultline-timeskew inject PID START_TIME OFFSET_NS CLOCK_MASK SYSCALL_ADDR DISPLACED REUSE_PAGE PAGES FUNCTION:ADDRESS:HEX...\n"
			"       faultline-timeskew restore PID START_TIME ADDRESS:HEX...\n");
	return 2;
}

static int parse_u64(const char *s, uint64_t *out, char **end)
{
	char *e;
	errno = 0;
	*out = strtoull(s, &e, 0);
	if (errno || e == s || (end ? 0 : *e))
		return -1;
	if (end)
		*end = e;
	return 0;
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

/* ADDRESS:HEX, after an optional FUNCTION: when `with_func`. */
static int parse_patch(char *arg, int with_func, struct patch *p)
{
	memset(p, 0, sizeof *p);
	char *e;
	uint64_t v;
	if (with_func) {
		if (parse_u64(arg, &v, &e) || *e != ':' || v >= NFUNCS)
			return -1;
		p->func = (int)v;
		arg = e + 1;
	}
	if (parse_u64(arg, &p->address, &e) || *e != ':')
		return -1;
	p->expect_len = unhex(e + 1, p->expect, EXPECT_MAX);
	return p->expect_len < JMP_LEN ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct fail f = {0};
	if (argc < 5)
		return usage();
	const char *mode = argv[1];
	uint64_t pid;
	if (parse_u64(argv[2], &pid, NULL) || pid < 1 || pid > 4194304 || parse_u64(argv[3], &target_start_time, NULL))
		return usage();
	target = (pid_t)pid;

	struct patch p[MAX_PATCHES];
	int np = 0, rc;
	if (!strcmp(mode, "inject") && argc >= 11 && argc - 10 <= MAX_PATCHES) {
		uint64_t mask, syscall_insn, displaced, reuse, pages[MAX_PAGES];
		char *end;
		errno = 0;
		long long offset_ns = strtoll(argv[4], &end, 10);
		if (errno || *end || parse_u64(argv[5], &mask, NULL) || parse_u64(argv[6], &syscall_insn, NULL) || parse_u64(argv[7], &displaced, NULL) ||
		    parse_u64(argv[8], &reuse, NULL) || displaced > STUB_LEN - JMP_LEN || !syscall_insn)
			return usage();
		int npages = 0;
		for (char *s = argv[9]; *s; npages++) {
			if (npages == MAX_PAGES || parse_u64(s, &pages[npages], &end) || (*end && *end != ','))
				return usage();
			s = *end ? end + 1 : end;
		}
		for (int i = 10; i < argc; i++, np++)
			if (parse_patch(argv[i], 1, &p[np]))
				return usage();
		/* clock_gettime first: the displaced bytes of the stub are its. */
		if (p[0].func != 0 || (int)displaced > p[0].expect_len)
			return usage();
		if ((rc = open_mem(&f)) == 0)
			rc = do_inject(offset_ns, mask, syscall_insn, (int)displaced, reuse, pages, npages, p, np, &f);
	} else if (!strcmp(mode, "restore") && argc - 4 <= MAX_PATCHES) {
		for (int i = 4; i < argc; i++, np++)
			if (parse_patch(argv[i], 0, &p[np]))
				return usage();
		if ((rc = open_mem(&f)) == 0)
			rc = do_restore(p, np, &f);
	} else {
		return usage();
	}
	if (rc) {
		printf("err %s ", f.code);
		for (const char *c = f.message; *c; c++)
			putchar(*c == '\n' ? ' ' : *c);
		printf("\n");
		fflush(stdout);
		return 1;
	}
	return fflush(stdout) == 0 ? 0 : 1;
}
