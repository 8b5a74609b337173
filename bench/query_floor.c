/* query_floor: the C floor for bulk TASKSTATS pid lookups (bench/bench_queries.py builds and
 * runs it; not part of the library).
 *
 * Does the least work a bulk lookup can do: floor_common.h's GET round (requests pre-built in
 * one buffer, sent CHUNK at a time, replies drained with recvmmsg and each STATS payload
 * memcpy'd into a record array at index seq - first_seq; ESRCH replies are counted).
 *
 *   query_floor FAMILY_ID CHUNK REPEATS PIDFILE [THREADS [SHARED]]
 *
 * PIDFILE holds native uint32 pids.  THREADS (default 1) threads each take a contiguous share of
 * the pids on a socket of their own, started together each repeat; a repeat's time is until the
 * last one finishes (the kernel serialises TASKSTATS GETs under genl_mutex: this measures what
 * a second socket and thread can still gain).  SHARED=1: instead of fixed shares, each thread
 * claims the next CHUNK pids from a shared cursor until none are left, so no thread waits for
 * another that the kernel served less (the best split there is, at no cost per claim).
 * Prints one line of key=value pairs: lookups per repeat, records and errors of the last
 * repeat, ns/lookup of every repeat (min and median first), and the median CPU (user + sys,
 * getrusage, every thread) per lookup of a repeat.
 */
#define _GNU_SOURCE
#include <linux/netlink.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "floor_common.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU (user + sys) of the whole process so far, every thread included. */
static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

struct worker {
    uint16_t family;
    size_t chunk, n;         /* lookups per round trip; pids of this worker (SHARED: of all) */
    const uint32_t *pids;
    uint32_t first;          /* seq of this worker's first request in the current repeat */
    size_t *cursor;          /* SHARED: the next unclaimed pid, shared by every worker; or NULL */
    int fd;
    uint8_t *req, *out, *arena;
    size_t records, errors;
    int failed;
};

static int open_socket(size_t chunk)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("socket");
        return -1;
    }
    int rcvbuf = (int)(chunk * 1280 + (1 << 20));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int sndbuf = (int)(chunk * REQ_SIZE + 4096);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    return fd;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (!w->cursor) {
        w->failed = get_round(w->fd, w->family, w->first, w->pids, w->n, w->chunk, w->req, w->out,
                              w->arena, &w->records, &w->errors) != 0;
        return NULL;
    }
    size_t records = 0, errors = 0;
    for (;;) {
        size_t lo = __atomic_fetch_add(w->cursor, w->chunk, __ATOMIC_RELAXED), got, bad;
        if (lo >= w->n)
            break;
        size_t k = w->n - lo < w->chunk ? w->n - lo : w->chunk;
        if (get_round(w->fd, w->family, w->first + (uint32_t)lo, w->pids + lo, k, w->chunk, w->req,
                      w->out + lo * RECORD, w->arena, &got, &bad) != 0) {
            w->failed = 1;
            break;
        }
        records += got;
        errors += bad;
    }
    w->records = records;
    w->errors = errors;
    return NULL;
}

#define MAX_THREADS 64

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: %s FAMILY_ID CHUNK REPEATS PIDFILE [THREADS [SHARED]]\n", argv[0]);
        return 2;
    }
    uint16_t family = (uint16_t)atoi(argv[1]);
    size_t chunk = (size_t)atol(argv[2]);
    int repeats = atoi(argv[3]);
    int nthreads = argc >= 6 ? atoi(argv[5]) : 1;
    int shared = argc == 7 && atoi(argv[6]) != 0;
    FILE *f = fopen(argv[4], "rb");
    if (!f || chunk == 0 || repeats <= 0 || nthreads < 1 || nthreads > MAX_THREADS) {
        perror("arguments");
        return 2;
    }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f) / 4;
    fseek(f, 0, SEEK_SET);
    uint32_t *pids = malloc(n * 4);
    if (fread(pids, 4, n, f) != n) {
        perror("read pids");
        return 2;
    }
    fclose(f);

    struct worker workers[MAX_THREADS];
    uint32_t seq0 = (uint32_t)getpid() << 12;
    size_t cursor = 0;
    uint8_t *shared_out = shared ? malloc((n + 1) * RECORD) : NULL;
    if (shared && !shared_out)
        return 1;
    for (int t = 0; t < nthreads; t++) {
        struct worker *w = &workers[t];
        size_t lo = n * (size_t)t / (size_t)nthreads, hi = n * (size_t)(t + 1) / (size_t)nthreads;
        memset(w, 0, sizeof *w);
        w->family = family;
        w->chunk = chunk;
        w->pids = shared ? pids : pids + lo;
        w->n = shared ? n : hi - lo;
        w->cursor = shared ? &cursor : NULL;
        w->fd = open_socket(chunk);
        w->req = malloc(((shared ? chunk : w->n) + 1) * REQ_SIZE);
        w->out = shared ? shared_out : malloc((w->n + 1) * RECORD);
        w->arena = malloc((size_t)BATCH * SLOT);
        if (w->fd < 0 || !w->req || !w->out || !w->arena)
            return 1;
    }
    uint64_t *times = calloc((size_t)repeats, sizeof *times);
    uint64_t *cpus = calloc((size_t)repeats, sizeof *cpus);
    size_t records = 0, errors = 0;

    for (int r = 0; r < repeats; r++) {
        pthread_t tid[MAX_THREADS];
        uint64_t t0 = now_ns(), c0 = cpu_ns();
        cursor = 0;
        for (int t = 0; t < nthreads; t++) {
            workers[t].first = seq0 + (uint32_t)(r * n) +
                               (shared ? 0u : (uint32_t)(n * (size_t)t / (size_t)nthreads));
            if (nthreads == 1)
                worker_main(&workers[t]);
            else if (pthread_create(&tid[t], NULL, worker_main, &workers[t]) != 0) {
                perror("pthread_create");
                return 1;
            }
        }
        records = errors = 0;
        for (int t = 0; t < nthreads; t++) {
            if (nthreads > 1)
                pthread_join(tid[t], NULL);
            if (workers[t].failed)
                return 1;
            records += workers[t].records;
            errors += workers[t].errors;
        }
        times[r] = now_ns() - t0;
        cpus[r] = cpu_ns() - c0;
    }
    printf("lookups=%zu records=%zu errors=%zu threads=%d shared=%d", n, records, errors, nthreads, shared);
    uint64_t *sorted = malloc((size_t)repeats * sizeof *sorted);
    memcpy(sorted, times, (size_t)repeats * sizeof *sorted);
    qsort(sorted, (size_t)repeats, sizeof *sorted, cmp_u64);
    printf(" min_ns_per_lookup=%.1f median_ns_per_lookup=%.1f all=", (double)sorted[0] / n,
           (double)sorted[repeats / 2] / n);
    for (int r = 0; r < repeats; r++)
        printf("%s%.1f", r ? "," : "", (double)times[r] / n);
    qsort(cpus, (size_t)repeats, sizeof *cpus, cmp_u64);
    printf(" median_cpu_ns_per_lookup=%.1f\n", (double)cpus[repeats / 2] / n);
    return 0;
}
