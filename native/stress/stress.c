/*
 * faultline-stress: how stress-cpu, stress-memory and stress-io start their stressors, and the
 * built-in burners they use where stress-ng is not installed.
 *
 *   faultline-stress gate PROGRAM [ARGS...]
 *     Reads one byte from stdin. "g": stdin becomes /dev/null, SIGPIPE is ignored and PROGRAM
 *     (an absolute path) is exec'd in place. EOF (the agent died before releasing it) or anything else: exit 125
 *     without running PROGRAM. While the gate blocks, the agent moves it into every cgroup of
 *     the target and sets its oom_score_adj, so PROGRAM runs its first instruction there,
 *     charged to the target.
 *
 *   faultline-stress cpu LOAD PERIOD_US DEADLINE
 *     Burns LOAD % (1-100) of one CPU: in every period it runs until its own CPU time has grown
 *     by LOAD % of the period, then sleeps to the end of the period. Counting CPU time rather
 *     than wall time keeps the load exact when other work shares the CPU.
 *   faultline-stress vm BYTES DEADLINE
 *     Maps BYTES of anonymous memory, locks it (mlock; where that is refused it reads every page
 *     once a second instead, so the pages stay on the active list), writes every page once and
 *     holds it: the charge rises once and stays.
 *   faultline-stress io MODE BYTES BLOCK DIR DEADLINE
 *     MODE write, read or readwrite: sequential passes over an unnamed file of BYTES in DIR
 *     (O_TMPFILE, else created and unlinked at once), BLOCK bytes per call, with O_DIRECT where
 *     the file system allows it (else buffered, fdatasync after each block written and the
 *     cache dropped before each read pass), so the IO reaches the device from this process.
 *
 * DEADLINE is the injection's deadline in milliseconds since the epoch (CLOCK_REALTIME), exactly
 * the agent's expiresAt: every burner exits 0 once it has passed (and only then), so none
 * outlives its injection even if the agent never comes back. No policy lives here: the agent
 * decides every number. Exit status: 0 deadline reached, 2 usage, 3 a resource could not be had
 * (the reason on stderr), 125 gate closed, 127 exec failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static unsigned long long number(const char *s, unsigned long long min, unsigned long long max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "faultline-stress: \"%s\" is not a number in %llu..%llu\n", s, min, max);
		exit(2);
	}
	return v;
}

static long long now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef long long deadline_t; /* ms since the epoch */

static int past(deadline_t deadline)
{
	return now_ns(CLOCK_REALTIME) / 1000000LL >= deadline;
}

static volatile uint64_t sink;

/* A few microseconds of integer work between two reads of the CPU clock. */
static void spin(void)
{
	uint64_t x = sink;
	int i;

	for (i = 0; i < 4096; i++)
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	sink = x;
}

static int cpu(unsigned load, long long period_ns, deadline_t deadline)
{
	long long busy_ns = period_ns * load / 100;
	long long next = now_ns(CLOCK_MONOTONIC);

	while (!past(deadline)) {
		long long start = now_ns(CLOCK_THREAD_CPUTIME_ID);
		long long now;
		struct timespec until;

		while (now_ns(CLOCK_THREAD_CPUTIME_ID) - start < busy_ns)
			spin();
		if (load >= 100)
			continue;
		next += period_ns;
		now = now_ns(CLOCK_MONOTONIC);
		if (now >= next) {
			/* the busy part overran the period (the CPU is contended): no catching up later */
			next = now;
			continue;
		}
		until.tv_sec = next / 1000000000LL;
		until.tv_nsec = next % 1000000000LL;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
			;
	}
	return 0;
}

static int vm(size_t bytes, deadline_t deadline)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t off;
	char *buf;
	int locked;

	buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (buf == MAP_FAILED) {
		perror("faultline-stress: mmap");
		return 3;
	}
	/* mlock faults every page in; past the cgroup's limit the OOM killer takes this process
	 * (the agent set its oom_score_adj to 1000) */
	locked = mlock(buf, bytes) == 0;
	/* written, not just read: a read fault would map the shared zero page and charge nothing */
	for (off = 0; off < bytes; off += page)
		buf[off] = (char)((off / page) | 1);
	while (!past(deadline)) {
		/* a second at most, and not past the deadline */
		long long left_ms = deadline - now_ns(CLOCK_REALTIME) / 1000000LL;
		struct timespec nap = { 1, 0 };

		if (left_ms < 1000) {
			nap.tv_sec = 0;
			nap.tv_nsec = (left_ms > 0 ? left_ms : 1) * 1000000L;
		}
		nanosleep(&nap, NULL);
		if (!locked)
			for (off = 0; off < bytes; off += page)
				sink += ((volatile char *)buf)[off];
	}
	return 0;
}

