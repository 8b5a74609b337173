/* cold_pages: what touching memory costs after the process slept, the effect that makes a 1 s
 * agent's interval dearer than the same work back to back.  Faults in a buffer once, then after
 * each of several sleeps reads one byte from each of PAGES pages (one cache line per page, so
 * every read needs its own TLB entry) and, in turn, the same number of bytes packed into
 * consecutive cache lines (few pages); prints the median ns per read of each after each sleep.
 * Plain C, no libraries.
 *
 * usage: cc -O2 -o cold_pages bench/cold_pages.c && ./cold_pages [PAGES [REPEATS]]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double thread_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ns per read of `reads` bytes `stride` apart, each run after sleeping `gap_s`. */
static double cold_read_ns(const volatile char *buf, size_t reads, size_t stride, double gap_s,
                           int repeats)
{
    double runs[64];
    long sum = 0;
    for (int r = 0; r < repeats; r++) {
        usleep((useconds_t)(gap_s * 1e6));
        double start = thread_ns();
        for (size_t i = 0; i < reads; i++)
            sum += buf[i * stride];
        runs[r] = (thread_ns() - start) / reads;
    }
    qsort(runs, repeats, sizeof runs[0], by_value);
    return runs[repeats / 2] + (sum == 42 ? 1e-9 : 0);   /* keep the reads */
}

int main(int argc, char **argv)
{
    size_t pages = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000;
    int repeats = argc > 2 ? atoi(argv[2]) : 7;
    if (pages < 1 || repeats < 1 || repeats > 64) {
        fprintf(stderr, "usage: cold_pages [PAGES>=1 [REPEATS 1..64]]\n");
        return 2;
    }
    char *buf = aligned_alloc(4096, pages * 4096);
    if (buf == NULL) {
        perror("aligned_alloc");
        return 1;
    }
    memset(buf, 1, pages * 4096);
    const double gaps[] = {0.001, 0.05, 0.2, 1.0, 3.0};
    printf("sleep_s  ns_per_read_one_per_page  ns_per_read_packed_lines\n");
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++)
        printf("%7.3f  %24.1f  %24.1f\n", gaps[g], cold_read_ns(buf, pages, 4096, gaps[g], repeats),
               cold_read_ns(buf, pages, 64, gaps[g], repeats));
    free(buf);
    return 0;
}
