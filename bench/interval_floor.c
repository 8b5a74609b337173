/* interval_floor: the C floor for everything one accounting interval must read (bench/
 * bench_accounting.py builds and runs it; not part of the library).
 *
 * query_floor.c times the TASKSTATS GETs alone, back to back.  An interval reads more, and reads
 * it once a second, with the caches as cold as a 1 s agent finds them.  This does, per repeat,
 * after sleeping SLEEP_MS: the delay accounting switch and /proc/pressure's files; per cgroup
 * its directory listing (a kept directory fd, lseek + getdents64: how a new child cgroup is
 * found), its cgroup.threads (pread until it returns nothing), its pressure files and, after
 * the GETs, its cpu.stat, each parsed to numbers; then one TASKSTATS GET per listed thread,
 * floor_common.h's round, as query_floor does them (requests built in one buffer, sent CHUNK
 * at a time, replies drained with recvmmsg and each payload memcpy'd into a record array).
 * Every file stays open between repeats, as cgroupfs.OpenFiles keeps them.  The hierarchy is
 * walked once at the start: the floor assumes no cgroup comes or goes while it runs.
 *
 *   interval_floor FAMILY_ID CGROUP_ROOT REPEATS SLEEP_MS RESOURCES
 *
 * RESOURCES: the pressure files to read, comma-separated (cpu,io,memory), "-" for none.
 * Prints one line of key=value pairs: threads and cgroups of the last repeat, records and
 * errors, and the median CPU (CLOCK_PROCESS_CPUTIME_ID) of one repeat, the sleep excluded.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "floor_common.h"

#define CHUNK 1024
#define MAX_CG 4096
#define MAX_RES 4
#define MAX_TIDS (1 << 20)
#define BUF (1 << 16)

struct cg { int dir, threads, stat, psi[MAX_RES]; };
static struct cg cgs[MAX_CG];
static int ncg, nres;
static uint32_t *tids;
static size_t ntids;
static uint8_t buf[BUF], dents[BUF];
static uint64_t psi_sum, usage_sum;   /* kept so the parsing is not optimised away */

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_at(int dir, const char *name, int flags)
{
    int fd = openat(dir, name, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0 && !(flags & O_DIRECTORY))
        return -1;       /* a pressure file this kernel lacks */
    return fd;
}

static void walk(int dir, char res[][16])
{
    if (ncg >= MAX_CG)
        return;
    struct cg *c = &cgs[ncg++];
    c->dir = dir;
    c->threads = open_at(dir, "cgroup.threads", 0);
    c->stat = open_at(dir, "cpu.stat", 0);
    for (int r = 0; r < nres; r++) {
        char name[32];
        snprintf(name, sizeof name, "%s.pressure", res[r]);
        c->psi[r] = open_at(dir, name, 0);
    }
    DIR *d = fdopendir(dup(dir));
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_type == DT_DIR && e->d_name[0] != '.') {
            int sub = openat(dir, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub >= 0)
                walk(sub, res);
        }
    if (d)
        closedir(d);
}

/* (some + full) total= of a pressure file's text: the parse any reader must do */
static uint64_t totals(const uint8_t *p, ssize_t n)
{
    uint64_t sum = 0;
    for (ssize_t i = 0; i + 6 <= n; i++)
        if (memcmp(p + i, "total=", 6) == 0) {
            uint64_t v = 0;
            for (i += 6; i < n && p[i] >= '0' && p[i] <= '9'; i++)
                v = v * 10 + (uint64_t)(p[i] - '0');
            sum += v;
        }
    return sum;
}

static void read_psi(int fd)
{
    ssize_t n = fd < 0 ? -1 : pread(fd, buf, BUF, 0);
    if (n > 0)
        psi_sum += totals(buf, n);
}

static void read_threads(int fd)
{
    off_t off = 0;
    uint32_t v = 0;
    int digits = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, BUF, off);
        if (n <= 0)
            break;
        off += n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] >= '0' && buf[i] <= '9') {
                v = v * 10 + (uint32_t)(buf[i] - '0');
                digits = 1;
            } else if (digits) {
                if (ntids < MAX_TIDS)
                    tids[ntids++] = v;
                v = 0;
                digits = 0;
            }
        }
    }
}

