/*
 * faultline-iofault: a FUSE pass-through file system laid over one directory, that delays,
 * fails or corrupts the operations the agent's rules select. io-latency, io-error and
 * io-corrupt (agent/faults/shared/iofault.ts) decide everything: which directory, which rules,
 * until when, with which cache settings. This program only serves the files and keeps counts.
 *
 *   faultline-iofault --check
 *       prints "libfuse <version>" and exits 0 (the capability probe: built, and links).
 *   faultline-iofault --umount PATH
 *       umount2(PATH, MNT_DETACH | UMOUNT_NOFOLLOW); exit 0, 3 when PATH is not a mount point.
 *   faultline-iofault --mount PATH --fsname NAME --deadline EPOCH_S --attr-timeout-ms N
 *                     --direct-io 0|1 [--rule R]...
 *       fd 3: /dev/fuse, opened by the agent (a container's /dev usually has no fuse device);
 *       fd 4: the stats file (one line per rule: "<index> <seen> <faulted>"), written on SIGUSR1
 *       and at exit.
 *
 * A rule R is TYPE:OPMASK:PER10000:A:B:GLOB with TYPE d (delay A µs, uniform jitter ±B µs), e
 * (fail with errno A) or c (flip A bytes of the data a read returns); OPMASK a hexadecimal set
 * of operation bits (the OP_ list below, mirrored in iofault.ts); PER10000 the share of matching
 * operations affected, in 1/10000; GLOB an fnmatch(3) pattern (no flags: "*" crosses "/")
 * against the path relative to the directory ("" for the directory itself).
 *
 * How the real directory stays reachable: it is opened (O_PATH) before the mount is laid over
 * it, and every operation is done relative to that descriptor (openat, fstatat, ...), so the
 * daemon serves the directory underneath its own mount. Nothing is renamed or copied: when
 * the mount goes, the directory is exactly what the operations left there.
 *
 * Namespaces: the agent starts this program with libfaultline-nsexec.so preloaded, whose
 * constructor joins the target's mount namespace before main() (after libfuse was loaded from
 * the host), so PATH is the target's path and the mount is made there with mount(2); libfuse
 * is then handed the already mounted device as "/dev/fd/3".
 *
 * Permissions: the mount has default_permissions and allow_other: the kernel checks the mode
 * bits the real files report (use_ino, real st_mode/uid/gid) for every caller, and the daemon,
 * which runs as root, does what the kernel allowed. Entries are created with the caller's
 * fsuid/fsgid (setfsuid/setfsgid are per thread), so they get the owner they would have had.
 *
 * Stop: SIGTERM/SIGINT/SIGHUP or the deadline (SIGALRM) disable every rule and detach the mount
 * (MNT_DETACH); files opened through it are still served, without faults, until they are closed,
 * then the kernel ends the connection and the program exits. A second signal exits at once. The
 * mount is always detached before /dev/fuse is closed, so a clean exit never leaves a dead
 * mount; a SIGKILL does, and the agent finds it by its fsname and detaches it.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 312
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <fuse.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

enum {
	OP_OPEN, OP_READ, OP_WRITE, OP_FSYNC, OP_FLUSH, OP_RELEASE, OP_GETATTR, OP_SETATTR,
	OP_READDIR, OP_CREATE, OP_UNLINK, OP_MKDIR, OP_RMDIR, OP_RENAME, OP_LINK, OP_SYMLINK,
	OP_READLINK, OP_STATFS, OP_FALLOCATE,
};

#define MAX_RULES 32
#define FUSE_FD 3
#define STATS_FD 4

struct rule {
	char type;
	uint32_t ops;
	uint32_t per10000;
	long a, b;
	char glob[1024];
	uint64_t seen, faulted;
};

static struct rule rules[MAX_RULES];
static int nrules;
/* Rules in force: 0 once stopping (the mount is then detached and serves open files only). */
static volatile sig_atomic_t active_rules;
static volatile sig_atomic_t stopping;
static int root_fd = -1;
static const char *mountpoint;
static struct fuse *fs;
static int direct_io;
static double attr_timeout;
static int stats_pipe[2] = { -1, -1 };

static __thread uint64_t rng;

