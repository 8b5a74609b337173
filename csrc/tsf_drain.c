/* tsf_drain.c: poll + recvmmsg + parse over caller-owned sockets and buffers (tsf_drain.h). */
#define _GNU_SOURCE
#include "tsf_drain.h"
#include "tsf_abi.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define TSF_BATCH 64                /* datagrams per recvmmsg call */
#define TSF_MAX_SOURCES 8192        /* pollfd array lives on the stack */
#define TSF_RECORDS_PER_DATAGRAM 2  /* kernel datagrams hold a PID record, maybe a TGID one */

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#define TSF_SK_MEMINFO_DROPS 8
#define TSF_SK_MEMINFO_VARS 9

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tsf_source_read_drops(struct tsf_source *src)
{
    uint32_t mem[TSF_SK_MEMINFO_VARS + 8];
    socklen_t len = sizeof mem;
    memset(mem, 0, sizeof mem);
    if (getsockopt(src->fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0)
        return -errno;
    if (len < (TSF_SK_MEMINFO_DROPS + 1) * sizeof(uint32_t))
        return -ENOPROTOOPT;
    /* the kernel's counter is 32 bits; keep ours monotonic across its wrap */
    uint32_t low = (uint32_t)src->drops;
    uint32_t now = mem[TSF_SK_MEMINFO_DROPS];
    src->drops += (uint32_t)(now - low);
    return 0;
}

/* Exit messages carry a per-CPU sequence number: a forward jump is events the kernel could not
 * deliver to this socket.  A step back happens only when the exiting task migrated between
 * picking the listener list and taking the sequence number. */
static void track_seq(struct tsf_source *src, const uint8_t *dgram, size_t len, uint16_t family)
{
    uint16_t type;
    uint32_t seq, port;
    if (len < TSF_NLMSG_HDRLEN)
        return;
    memcpy(&type, dgram + 4, 2);
    memcpy(&seq, dgram + 8, 4);
    memcpy(&port, dgram + 12, 4);
    if (type != family || port != 0)  /* only kernel-originated exit events */
        return;
    if (src->seq_valid) {
        uint32_t gap = seq - src->next_seq;  /* u32 arithmetic handles wrap-around */
        if (gap != 0 && gap < 0x80000000u)
            src->seq_lost += gap;
        else if (gap != 0)
            src->seq_backwards++;
    }
    src->next_seq = seq + 1;
    src->seq_valid = 1;
}

struct drain_state {
    const struct tsf_plan *plan;
    const struct tsf_drain_args *a;
    struct tsf_drain_result *res;
};

static uint32_t free_records(const struct drain_state *st)
{
    return st->a->capacity - st->res->records;
}

static void parse_datagram(struct drain_state *st, struct tsf_source *src, const uint8_t *dgram,
                           size_t len, uint64_t stamp)
{
    const struct tsf_drain_args *a = st->a;
    struct tsf_drain_result *res = st->res;
    struct tsf_parse_result pr;
    size_t notes_room = res->notes < a->notes_cap ? a->notes_cap - res->notes : 0;
    struct tsf_note *notes = notes_room ? a->notes + res->notes : NULL;

    if (src->track_seq)
        track_seq(src, dgram, len, a->family);
    tsf_parse(st->plan, a->family, dgram, len,
              a->records + (size_t)res->records * st->plan->record_size, free_records(st),
              notes, notes_room, stamp, src->shard, &pr);
    for (uint32_t i = 0; i < pr.notes && i < notes_room; i++)
        if (notes[i].kind == TSF_NOTE_ERROR)
            src->kernel_errors++;
    res->records += pr.records;
    res->notes += pr.notes;
    src->records += pr.records;
    src->bad += pr.bad;
    if (pr.consumed < len) {  /* more records than the space left: count them as bad, never drop silently */
        src->bad++;
        if (res->notes < a->notes_cap) {
            struct tsf_note *n = &a->notes[res->notes];
            n->kind = TSF_NOTE_BAD;
            n->code = TSF_E_NOSPACE;
            n->offset = pr.consumed;
            n->seq = 0;
        }
        res->notes++;
    }
}

/* Drain one socket without blocking.  Returns datagrams received, or -1 on a fatal error. */
static int drain_source(struct drain_state *st, struct tsf_source *src)
{
    const struct tsf_drain_args *a = st->a;
    struct mmsghdr msgs[TSF_BATCH];
    struct iovec iov[TSF_BATCH];
    int total = 0;

    for (;;) {
        uint32_t room = free_records(st) / TSF_RECORDS_PER_DATAGRAM;
        uint32_t k = a->nslots < TSF_BATCH ? a->nslots : TSF_BATCH;
        if (room < k)
            k = room;
        if (k == 0 || (a->notes_cap && st->res->notes >= a->notes_cap))
            return total;
        for (uint32_t i = 0; i < k; i++) {
            iov[i].iov_base = a->arena + (size_t)i * a->slot_size;
            iov[i].iov_len = a->slot_size;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        int n = recvmmsg(src->fd, msgs, k, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return total;
            if (errno == EINTR)
                continue;
            if (errno == ENOBUFS) {  /* the kernel dropped datagrams; the socket stays usable */
                src->overruns++;
                tsf_source_read_drops(src);
                continue;
            }
            src->error = errno;
            return -1;
        }
        uint64_t stamp = now_ns(CLOCK_REALTIME);
        for (int i = 0; i < n; i++) {
            size_t len = msgs[i].msg_len;
            src->datagrams++;
            src->bytes += len;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                src->truncated++;
                continue;  /* a cut datagram would decode wrongly: counted, not parsed */
            }
            parse_datagram(st, src, iov[i].iov_base, len, stamp);
        }
        st->res->datagrams += (uint32_t)n;
        total += n;
        if ((uint32_t)n < k)
            return total;  /* the queue is empty for now */
    }
}

int tsf_drain(const struct tsf_plan *plan, struct tsf_source *src, size_t nsrc,
              const struct tsf_drain_args *a, struct tsf_drain_result *res)
{
    if (!res)
        return TSF_E_ARG;
    memset(res, 0, sizeof *res);
    if (!plan || !a || (!src && nsrc) || nsrc > TSF_MAX_SOURCES || !a->arena || !a->nslots ||
        a->slot_size < TSF_NLMSG_HDRLEN || (!a->records && a->capacity) || (!a->notes && a->notes_cap))
        return TSF_E_ARG;

    struct drain_state st = {plan, a, res};
    struct pollfd pfd[nsrc ? nsrc : 1];
    uint64_t deadline = a->timeout_ms >= 0 ? now_ns(CLOCK_MONOTONIC) + (uint64_t)a->timeout_ms * 1000000u : 0;
    uint64_t want = a->min_records ? a->min_records : 1;

    for (size_t i = 0; i < nsrc; i++) {
        pfd[i].fd = src[i].fd;
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
        src[i].error = 0;
    }
    for (;;) {
        /* sweep every socket until a whole sweep finds nothing or the space is used up */
        int got;
        do {
            got = 0;
            for (size_t i = 0; i < nsrc; i++) {
                int n = drain_source(&st, &src[i]);
                if (n > 0)
                    got += n;
            }
        } while (got > 0 && free_records(&st) >= TSF_RECORDS_PER_DATAGRAM);
        for (size_t i = 0; i < nsrc; i++)
            if (src[i].error) {  /* a dead socket would make poll spin: hand it back */
                res->error = src[i].error;
                return (int)res->records;
            }

        if (res->records + res->notes >= want || free_records(&st) < TSF_RECORDS_PER_DATAGRAM)
            return (int)res->records;
        int wait_ms = -1;
        if (a->timeout_ms >= 0) {
            uint64_t now = now_ns(CLOCK_MONOTONIC);
            if (now >= deadline) {
                res->timed_out = 1;
                return (int)res->records;
            }
            wait_ms = (int)((deadline - now + 999999u) / 1000000u);
        }
        int rc = poll(pfd, (nfds_t)nsrc, wait_ms);
        if (rc < 0) {
            if (errno == EINTR) {
                res->interrupted = 1;  /* let the caller run its signal handlers */
                return (int)res->records;
            }
            res->error = errno;
            return (int)res->records;
        }
        if (rc == 0) {
            res->timed_out = 1;
            return (int)res->records;
        }
        /* POLLERR on netlink means ENOBUFS is pending: the next sweep's recv reads it */
        for (size_t i = 0; i < nsrc; i++)
            if (pfd[i].revents & POLLNVAL) {
                src[i].error = EBADF;
                res->error = EBADF;
                return (int)res->records;
            }
    }
}
