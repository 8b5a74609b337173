/* exit_floor: the C floor for bench/bench_exit_stream.py: the least work that receives the
 * exit stream.  Registers one netlink socket per CPU (or one for all with --shared), waits in
 * poll, drains each ready socket with recvmmsg (64 datagrams per call) and copies each datagram
 * into an output buffer: no decoding.  Optionally lingers like ExitListener (--linger-ms N:
 * after a wake-up, sleep N ms before draining, so a burst costs one wake-up).
 *
 * Prints "ready" once registered; on SIGTERM drains what is left, deregisters and prints one JSON
 * line: datagrams received, the kernel's drop counters (SO_MEMINFO), and its own CPU time from
 * "ready" on (getrusage).  Plain C, no libraries; built by the bench at run time.
 *
 * usage: exit_floor FAMILY_ID CPULIST_OF_EACH_SOCKET... [--linger-ms N]
 *   e.g. exit_floor 31 0 1 --linger-ms 5
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "recvmmsg_slots.h"

#define MAX_SOCKS 256
#define BATCH 64
#define SLOT 8192
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static uint8_t arena[BATCH][SLOT];
static uint8_t out[4096][1536];     /* where each datagram is copied: the "decode" floor */
static size_t out_at;

/* REGISTER (3) or DEREGISTER (4) a cpulist, with an ACK; returns 0 or -errno. */
static int cpumask_request(int fd, uint16_t family, int attr, const char *mask, uint32_t seq)
{
    uint8_t buf[512];
    size_t mlen = strlen(mask) + 1;
    size_t alen = 4 + mlen, total = 16 + 4 + ((alen + 3) & ~(size_t)3);
    if (total > sizeof buf)
        return -E2BIG;
    memset(buf, 0, sizeof buf);
    uint32_t len32 = (uint32_t)total;
    uint16_t flags = NLM_F_REQUEST | NLM_F_ACK, alen16 = (uint16_t)alen, attr16 = (uint16_t)attr;
    memcpy(buf, &len32, 4);
    memcpy(buf + 4, &family, 2);
    memcpy(buf + 6, &flags, 2);
    memcpy(buf + 8, &seq, 4);
    buf[16] = 1;  /* TASKSTATS_CMD_GET */
    buf[17] = 1;  /* version */
    memcpy(buf + 20, &alen16, 2);
    memcpy(buf + 22, &attr16, 2);
    memcpy(buf + 24, mask, mlen);
    if (send(fd, buf, total, 0) < 0)
        return -errno;
    for (;;) {  /* events may come before the ACK: skip them */
        ssize_t n = recv(fd, arena[0], SLOT, 0);
        if (n < 0) {
            if (errno == EINTR || errno == ENOBUFS)
                continue;
            return -errno;
        }
        uint16_t type;
        uint32_t rseq;
        memcpy(&type, arena[0] + 4, 2);
        memcpy(&rseq, arena[0] + 8, 4);
        if (n >= 20 && type == NLMSG_ERROR && rseq == seq) {
            int32_t err;
            memcpy(&err, arena[0] + 16, 4);
            return err;
        }
    }
}

static uint64_t read_drops(int fd)
{
    uint32_t mem[16] = {0};
    socklen_t len = sizeof mem;
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0 || len < 9 * sizeof(uint32_t))
        return 0;
    return mem[8];
}

/* Drain one socket until it is empty; returns the datagrams received. */
static uint64_t drain(int fd, uint64_t *overruns)
{
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint64_t got = 0;
    for (;;) {
        point_slots(msgs, iov, BATCH, arena[0], SLOT);
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == ENOBUFS) {
                (*overruns)++;
                continue;
            }
            if (errno == EINTR)
                continue;
            return got;  /* EAGAIN: empty */
        }
        for (int i = 0; i < n; i++) {
            size_t len = msgs[i].msg_len < sizeof out[0] ? msgs[i].msg_len : sizeof out[0];
            memcpy(out[out_at], arena[i], len);
            out_at = (out_at + 1) % 4096;
        }
        got += (uint64_t)n;
        if (n < BATCH)
            return got;
    }
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FAMILY_ID CPULIST... [--linger-ms N]\n", argv[0]);
        return 2;
    }
    uint16_t family = (uint16_t)atoi(argv[1]);
    const char *masks[MAX_SOCKS];
    int nsock = 0, linger_ms = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--linger-ms") == 0 && i + 1 < argc)
            linger_ms = atoi(argv[++i]);
        else if (nsock < MAX_SOCKS)
            masks[nsock++] = argv[i];
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);

    struct pollfd pfd[MAX_SOCKS];
    for (int i = 0; i < nsock; i++) {
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
        struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
        int rcvbuf = 8192 * 1300 / 2;  /* the same room as ExitListener's default */
        if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("netlink socket");
            return 1;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        int err = cpumask_request(fd, family, 3, masks[i], 1000u + (uint32_t)i);
        if (err) {
            fprintf(stderr, "register %s: %s\n", masks[i], strerror(-err));
            return 1;
        }
        pfd[i].fd = fd;
        pfd[i].events = POLLIN;
    }
    printf("ready\n");
    fflush(stdout);

    double cpu0 = cpu_seconds();
    uint64_t received = 0, overruns = 0, wakeups = 0;
    while (!stop) {
        int rc = poll(pfd, (nfds_t)nsock, -1);
        if (rc < 0)
            continue;  /* EINTR: SIGTERM sets stop */
        wakeups++;
        if (linger_ms > 0) {
            struct timespec ts = {linger_ms / 1000, (long)(linger_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        for (int i = 0; i < nsock; i++)
            received += drain(pfd[i].fd, &overruns);
    }
    for (int i = 0; i < nsock; i++)
        received += drain(pfd[i].fd, &overruns);
    double cpu = cpu_seconds() - cpu0;
    uint64_t dropped = 0;
    for (int i = 0; i < nsock; i++) {
        dropped += read_drops(pfd[i].fd);
        cpumask_request(pfd[i].fd, family, 4, masks[i], 2000u + (uint32_t)i);
        close(pfd[i].fd);
    }
    printf("{\"received\": %llu, \"dropped\": %llu, \"overruns\": %llu, \"wakeups\": %llu, "
           "\"cpu_s\": %.6f}\n", (unsigned long long)received, (unsigned long long)dropped,
           (unsigned long long)overruns, (unsigned long long)wakeups, cpu);
    return 0;
}