static uint64_t next_random(void)
{
	if (rng == 0 && getrandom(&rng, sizeof rng, 0) != sizeof rng)
		rng = (uint64_t)time(NULL) ^ (uint64_t)pthread_self();
	rng |= 1;
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static const char *rel(const char *path)
{
	if (path == NULL || path[0] == '\0' || (path[0] == '/' && path[1] == '\0'))
		return ".";
	return path[0] == '/' ? path + 1 : path;
}

static int matches(const struct rule *r, int op, const char *path)
{
	if (!(r->ops & (1u << op)))
		return 0;
	const char *p = path == NULL ? "" : (path[0] == '/' ? path + 1 : path);
	return fnmatch(r->glob, p, 0) == 0;
}

static int rolls(const struct rule *r)
{
	return r->per10000 >= 10000 || next_random() % 10000 < r->per10000;
}

/* Delays and errors of the rules that select this operation; 0 or -errno. */
static int inject(int op, const char *path)
{
	for (int i = 0; i < active_rules; i++) {
		struct rule *r = &rules[i];
		if (r->type == 'c' || !matches(r, op, path))
			continue;
		__atomic_fetch_add(&r->seen, 1, __ATOMIC_RELAXED);
		if (!rolls(r))
			continue;
		__atomic_fetch_add(&r->faulted, 1, __ATOMIC_RELAXED);
		if (r->type == 'e')
			return -(int)r->a;
		long us = r->a;
		if (r->b > 0)
			us += (long)(next_random() % (uint64_t)(2 * r->b + 1)) - r->b;
		if (us > 0) {
			struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
			while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
				;
		}
	}
	return 0;
}

/* Corrupt rules on the data a read returned. */
static void corrupt(const char *path, char *buf, size_t n)
{
	for (int i = 0; i < active_rules; i++) {
		struct rule *r = &rules[i];
		if (r->type != 'c' || !matches(r, OP_READ, path))
			continue;
		__atomic_fetch_add(&r->seen, 1, __ATOMIC_RELAXED);
		if (n == 0 || !rolls(r))
			continue;
		__atomic_fetch_add(&r->faulted, 1, __ATOMIC_RELAXED);
		for (long k = 0; k < r->a; k++)
			buf[next_random() % n] ^= (char)(1 + next_random() % 255);
	}
}

#define INJECT(op, path)                          \
	do {                                      \
		int injected_ = inject((op), (path)); \
		if (injected_ != 0)               \
			return injected_;         \
	} while (0)

/* Entries are created with the caller's fsuid/fsgid; per thread, restored after. */
struct as_caller { uid_t uid; gid_t gid; };

static struct as_caller become_caller(void)
{
	struct fuse_context *c = fuse_get_context();
	struct as_caller saved = { (uid_t)setfsuid(c->uid), 0 };
	saved.gid = (gid_t)setfsgid(c->gid);
	return saved;
}

static void restore(struct as_caller saved)
{
	setfsgid(saved.gid);
	setfsuid(saved.uid);
}

static void *io_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	/* Unlinked open files are really unlinked: no .fuse_hidden files left in the real directory. */
	cfg->hard_remove = 1;
	cfg->direct_io = direct_io;
	cfg->entry_timeout = attr_timeout;
	cfg->attr_timeout = attr_timeout;
	cfg->negative_timeout = attr_timeout;
	fputs("ready\n", stdout);
	fflush(stdout);
	return NULL;
}

static int io_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	INJECT(OP_GETATTR, path);
	int rc = fi ? fstat((int)fi->fh, st) : fstatat(root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH);
	return rc == -1 ? -errno : 0;
}

static int io_readlink(const char *path, char *buf, size_t size)
{
	INJECT(OP_READLINK, path);
	ssize_t n = readlinkat(root_fd, rel(path), buf, size - 1);
	if (n == -1)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int io_mknod(const char *path, mode_t mode, dev_t rdev)
{
	INJECT(OP_CREATE, path);
	struct as_caller saved = become_caller();
	int rc = mknodat(root_fd, rel(path), mode, rdev) == -1 ? -errno : 0;
	restore(saved);
	return rc;
}

static int io_mkdir(const char *path, mode_t mode)
{
	INJECT(OP_MKDIR, path);
	struct as_caller saved = become_caller();
	int rc = mkdirat(root_fd, rel(path), mode) == -1 ? -errno : 0;
	restore(saved);
	return rc;
}

static int io_unlink(const char *path)
{
	INJECT(OP_UNLINK, path);
	return unlinkat(root_fd, rel(path), 0) == -1 ? -errno : 0;
}

static int io_rmdir(const char *path)
{
	INJECT(OP_RMDIR, path);
	return unlinkat(root_fd, rel(path), AT_REMOVEDIR) == -1 ? -errno : 0;
}

static int io_symlink(const char *target, const char *path)
{
	INJECT(OP_SYMLINK, path);
	struct as_caller saved = become_caller();
	int rc = symlinkat(target, root_fd, rel(path)) == -1 ? -errno : 0;
	restore(saved);
	return rc;
}

static int io_rename(const char *from, const char *to, unsigned int flags)
{
	INJECT(OP_RENAME, from);
	return renameat2(root_fd, rel(from), root_fd, rel(to), flags) == -1 ? -errno : 0;
}

static int io_link(const char *from, const char *to)
{
	INJECT(OP_LINK, to);
	return linkat(root_fd, rel(from), root_fd, rel(to), 0) == -1 ? -errno : 0;
}

static int io_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	INJECT(OP_SETATTR, path);
	int rc = fi ? fchmod((int)fi->fh, mode) : fchmodat(root_fd, rel(path), mode, 0);
	return rc == -1 ? -errno : 0;
}

