/*
 * faultline-netdelay: holds the packets of one NFQUEUE queue for a while, then accepts them.
 * It is network-delay's mechanism on kernels without sch_netem. Every decision (which packets,
 * which queue, how long, until when) is made by the agent; this program only keeps time.
 *
 *   faultline-netdelay QUEUE LATENCY_US JITTER_US CORRELATION_PERCENT DEADLINE_EPOCH_S
 *   faultline-netdelay --check        bind queue 0 and unbind (the capability probe runs this
 *                                     in a throwaway network namespace)
 *
 * Per packet: release time = now (CLOCK_MONOTONIC) + latency + a jitter term drawn like netem's
 * default (no distribution table): uniform in [-jitter, +jitter), from a random sequence where
 * each value depends CORRELATION % on the previous one (netem's get_crandom()/tabledist(), see
 * net/sched/sch_netem.c). A delay below zero is zero. Packet ids wait in a min-heap keyed by
 * release time (ties keep arrival order); one ppoll() sleeps until the next release, a packet,
 * a signal or the deadline.
 *
 * Safety: the queue is bound with NFQA_CFG_F_FAIL_OPEN, so packets the queue cannot take (full
 * queue, full socket) pass undelayed instead of being dropped; the rules that feed it use
 * --queue-bypass, so when this process is gone traffic flows. At DEADLINE_EPOCH_S (wall clock)
 * or on SIGTERM/SIGINT/SIGHUP every held packet is accepted at once, the queue is unbound and
 * the process exits 0. "ready" is printed on stdout once the queue is bound; errors go to
 * stderr with exit status 1 (2 for bad arguments).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Packets held at once. Beyond it the kernel passes packets undelayed (FAIL_OPEN). */
#define QUEUE_MAXLEN 65536u
/* Netlink receive buffer: absorbs bursts of packet notifications between two reads. */
#define RCVBUF_BYTES (16u << 20)
/* Messages read per wake-up before due packets are released again (no starvation). */
#define READ_BATCH 256

struct held {
	uint64_t due_ns;
	uint64_t seq;
	uint32_t id;
};

static struct held *heap;
static size_t heap_len;
static uint64_t arrivals;

static uint64_t latency_ns, jitter_ns;
static uint32_t rho, last_random;
static uint64_t rng_state;

static int before(const struct held *a, const struct held *b)
{
	return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void heap_push(struct held h)
{
	size_t i = heap_len++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!before(&h, &heap[parent]))
			break;
		heap[i] = heap[parent];
		i = parent;
	}
	heap[i] = h;
}

static struct held heap_pop(void)
{
	struct held top = heap[0], moved = heap[--heap_len];
	size_t i = 0;
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= heap_len)
			break;
		if (child + 1 < heap_len && before(&heap[child + 1], &heap[child]))
			child++;
		if (!before(&heap[child], &moved))
			break;
		heap[i] = heap[child];
		i = child;
	}
	if (heap_len > 0)
		heap[i] = moved;
	return top;
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64, seeded from getrandom(2): fast and plenty for jitter. */
static uint32_t next_random(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* netem's get_crandom(): value = (1 - rho) * fresh + rho * previous, in 32-bit fixed point. */
static uint32_t correlated_random(void)
{
	uint32_t value = next_random();
	if (rho == 0)
		return value;
	uint64_t r = (uint64_t)rho + 1;
	last_random = (uint32_t)(((uint64_t)value * ((1ull << 32) - r) + (uint64_t)last_random * r) >> 32);
	return last_random;
}

static uint64_t delay_ns(void)
{
	if (jitter_ns == 0)
		return latency_ns;
	/* netem's tabledist() without a table, in microseconds so 2 * jitter fits in 32 bits */
	uint64_t jitter_us = jitter_ns / 1000, span = 2 * jitter_us;
	int64_t us = (int64_t)(latency_ns / 1000) - (int64_t)jitter_us + (int64_t)(correlated_random() % span);
	return us > 0 ? (uint64_t)us * 1000 : 0;
}

static void accept_packet(struct nfq_q_handle *qh, uint32_t id)
{
	/* A failure means the kernel already let go of the packet (queue flushed): nothing to do. */
	nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data)
{
	(void)msg;
	(void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	uint32_t id = ntohl(ph->packet_id);
	if (heap_len >= QUEUE_MAXLEN) {
		/* only after the kernel flushed ids we still hold (device down): never block */
		accept_packet(qh, id);
		return 0;
	}
	heap_push((struct held){ .due_ns = now_ns(CLOCK_MONOTONIC) + delay_ns(), .seq = arrivals++, .id = id });
	return 0;
}

static int fail(const char *what, int queue)
{
	fprintf(stderr, "faultline-netdelay: %s (queue %d): %s\n", what, queue, strerror(errno));
	return 1;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: faultline-netdelay QUEUE LATENCY_US JITTER_US CORRELATION_PERCENT DEADLINE_EPOCH_S\n"
			"       faultline-netdelay --check\n");
	return 2;
}

static struct nfq_q_handle *bind_queue(struct nfq_handle *h, int queue)
{
	struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
	if (!qh) {
		fail("nfq_create_queue (is another program bound to this queue?)", queue);
		return NULL;
	}
	uint32_t flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
	if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(qh, QUEUE_MAXLEN) < 0 ||
	    nfq_set_queue_flags(qh, flags, flags) < 0) {
		fail("configuring the queue (copy-meta, maxlen, fail-open)", queue);
		nfq_destroy_queue(qh);
		return NULL;
	}
	return qh;
}