static int pass(int fd, char *buf, size_t block, unsigned long long bytes, int writing, int direct, deadline_t deadline)
{
	unsigned long long off;

	if (!writing && !direct)
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	for (off = 0; off + block <= bytes && !past(deadline); off += block) {
		ssize_t n = writing ? pwrite(fd, buf, block, (off_t)off) : pread(fd, buf, block, (off_t)off);
		if (n < 0 && errno == EINTR) {
			off -= block;
			continue;
		}
		if (n < 0) {
			perror(writing ? "faultline-stress: write" : "faultline-stress: read");
			return -1;
		}
		if (writing && !direct)
			fdatasync(fd);
	}
	return 0;
}

static int io(const char *mode, unsigned long long bytes, size_t block, const char *dir, deadline_t deadline)
{
	int writes = strcmp(mode, "write") == 0 || strcmp(mode, "readwrite") == 0;
	int reads = strcmp(mode, "read") == 0 || strcmp(mode, "readwrite") == 0;
	int direct = 1;
	void *buf;
	int fd;

	if (!writes && !reads) {
		fprintf(stderr, "faultline-stress: io mode is write, read or readwrite, not \"%s\"\n", mode);
		return 2;
	}
	fd = open(dir, O_TMPFILE | O_RDWR | O_DIRECT, 0600);
	if (fd < 0 && errno == EINVAL) {
		direct = 0;
		fd = open(dir, O_TMPFILE | O_RDWR, 0600);
	}
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/.faultline-stress-%d", dir, (int)getpid());
		direct = 1;
		fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_DIRECT, 0600);
		if (fd < 0 && errno == EINVAL) {
			direct = 0;
			fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
		}
		if (fd >= 0)
			unlink(path);
	}
	if (fd < 0) {
		fprintf(stderr, "faultline-stress: cannot create a file in %s: %s\n", dir, strerror(errno));
		return 3;
	}
	if (posix_memalign(&buf, 4096, block) != 0) {
		fprintf(stderr, "faultline-stress: cannot allocate a %zu-byte buffer\n", block);
		return 3;
	}
	memset(buf, 0x5a, block);
	/* reading needs something to read: one pass of writes first */
	if (!writes && pass(fd, buf, block, bytes, 1, direct, deadline) < 0)
		return 3;
	while (!past(deadline)) {
		if (writes && pass(fd, buf, block, bytes, 1, direct, deadline) < 0)
			return 3;
		if (reads && pass(fd, buf, block, bytes, 0, direct, deadline) < 0)
			return 3;
	}
	return 0;
}

static int gate(char **argv)
{
	ssize_t n;
	char c;
	int null;

	do
		n = read(STDIN_FILENO, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1 || c != 'g')
		return 125;
	null = open("/dev/null", O_RDONLY);
	if (null >= 0 && null != STDIN_FILENO) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	/* ignored stays ignored across exec: once the agent has closed its end of stderr, a late
	 * message gets EPIPE instead of killing the stressor before its deadline */
	signal(SIGPIPE, SIG_IGN);
	execv(argv[0], argv);
	fprintf(stderr, "faultline-stress: cannot run %s: %s\n", argv[0], strerror(errno));
	return 127;
}

int main(int argc, char **argv)
{
	const unsigned long long never = (unsigned long long)INT64_MAX;

	if (argc >= 3 && strcmp(argv[1], "gate") == 0)
		return gate(argv + 2);
	if (argc == 5 && strcmp(argv[1], "cpu") == 0)
		return cpu((unsigned)number(argv[2], 1, 100), (long long)number(argv[3], 1000, 10000000) * 1000LL,
			   (deadline_t)number(argv[4], 0, never));
	if (argc == 4 && strcmp(argv[1], "vm") == 0)
		return vm((size_t)number(argv[2], 1, SIZE_MAX / 2), (deadline_t)number(argv[3], 0, never));
	if (argc == 7 && strcmp(argv[1], "io") == 0)
		return io(argv[2], number(argv[3], 1, never), (size_t)number(argv[4], 4096, 64 << 20), argv[5],
			  (deadline_t)number(argv[6], 0, never));
	fprintf(stderr,
		"usage: faultline-stress gate PROGRAM [ARGS...]\n"
		"       faultline-stress cpu LOAD PERIOD_US DEADLINE\n"
		"       faultline-stress vm BYTES DEADLINE\n"
		"       faultline-stress io write|read|readwrite BYTES BLOCK DIR DEADLINE\n");
	return 2;
}
