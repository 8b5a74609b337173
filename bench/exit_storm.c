/* exit_storm: a producer of exit events for bench/bench_exit_stream.py.
 *
 * Forks (vfork by default: no page-table copy, the fastest way to make a task exit) children
 * that exit at once, as fast as one CPU allows, for a given number of seconds, pinned to one CPU.
 * Prints the number of children reaped.  Built by the bench at run time; no committed binary.
 *
 * usage: exit_storm CPU SECONDS [fork|vfork]
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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPU SECONDS [fork|vfork]\n", argv[0]);
        return 2;
    }
    int cpu = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int use_fork = argc > 3 && strcmp(argv[3], "fork") == 0;

    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    long children = 0;
    double end = now() + seconds;
    while (now() < end) {
        /* check the clock every 64 children: clock_gettime is cheap but not free */
        for (int i = 0; i < 64; i++) {
            pid_t pid = use_fork ? fork() : vfork();
            if (pid == 0)
                _exit(i & 0x7f);
            if (pid < 0) {
                perror("fork");
                return 1;
            }
            if (waitpid(pid, NULL, 0) == pid)
                children++;
        }
    }
    printf("%ld\n", children);
    return 0;
}