static int list_dir(int fd)
{
    int dirs = 0;
    lseek(fd, 0, SEEK_SET);
    for (;;) {
        long n = syscall(SYS_getdents64, fd, dents, sizeof dents);
        if (n <= 0)
            return dirs;
        for (long at = 0; at < n;) {
            unsigned short reclen;
            memcpy(&reclen, dents + at + 16, 2);
            dirs += dents[at + 18] == DT_DIR;
            at += reclen;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s FAMILY_ID CGROUP_ROOT REPEATS SLEEP_MS RESOURCES\n", argv[0]);
        return 2;
    }
    uint16_t family = (uint16_t)atoi(argv[1]);
    int repeats = atoi(argv[3]), sleep_ms = atoi(argv[4]);
    char res[MAX_RES][16];
    if (strcmp(argv[5], "-") != 0)
        for (char *tok = strtok(argv[5], ","); tok && nres < MAX_RES; tok = strtok(NULL, ","))
            snprintf(res[nres++], sizeof res[0], "%s", tok);
    int root = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0 || repeats <= 0 || sleep_ms < 0) {
        perror("arguments");
        return 2;
    }
    walk(root, res);
    int sys_psi[MAX_RES], delay = open("/proc/sys/kernel/task_delayacct", O_RDONLY | O_CLOEXEC);
    for (int r = 0; r < nres; r++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/pressure/%.15s", res[r]);
        sys_psi[r] = open(path, O_RDONLY | O_CLOEXEC);
    }
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("socket");
        return 1;
    }
    int rcvbuf = CHUNK * 1280 + (1 << 20);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    tids = malloc(MAX_TIDS * sizeof *tids);
    uint8_t *req = malloc((size_t)MAX_TIDS * REQ_SIZE), *out = malloc((size_t)MAX_TIDS * RECORD);
    uint8_t *arena = malloc((size_t)BATCH * SLOT);
    uint64_t *cpus = calloc((size_t)repeats, sizeof *cpus);
    if (!tids || !req || !out || !arena || !cpus)
        return 1;
    size_t records = 0, errors = 0;
    uint32_t seq = (uint32_t)getpid() << 12;
    int dirs = 0;
    for (int r = 0; r < repeats; r++) {
        struct timespec ts = {sleep_ms / 1000, (long)(sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        uint64_t c0 = cpu_ns();
        char flag[8];
        if (delay >= 0 && pread(delay, flag, sizeof flag, 0) < 0)
            return 1;
        for (int i = 0; i < nres; i++)
            read_psi(sys_psi[i]);
        ntids = 0;
        dirs = 0;
        for (int c = 0; c < ncg; c++) {
            if (cgs[c].threads >= 0)
                read_threads(cgs[c].threads);
            dirs += list_dir(cgs[c].dir);
            for (int i = 0; i < nres; i++)
                read_psi(cgs[c].psi[i]);
        }
        if (get_round(fd, family, seq, tids, ntids, CHUNK, req, out, arena, &records, &errors) != 0)
            return 1;
        seq += (uint32_t)ntids;
        for (int c = 0; c < ncg; c++) {
            ssize_t n = cgs[c].stat < 0 ? -1 : pread(cgs[c].stat, buf, BUF, 0);
            if (n > 11 && memcmp(buf, "usage_usec ", 11) == 0) {
                uint64_t v = 0;
                for (ssize_t i = 11; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
                    v = v * 10 + (uint64_t)(buf[i] - '0');
                usage_sum += v;
            }
        }
        cpus[r] = cpu_ns() - c0;
    }
    qsort(cpus, (size_t)repeats, sizeof *cpus, cmp_u64);
    printf("threads=%zu cgroups=%d subdirs=%d records=%zu errors=%zu median_cpu_ns=%llu "
           "min_cpu_ns=%llu checksum=%llu\n", ntids, ncg, dirs, records, errors,
           (unsigned long long)cpus[repeats / 2], (unsigned long long)cpus[0],
           (unsigned long long)((psi_sum + usage_sum) & 0xffff));
    return 0;
}