int main(int argc, char **argv)
{
	uint64_t queue, latency_us, jitter_us, deadline_s;
	signal(SIGPIPE, SIG_IGN);

	if (argc == 2 && strcmp(argv[1], "--check") == 0) {
		struct nfq_handle *h = nfq_open();
		if (!h)
			return fail("nfq_open", 0);
		struct nfq_q_handle *qh = bind_queue(h, 0);
		if (!qh)
			return 1;
		nfq_destroy_queue(qh);
		nfq_close(h);
		puts("ok");
		return 0;
	}
	if (argc != 6)
		return usage();
	char *end;
	errno = 0;
	double correlation = strtod(argv[4], &end);
	if (parse_u64(argv[1], 65535, &queue) || parse_u64(argv[2], 3600000000u, &latency_us) ||
	    parse_u64(argv[3], 0x7fffffff, &jitter_us) || errno || *end || end == argv[4] || !(correlation >= 0 && correlation <= 100) ||
	    parse_u64(argv[5], UINT32_MAX * 4ull, &deadline_s))
		return usage();
	latency_ns = latency_us * 1000;
	jitter_ns = jitter_us * 1000;
	rho = (uint32_t)(correlation / 100.0 * UINT32_MAX);
	if (now_ns(CLOCK_REALTIME) / 1000000000u >= deadline_s) {
		fprintf(stderr, "faultline-netdelay: the deadline %llu has already passed\n", (unsigned long long)deadline_s);
		return 1;
	}
	if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state)
		rng_state = now_ns(CLOCK_MONOTONIC) ^ (uint64_t)getpid();
	last_random = next_random();

	heap = calloc(QUEUE_MAXLEN, sizeof *heap);
	if (!heap)
		return fail("calloc", (int)queue);

	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	sigprocmask(SIG_BLOCK, &stop_signals, NULL);
	int sfd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return fail("signalfd", (int)queue);

	struct nfq_handle *h = nfq_open();
	if (!h)
		return fail("nfq_open", (int)queue);
	nfnl_rcvbufsiz(nfq_nfnlh(h), RCVBUF_BYTES);
	struct nfq_q_handle *qh = bind_queue(h, (int)queue);
	if (!qh)
		return 1;
	int fd = nfq_fd(h);
	printf("ready\n");
	fflush(stdout);

	static char buf[65536] __attribute__((aligned));
	int stopping = 0, status = 0;
	while (!stopping) {
		uint64_t now = now_ns(CLOCK_MONOTONIC);
		while (heap_len > 0 && heap[0].due_ns <= now)
			accept_packet(qh, heap_pop().id);

		uint64_t wall = now_ns(CLOCK_REALTIME), deadline_ns = deadline_s * 1000000000u;
		if (wall >= deadline_ns)
			break;
		uint64_t wait = deadline_ns - wall;
		if (heap_len > 0 && heap[0].due_ns - now < wait)
			wait = heap[0].due_ns - now;
		struct timespec timeout = { .tv_sec = (time_t)(wait / 1000000000u), .tv_nsec = (long)(wait % 1000000000u) };
		struct pollfd fds[2] = { { .fd = fd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		if (ppoll(fds, 2, &timeout, NULL) < 0) {
			if (errno == EINTR)
				continue;
			status = fail("ppoll", (int)queue);
			break;
		}
		if (fds[1].revents)
			stopping = 1;
		if (fds[0].revents) {
			for (int i = 0; i < READ_BATCH; i++) {
				ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
				if (n > 0) {
					nfq_handle_packet(h, buf, (int)n);
					continue;
				}
				/* ENOBUFS: notifications were lost, and with FAIL_OPEN their packets passed. */
				if (n < 0 && errno == ENOBUFS)
					continue;
				if (n < 0 && errno != EAGAIN && errno != EINTR) {
					status = fail("recv", (int)queue);
					stopping = 1;
				}
				break;
			}
		}
	}
	while (heap_len > 0)
		accept_packet(qh, heap_pop().id);
	nfq_destroy_queue(qh);
	nfq_close(h);
	return status;
}
