/* exit_storm: a producer of exit events for bench/bench_exit_stream.py.
 *
 * Forks (vfork by default: no page-table copy, the fastest way to make a task exit) children
 * that exit at once, as fast as one CPU allows, for a given number of seconds, pinned to one CPU.
 * Prints the number of children reaped.  Built by the bench at run time; no committed binary.
 *
 * usage: exit_storm CPU SECONDS [fork|vfork] [RATE]
 *   RATE: children per second, paced (default 0: as fast as the CPU allows)
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One child that exits at once with `code`: 1 when reaped, 0 when not, -1 when fork failed.
 * The child calls _exit inside this function, never returning from it (what vfork requires). */
static int spawn(int use_fork, int code)
{
    pid_t pid = use_fork ? fork() : vfork();
    if (pid == 0)
        _exit(code);
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    return waitpid(pid, NULL, 0) == pid;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPU SECONDS [fork|vfork] [RATE]\n", argv[0]);
        return 2;
    }
    int cpu = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int use_fork = argc > 3 && strcmp(argv[3], "fork") == 0;
    double rate = argc > 4 ? atof(argv[4]) : 0;

    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    long children = 0;
    double start = now(), end = start + seconds;
    while (rate > 0 && now() < end) {
        /* paced: each child at start + n / rate (sleeping, so the pacing costs no CPU) */
        double due = start + (double)children / rate, t = now();
        if (due > t) {
            struct timespec ts = {(time_t)(due - t), (long)((due - t - (double)(time_t)(due - t)) * 1e9)};
            nanosleep(&ts, NULL);
            continue;
        }
        int got = spawn(use_fork, 0);
        if (got < 0)
            return 1;
        children += got;
    }
    while (rate <= 0 && now() < end) {
        /* check the clock every 64 children: clock_gettime is cheap but not free */
        for (int i = 0; i < 64; i++) {
            int got = spawn(use_fork, i & 0x7f);
            if (got < 0)
                return 1;
            children += got;
        }
    }
    printf("%ld\n", children);
    return 0;
}