static int io_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	INJECT(OP_SETATTR, path);
	int rc = fi ? fchown((int)fi->fh, uid, gid) : fchownat(root_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH);
	return rc == -1 ? -errno : 0;
}

static int io_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	INJECT(OP_SETATTR, path);
	if (fi)
		return ftruncate((int)fi->fh, size) == -1 ? -errno : 0;
	int fd = openat(root_fd, rel(path), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	int rc = ftruncate(fd, size) == -1 ? -errno : 0;
	close(fd);
	return rc;
}

static int io_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	INJECT(OP_SETATTR, path);
	int rc = fi ? futimens((int)fi->fh, tv) : utimensat(root_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW);
	return rc == -1 ? -errno : 0;
}

static int io_open(const char *path, struct fuse_file_info *fi)
{
	INJECT(OP_OPEN, path);
	/* The kernel resolved every symlink on the way; O_DIRECT would need aligned buffers here. */
	int fd = openat(root_fd, rel(path), (fi->flags & ~O_DIRECT) | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int io_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	INJECT(OP_CREATE, path);
	struct as_caller saved = become_caller();
	int fd = openat(root_fd, rel(path), (fi->flags & ~O_DIRECT) | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode);
	int err = errno;
	restore(saved);
	if (fd == -1)
		return -err;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int io_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	INJECT(OP_READ, path);
	ssize_t n = pread((int)fi->fh, buf, size, off);
	if (n == -1)
		return -errno;
	corrupt(path, buf, (size_t)n);
	return (int)n;
}

static int io_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	INJECT(OP_WRITE, path);
	ssize_t n = pwrite((int)fi->fh, buf, size, off);
	return n == -1 ? -errno : (int)n;
}

static int io_statfs(const char *path, struct statvfs *st)
{
	INJECT(OP_STATFS, path);
	return fstatvfs(root_fd, st) == -1 ? -errno : 0;
}

static int io_flush(const char *path, struct fuse_file_info *fi)
{
	INJECT(OP_FLUSH, path);
	/* What close(2) of this descriptor reports (NFS, say, writes back here). */
	int fd = dup((int)fi->fh);
	if (fd == -1)
		return -errno;
	return close(fd) == -1 ? -errno : 0;
}

static int io_release(const char *path, struct fuse_file_info *fi)
{
	inject(OP_RELEASE, path); /* the kernel ignores what release returns: delays only */
	close((int)fi->fh);
	return 0;
}

static int io_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	INJECT(OP_FSYNC, path);
	int rc = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);
	return rc == -1 ? -errno : 0;
}

static int io_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	INJECT(OP_FALLOCATE, path);
	return fallocate((int)fi->fh, mode, off, len) == -1 ? -errno : 0;
}

struct dir {
	DIR *dp;
	struct dirent *entry;
	off_t offset;
};

static int io_opendir(const char *path, struct fuse_file_info *fi)
{
	INJECT(OP_READDIR, path);
	int fd = openat(root_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	struct dir *d = calloc(1, sizeof *d);
	if (d == NULL) {
		close(fd);
		return -ENOMEM;
	}
	d->dp = fdopendir(fd);
	if (d->dp == NULL) {
		int err = errno;
		close(fd);
		free(d);
		return -err;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static int io_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset, struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)flags;
	INJECT(OP_READDIR, path);
	struct dir *d = (struct dir *)(uintptr_t)fi->fh;
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		if (d->entry == NULL) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (d->entry == NULL)
				return errno ? -errno : 0;
		}
		struct stat st = { .st_ino = d->entry->d_ino, .st_mode = (mode_t)DTTOIF(d->entry->d_type) };
		off_t next = telldir(d->dp);
		if (fill(buf, d->entry->d_name, &st, next, 0))
			return 0;
		d->entry = NULL;
		d->offset = next;
	}
}

