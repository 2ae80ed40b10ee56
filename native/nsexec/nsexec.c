/*
 * faultline nsexec: join the namespaces named by FAULTLINE_NSEXEC_<KIND>=<path> variables,
 * then run the program. Two ways in, one primitive:
 *
 *   libfaultline-nsexec.so  LD_PRELOAD library: its constructor joins the namespaces before
 *                           main() of a dynamically linked host tool (ip, tc, nft, stress-ng),
 *                           so the tool runs inside a container even if the container's image
 *                           has no such tool. Dynamically linked programs only: a static one
 *                           never loads the library (agent/native/nsexec.ts refuses those).
 *   faultline-nsexec        wrapper: joins the namespaces, then execvp()s its arguments; works
 *                           for static binaries too, and for programs inside the target's
 *                           mount namespace.
 *
 * Both run in a fresh, single-threaded process (forked and exec'd by the agent with spawn()),
 * so setns(2) never touches a thread of the agent. No policy lives here: which namespaces to
 * join is decided by the agent. Any failure exits 126 before the program runs, so a tool never
 * runs in the wrong namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Order matters: the user namespace would come first; mnt comes last because opening the
 * other namespace files needs the host's /proc. All files are opened before any setns. */
static const struct { const char *var; int type; } kinds[] = {
	{ "FAULTLINE_NSEXEC_USER", CLONE_NEWUSER },
	{ "FAULTLINE_NSEXEC_CGROUP", CLONE_NEWCGROUP },
	{ "FAULTLINE_NSEXEC_IPC", CLONE_NEWIPC },
	{ "FAULTLINE_NSEXEC_UTS", CLONE_NEWUTS },
	{ "FAULTLINE_NSEXEC_NET", CLONE_NEWNET },
	{ "FAULTLINE_NSEXEC_PID", CLONE_NEWPID },
	{ "FAULTLINE_NSEXEC_TIME", 0x00000080 /* CLONE_NEWTIME */ },
	{ "FAULTLINE_NSEXEC_MNT", CLONE_NEWNS },
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static char failed_path[256];

/* Returns 0, or -errno with *failed set to the variable whose namespace could not be joined
 * (and its value copied to failed_path). */
static int join_namespaces(const char **failed)
{
	int fds[NKINDS];
	int rc = 0;
	size_t i;

	/* All of them first: the cleanup below closes every slot, also after an early failure. */
	for (i = 0; i < NKINDS; i++)
		fds[i] = -1;
	for (i = 0; i < NKINDS; i++) {
		const char *path = getenv(kinds[i].var);
		if (path == NULL)
			continue;
		if (*path == '\0')
			rc = -EINVAL; /* named but empty: a caller's bug, not "stay where you are" */
		else if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			rc = -errno;
		if (rc != 0) {
			*failed = kinds[i].var;
			snprintf(failed_path, sizeof(failed_path), "%s", path);
			goto out;
		}
	}
	for (i = 0; i < NKINDS; i++) {
		if (fds[i] >= 0 && setns(fds[i], kinds[i].type) != 0) {
			rc = -errno;
			*failed = kinds[i].var;
			snprintf(failed_path, sizeof(failed_path), "%s", getenv(kinds[i].var));
			goto out;
		}
	}
out:
	for (i = 0; i < NKINDS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	/* Children of the tool must not join again (and must not try to preload a host path). */
	for (i = 0; i < NKINDS; i++)
		unsetenv(kinds[i].var);
	unsetenv("LD_PRELOAD");
	return rc;
}

static void fail(const char *what, int rc)
{
	fprintf(stderr, "faultline-nsexec: cannot join %s=%s: %s\n", what, failed_path, strerror(-rc));
	_exit(126);
}

#ifdef NSEXEC_PRELOAD
__attribute__((constructor)) static void faultline_nsexec_constructor(void)
{
	const char *failed = NULL;
	int rc;

	if (getenv("FAULTLINE_NSEXEC") == NULL)
		return;
	unsetenv("FAULTLINE_NSEXEC");
	rc = join_namespaces(&failed);
	if (rc != 0)
		fail(failed, rc);
}
#else
/* Options --net=PATH, --mnt=PATH, ... (one per namespace kind), then "--", then the program. */
int main(int argc, char **argv)
{
	const char *failed = NULL;
	char var[64];
	int i, rc;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *eq = strchr(argv[i], '=');
		size_t k, len;
		if (strncmp(argv[i], "--", 2) != 0 || eq == NULL)
			break;
		len = (size_t)(eq - argv[i] - 2);
		snprintf(var, sizeof(var), "FAULTLINE_NSEXEC_%.*s", (int)len, argv[i] + 2);
		for (k = 17; var[k]; k++)
			if (var[k] >= 'a' && var[k] <= 'z')
				var[k] = (char)(var[k] - 'a' + 'A');
		for (k = 0; k < NKINDS && strcmp(kinds[k].var, var) != 0; k++)
			;
		if (k == NKINDS) {
			fprintf(stderr, "faultline-nsexec: unknown namespace option %s\n", argv[i]);
			return 2;
		}
		setenv(var, eq + 1, 1);
	}
	if (i >= argc - 1 || strcmp(argv[i], "--") != 0) {
		fprintf(stderr, "usage: faultline-nsexec [--net=PATH] [--mnt=PATH] [--pid=PATH] [--uts=PATH] [--ipc=PATH] [--cgroup=PATH] [--time=PATH] -- PROGRAM [ARGS...]\n");
		return 2;
	}
	rc = join_namespaces(&failed);
	if (rc != 0)
		fail(failed, rc);
	execvp(argv[i + 1], argv + i + 1);
	fprintf(stderr, "faultline-nsexec: cannot run %s: %s\n", argv[i + 1], strerror(errno));
	return 127;
}
#endif
