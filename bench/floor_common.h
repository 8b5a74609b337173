/* floor_common.h: the TASKSTATS GET round the C floors share (bench/query_floor.c and
 * bench/interval_floor.c include it; not part of the library), so a fix to the round lands in
 * one place.
 *
 * A round does the least work a bulk lookup can do: all GET requests built in one buffer with
 * consecutive seqs, sent CHUNK at a time with one send each (the kernel answers inside the
 * call), replies drained with recvmmsg (BATCH per call, SLOT-byte slots) and each STATS payload
 * memcpy'd into a record array at index seq - first.  No validation beyond what it needs to find
 * the payload; every other reply (ESRCH) is counted as an error.
 *
 * The includer defines _GNU_SOURCE before its first #include (recvmmsg needs it).
 */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before the first #include: recvmmsg needs it"
#endif

#include <errno.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "recvmmsg_slots.h"

#define REQ_SIZE 28
#define BATCH 64
#define SLOT 8192
#define RECORD 712          /* taskstats_fast.DTYPE.itemsize: same bytes copied per record */
#define STATS_OFFSET 36     /* nlmsghdr 16 + genlmsghdr 4 + AGGR_PID 4 + PID attr 8 + STATS hdr 4 */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void build(uint8_t *p, uint16_t family, uint32_t seq, uint32_t pid)
{
    uint32_t len = REQ_SIZE;
    uint16_t type = family, flags = NLM_F_REQUEST, alen = 8, atype = 1;
    uint32_t port = 0;
    memcpy(p, &len, 4); memcpy(p + 4, &type, 2); memcpy(p + 6, &flags, 2);
    memcpy(p + 8, &seq, 4); memcpy(p + 12, &port, 4);
    p[16] = 1; p[17] = 1; p[18] = 0; p[19] = 0;             /* CMD_GET, version 1 */
    memcpy(p + 20, &alen, 2); memcpy(p + 22, &atype, 2); memcpy(p + 24, &pid, 4);
}

/* One round of GETs for pids[0..n) on fd, seqs from first: req holds n requests, out n records,
 * arena BATCH slots.  0, or -1 after printing why; records and errors count the replies. */
static int get_round(int fd, uint16_t family, uint32_t first, const uint32_t *pids, size_t n,
                     size_t chunk, uint8_t *req, uint8_t *out, uint8_t *arena,
                     size_t *records, size_t *errors)
{
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    *records = *errors = 0;
    for (size_t i = 0; i < n; i++)  /* building is part of a lookup's cost */
        build(req + i * REQ_SIZE, family, first + (uint32_t)i, pids[i]);
    for (size_t lo = 0; lo < n; lo += chunk) {
        size_t k = n - lo < chunk ? n - lo : chunk;
        if (send(fd, req + lo * REQ_SIZE, k * REQ_SIZE, 0) < 0) {
            perror("send");
            return -1;
        }
        size_t answered = 0;
        while (answered < k) {
            point_slots(msgs, iov, BATCH, arena, SLOT);
            int got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    struct pollfd p = {.fd = fd, .events = POLLIN};
                    if (poll(&p, 1, 5000) == 0) {
                        fprintf(stderr, "timeout: %zu of %zu answered\n", answered, k);
                        return -1;
                    }
                    continue;
                }
                perror("recvmmsg");  /* ENOBUFS would mean the chunk overflowed the buffer */
                return -1;
            }
            for (int i = 0; i < got; i++) {
                const uint8_t *m = iov[i].iov_base;
                uint16_t type;
                uint32_t seq;
                memcpy(&type, m + 4, 2);
                memcpy(&seq, m + 8, 4);
                size_t idx = seq - first;
                if (type == family && msgs[i].msg_len > STATS_OFFSET && idx < n) {
                    size_t len = msgs[i].msg_len - STATS_OFFSET;
                    memcpy(out + idx * RECORD, m + STATS_OFFSET, len < RECORD ? len : RECORD);
                    (*records)++;
                } else {
                    (*errors)++;
                }
            }
            answered += (size_t)got;
        }
    }
    return 0;
}

#endif