static int io_releasedir(const char *path, struct fuse_file_info *fi)
{
	inject(OP_RELEASE, path);
	struct dir *d = (struct dir *)(uintptr_t)fi->fh;
	closedir(d->dp);
	free(d);
	return 0;
}

static int io_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	INJECT(OP_FSYNC, path);
	struct dir *d = (struct dir *)(uintptr_t)fi->fh;
	int fd = dirfd(d->dp);
	return (datasync ? fdatasync(fd) : fsync(fd)) == -1 ? -errno : 0;
}

static const struct fuse_operations ops = {
	.init = io_init,
	.getattr = io_getattr,
	.readlink = io_readlink,
	.mknod = io_mknod,
	.mkdir = io_mkdir,
	.unlink = io_unlink,
	.rmdir = io_rmdir,
	.symlink = io_symlink,
	.rename = io_rename,
	.link = io_link,
	.chmod = io_chmod,
	.chown = io_chown,
	.truncate = io_truncate,
	.utimens = io_utimens,
	.open = io_open,
	.create = io_create,
	.read = io_read,
	.write = io_write,
	.statfs = io_statfs,
	.flush = io_flush,
	.release = io_release,
	.fsync = io_fsync,
	.fallocate = io_fallocate,
	.opendir = io_opendir,
	.readdir = io_readdir,
	.releasedir = io_releasedir,
	.fsyncdir = io_fsyncdir,
};

static void write_stats(void)
{
	char text[MAX_RULES * 64 + 1];
	size_t len = 0;
	for (int i = 0; i < nrules && len < sizeof text; i++)
		len += (size_t)snprintf(text + len, sizeof text - len, "%d %" PRIu64 " %" PRIu64 "\n", i,
					__atomic_load_n(&rules[i].seen, __ATOMIC_RELAXED),
					__atomic_load_n(&rules[i].faulted, __ATOMIC_RELAXED));
	if (len > sizeof text - 1)
		len = sizeof text - 1;
	if (ftruncate(STATS_FD, 0) == 0 && pwrite(STATS_FD, text, len, 0) == -1)
		perror("faultline-iofault: stats");
}

static void on_usr1(int sig)
{
	(void)sig;
	int saved = errno;
	if (write(stats_pipe[1], "s", 1) == -1) {
		/* a full pipe already holds a request */
	}
	errno = saved;
}

/*
 * SIGTERM, SIGINT, SIGHUP and the deadline (SIGALRM). The first one takes the fault out: no
 * rule applies any more and the mount is detached, so new opens reach the real directory, while
 * files opened through the mount keep working (pass-through) until they are closed; when the
 * last one is, the kernel ends the connection and the loop returns. A second signal ends the
 * loop at once (those files then fail with ENOTCONN).
 */
static void on_stop(int sig)
{
	(void)sig;
	int saved = errno;
	if (!stopping) {
		stopping = 1;
		active_rules = 0;
		alarm(0);
		umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW);
	} else if (fs != NULL) {
		fuse_exit(fs);
	}
	errno = saved;
}

static void *stats_thread(void *arg)
{
	(void)arg;
	char c;
	while (read(stats_pipe[0], &c, 1) == 1)
		write_stats();
	return NULL;
}

static int usage(void)
{
	fputs("usage: faultline-iofault --check | --umount PATH | --mount PATH --fsname NAME --deadline EPOCH_S"
	      " --attr-timeout-ms N --direct-io 0|1 [--rule TYPE:OPMASK:PER10000:A:B:GLOB]...\n", stderr);
	return 2;
}

