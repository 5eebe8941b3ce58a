/*
 * pause: the process that holds a pod sandbox's namespaces open.
 *
 * Same behaviour as Kubernetes' build/pause/linux/pause.c (Apache-2.0), written
 * afresh for Flotilla's test images:
 *   - SIGINT / SIGTERM: exit 0 at once;
 *   - SIGCHLD: reap every exited child (it is PID 1 of the pod's PID namespace
 *     when the pod shares one);
 *   - otherwise sleep in pause() for ever;
 *   - "-v" prints a version string and exits 0.
 * Only async-signal-safe calls are made from the handlers.
 */
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "3.10-flotilla"
#endif

static void say(int fd, const char *s) {
	ssize_t r = write(fd, s, strlen(s));
	(void)r;
}

static void sigdown(int signo) {
	say(2, signo == SIGTERM ? "pause: got SIGTERM, shutting down\n"
	                        : "pause: got SIGINT, shutting down\n");
	_exit(0);
}

static void sigreap(int signo) {
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv) {
	struct sigaction down, reap;
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "-V") == 0) {
			say(1, "pause.c " VERSION "\n");
			return 0;
		}
	}
	if (getpid() != 1)
		/* not an error: pause is also used outside sandboxes */
		say(2, "pause: warning: not running as PID 1\n");

	memset(&down, 0, sizeof down);
	down.sa_handler = sigdown;
	sigemptyset(&down.sa_mask);
	if (sigaction(SIGINT, &down, NULL) < 0)
		return 1;
	if (sigaction(SIGTERM, &down, NULL) < 0)
		return 2;

	memset(&reap, 0, sizeof reap);
	reap.sa_handler = sigreap;
	reap.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigemptyset(&reap.sa_mask);
	if (sigaction(SIGCHLD, &reap, NULL) < 0)
		return 3;

	for (;;)
		pause();
	/* not reached */
	return 42;
}