static int parse_rule(const char *text, struct rule *r)
{
	int glob_at = 0;
	unsigned ops, per;
	if (sscanf(text, "%c:%x:%u:%ld:%ld:%n", &r->type, &ops, &per, &r->a, &r->b, &glob_at) != 5 || glob_at == 0)
		return -1;
	if ((r->type != 'd' && r->type != 'e' && r->type != 'c') || per > 10000 || r->a < 0 || r->b < 0)
		return -1;
	if (strlen(text + glob_at) >= sizeof r->glob)
		return -1;
	r->ops = ops;
	r->per10000 = per;
	strcpy(r->glob, text + glob_at);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--check") == 0) {
		printf("libfuse %s\n", fuse_pkgversion());
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "--umount") == 0) {
		if (umount2(argv[2], MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
			return 0;
		int err = errno;
		fprintf(stderr, "faultline-iofault: umount %s: %s\n", argv[2], strerror(err));
		return err == EINVAL ? 3 : 1;
	}
	const char *fsname = NULL;
	long deadline = 0, attr_ms = -1;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			return usage();
		if (strcmp(argv[i], "--mount") == 0)
			mountpoint = v;
		else if (strcmp(argv[i], "--fsname") == 0)
			fsname = v;
		else if (strcmp(argv[i], "--deadline") == 0)
			deadline = atol(v);
		else if (strcmp(argv[i], "--attr-timeout-ms") == 0)
			attr_ms = atol(v);
		else if (strcmp(argv[i], "--direct-io") == 0)
			direct_io = atoi(v) != 0;
		else if (strcmp(argv[i], "--rule") == 0) {
			if (nrules == MAX_RULES || parse_rule(v, &rules[nrules]) != 0) {
				fprintf(stderr, "faultline-iofault: bad rule %s\n", v);
				return 2;
			}
			nrules++;
		} else
			return usage();
		i++;
	}
	if (mountpoint == NULL || fsname == NULL || deadline <= 0 || attr_ms < 0 || strchr(fsname, ',') != NULL)
		return usage();
	attr_timeout = (double)attr_ms / 1000.0;
	if (fcntl(FUSE_FD, F_GETFD) == -1 || fcntl(STATS_FD, F_GETFD) == -1) {
		fputs("faultline-iofault: fd 3 (/dev/fuse) and fd 4 (stats file) must be open\n", stderr);
		return 2;
	}
	long remaining = deadline - (long)time(NULL);
	if (remaining <= 0) {
		fputs("faultline-iofault: the deadline has passed\n", stderr);
		return 1;
	}

	/* The real directory, before anything covers it. */
	root_fd = open(mountpoint, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root_fd == -1) {
		fprintf(stderr, "faultline-iofault: open %s: %s\n", mountpoint, strerror(errno));
		return 1;
	}
	struct stat st;
	if (fstat(root_fd, &st) == -1) {
		perror("faultline-iofault: fstat");
		return 1;
	}
	char options[256];
	snprintf(options, sizeof options, "fd=%d,rootmode=%o,user_id=0,group_id=0,allow_other,default_permissions", FUSE_FD, st.st_mode & S_IFMT);
	if (mount(fsname, mountpoint, "fuse.faultline-iofault", MS_NOSUID | MS_NODEV, options) == -1) {
		fprintf(stderr, "faultline-iofault: mount %s: %s\n", mountpoint, strerror(errno));
		return 1;
	}

	char *fargv[] = { argv[0], NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, fargv);
	fs = fuse_new(&args, &ops, sizeof ops, NULL);
	char fdpath[32];
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", FUSE_FD);
	if (fs == NULL || fuse_mount(fs, fdpath) != 0) {
		fputs("faultline-iofault: libfuse could not take over the mount\n", stderr);
		umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW);
		return 1;
	}

	/* Our threads take no signals: they all go to the main thread, which runs the loop. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_t tid;
	int have_stats = pipe2(stats_pipe, O_CLOEXEC) == 0 && pthread_create(&tid, NULL, stats_thread, NULL) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (fuse_set_signal_handlers(fuse_get_session(fs)) != 0) {
		umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW);
		return 1;
	}
	struct sigaction sa = { 0 };
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	if (have_stats)
		sigaction(SIGUSR1, &sa, NULL);
	sa.sa_flags = 0;
	sa.sa_handler = on_stop;
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	active_rules = nrules;
	alarm((unsigned)remaining);

	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(cfg, 64);
	int rc = fuse_loop_mt(fs, cfg);
	fuse_loop_cfg_destroy(cfg);

	/* Detach before /dev/fuse closes: a clean exit never leaves a dead mount behind. */
	if (umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) == -1 && errno != EINVAL)
		fprintf(stderr, "faultline-iofault: umount %s: %s\n", mountpoint, strerror(errno));
	write_stats();
	fuse_remove_signal_handlers(fuse_get_session(fs));
	fuse_destroy(fs);
	return rc == 0 ? 0 : 1;
}
