/* tsf_drain.c: poll + recvmmsg + parse over caller-owned sockets and buffers (tsf_drain.h).
 *
 * One call: wait in poll until a socket is readable (at once when data is queued), linger the
 * first time if asked, then drain the ready sockets round-robin one recvmmsg batch at a time
 * (decoding each datagram straight into the record space); if too little has arrived, wait
 * again until it has or the timeout passes.  The GIL is released around the call by cffi, so
 * Python threads keep running while it waits.
 */
#define _GNU_SOURCE
#include "tsf_drain.h"
#include "tsf_nl.h"
#include "tsf_seq.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define TSF_BATCH 64                /* datagrams per recvmmsg call */
#define TSF_MAX_SOURCES 8192        /* pollfd array lives on the stack */
#define TSF_RECORDS_PER_DATAGRAM 2  /* kernel datagrams hold a PID record, maybe a TGID one */
#define TSF_BLIND_RECEIVES 4        /* after a linger, sockets this few that were quiet are
                                       received from without a poll to look first */


static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One SK_MEMINFO value of a socket; 0 or a negative errno. */
static int read_meminfo(int fd, unsigned index, uint32_t *value)
{
    uint32_t mem[TSF_SK_MEMINFO_VARS + 8];
    socklen_t len = sizeof mem;
    memset(mem, 0, sizeof mem);
    if (getsockopt(fd, SOL_SOCKET, TSF_SO_MEMINFO, mem, &len) < 0)
        return -errno;
    if (len < (index + 1) * sizeof(uint32_t))
        return -ENOPROTOOPT;
    *value = mem[index];
    return 0;
}

int tsf_source_read_drops(struct tsf_source *src)
{
    uint32_t now = 0;
    int rc = read_meminfo(src->fd, TSF_SK_MEMINFO_DROPS, &now);
    if (rc < 0)
        return rc;
    /* the kernel's counter is 32 bits; keep ours monotonic across its wrap */
    uint32_t low = (uint32_t)src->drops;
    src->drops += (uint32_t)(now - low);
    return 0;
}

long tsf_socket_rmem_alloc(int fd)
{
    uint32_t value = 0;
    int rc = read_meminfo(fd, TSF_SK_MEMINFO_RMEM_ALLOC, &value);
    return rc < 0 ? rc : (long)value;
}

/* ---- draining --------------------------------------------------------------------------- */
struct drain_state {
    const struct tsf_plan *plan;
    const struct tsf_drain_args *a;
    struct tsf_drain_result *res;
};

static uint32_t free_records(const struct drain_state *st)
{
    return st->a->capacity - st->res->records;
}

/* Room for one more batch: record space for a datagram, and a free note slot if notes are kept. */
static int has_room(const struct drain_state *st)
{
    return free_records(st) >= TSF_RECORDS_PER_DATAGRAM &&
           !(st->a->notes_cap && st->res->notes >= st->a->notes_cap);
}

static void parse_datagram(struct drain_state *st, struct tsf_source *src, const uint8_t *dgram,
                           size_t len, uint64_t stamp)
{
    const struct tsf_drain_args *a = st->a;
    struct tsf_drain_result *res = st->res;
    struct tsf_parse_result pr;
    size_t notes_room = res->notes < a->notes_cap ? a->notes_cap - res->notes : 0;
    struct tsf_note *notes = notes_room ? a->notes + res->notes : NULL;

    tsf_seq_observe(src, dgram, len, a->family);
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
    if (pr.consumed < len && tsf_nlmsg_ok(dgram + pr.consumed, (long)(len - pr.consumed))) {
        /* the parse stopped at a sound message: more records than the space left.  Count them as
         * bad, never drop silently.  (A broken frame also stops it, but is already noted.) */
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

/* One recvmmsg batch from one socket, without blocking.  Returns the datagrams received and
 * sets *more when the batch came back full (the queue may hold more); -1 on a fatal error. */
static int drain_batch(struct drain_state *st, struct tsf_source *src, int *more)
{
    const struct tsf_drain_args *a = st->a;
    struct mmsghdr msgs[TSF_BATCH];
    struct iovec iov[TSF_BATCH];

    *more = 0;
    uint32_t k = a->nslots < TSF_BATCH ? a->nslots : TSF_BATCH;
    uint32_t room = free_records(st) / TSF_RECORDS_PER_DATAGRAM;
    if (room < k)
        k = room;
    /* kernel datagrams carry at most one note (an ACK or error): take no more than fit */
    if (a->notes_cap) {
        uint32_t notes_room = st->res->notes < a->notes_cap ? a->notes_cap - st->res->notes : 0;
        if (notes_room < k)
            k = notes_room;
    }
    if (k == 0 || !has_room(st))
        return 0;
    for (uint32_t i = 0; i < k; i++) {
        iov[i].iov_base = a->arena + (size_t)i * a->slot_size;
        iov[i].iov_len = a->slot_size;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_len = 0;
    }
    int n;
    for (;;) {
        n = recvmmsg(src->fd, msgs, k, MSG_DONTWAIT, NULL);
        if (n >= 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
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
            /* a cut datagram would decode wrongly: counted, not parsed.  Its header is intact
             * (a slot holds at least one), so the seq tracker still sees it: no false gap. */
            src->truncated++;
            tsf_seq_observe(src, iov[i].iov_base, len, a->family);
            continue;
        }
        parse_datagram(st, src, iov[i].iov_base, len, stamp);
    }
    st->res->datagrams += (uint32_t)n;
    *more = (uint32_t)n == k;
    return n;
}

/* Drain the sockets marked in ready[] round-robin until none has more or the space is used up.
 * Returns 0, or -1 when a socket failed (res->error set). */
static int drain_ready(struct drain_state *st, struct tsf_source *src, size_t nsrc, uint8_t *ready)
{
    int any = 1;
    while (any && has_room(st)) {
        any = 0;
        for (size_t i = 0; i < nsrc && has_room(st); i++) {
            if (!ready[i])
                continue;
            int more;
            if (drain_batch(st, &src[i], &more) < 0) {
                st->res->error = src[i].error;
                return -1;
            }
            ready[i] = (uint8_t)more;
            any |= more;
        }
    }
    return 0;
}

/* Milliseconds left until deadline (rounded up), 0 when it has passed. */
static int ms_left(uint64_t deadline)
{
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* Sleep up to ms milliseconds, ending early when a wake fd becomes readable: only the wake
 * fds are polled, so the sockets' wait queues carry no entry of ours meanwhile.  Sets res->woken
 * or res->interrupted; returns -1 when poll failed otherwise. */
static int linger_sleep(struct pollfd *wake, nfds_t nwake, int ms, struct tsf_drain_result *res)
{
    int rc = poll(nwake ? wake : NULL, nwake, ms);
    if (rc < 0) {
        if (errno == EINTR) {
            res->interrupted = 1;
            return 0;
        }
        res->error = errno;
        return -1;
    }
    for (nfds_t i = 0; i < nwake; i++)
        if (wake[i].revents)
            res->woken = 1;
    return 0;
}

/* Readiness from one poll: marks ready[], sets res->woken; returns how many sockets are ready,
 * or -1 for a closed fd (POLLNVAL would make poll spin: hand it back). */
static int scan_ready(const struct pollfd *pfd, struct tsf_source *src, size_t nsrc,
                      uint8_t *ready, struct tsf_drain_result *res)
{
    int n = 0;
    for (size_t i = 0; i < nsrc; i++) {
        short ev = pfd[i].revents;
        ready[i] = 0;
        if (ev & POLLNVAL) {
            src[i].error = EBADF;
            res->error = EBADF;
            return -1;
        }
        if (src[i].flags & TSF_SOURCE_WAKE) {
            if (ev)
                res->woken = 1;
        } else if (ev & (POLLIN | POLLERR)) {
            /* POLLERR on netlink means ENOBUFS is pending: the recv reads and counts it */
            ready[i] = 1;
            n++;
        }
    }
    return n;
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
    struct pollfd wake[nsrc ? nsrc : 1];
    uint8_t ready[nsrc ? nsrc : 1];
    uint64_t deadline = a->timeout_ms >= 0 ? now_ns(CLOCK_MONOTONIC) + (uint64_t)a->timeout_ms * 1000000u : 0;
    uint64_t want = a->min_records ? a->min_records : 1;
    nfds_t nwake = 0;
    size_t nsock = 0;
    int lingered = 0;

    for (size_t i = 0; i < nsrc; i++) {
        pfd[i].fd = src[i].fd;
        pfd[i].events = POLLIN;
        src[i].error = 0;
        if (src[i].flags & TSF_SOURCE_WAKE) {
            wake[nwake].fd = src[i].fd;
            wake[nwake++].events = POLLIN;
        } else {
            nsock++;
        }
    }
    /* Each turn: one poll that waits (returning at once when data is queued), then, the first
     * time data is seen and a linger is asked for, the linger before any receive, then the
     * drain.  A burst thus costs what the plain floor pays: poll, sleep, recvmmsg until empty;
     * draining before the linger as well would add a receive per socket and a probe per call. */
    int wait_ms = a->timeout_ms >= 0 ? a->timeout_ms : -1;
    for (;;) {
        int rc = poll(pfd, (nfds_t)nsrc, wait_ms);
        if (rc < 0) {
            if (errno == EINTR) {
                res->interrupted = 1;  /* let the caller run its signal handlers */
                return (int)res->records;
            }
            res->error = errno;
            return (int)res->records;
        }
        int nready = rc > 0 ? scan_ready(pfd, src, nsrc, ready, res) : 0;
        if (nready < 0 || res->woken)
            return (int)res->records;
        if (nready > 0 && !lingered && a->linger_ms > 0 && has_room(&st)) {
            int linger = a->linger_ms;
            if (a->timeout_ms >= 0) {
                int left = ms_left(deadline);
                linger = linger < left ? linger : left;
            }
            lingered = 1;
            if (linger > 0) {
                if (linger_sleep(wake, nwake, linger, res) < 0)
                    return (int)res->records;
                /* sockets quiet at the first poll may have had data since.  A few are
                 * simply received from (one receive each, usually with data after a linger);
                 * many are looked at again with one poll */
                if (nsock - (size_t)nready <= TSF_BLIND_RECEIVES) {
                    for (size_t i = 0; i < nsrc; i++)
                        ready[i] = !(src[i].flags & TSF_SOURCE_WAKE);
                } else if (!res->interrupted) {
                    rc = poll(pfd, (nfds_t)nsrc, 0);
                    if (rc > 0) {
                        int woken = res->woken;
                        nready = scan_ready(pfd, src, nsrc, ready, res);
                        res->woken |= woken;
                        if (nready < 0)
                            return (int)res->records;
                    }
                }
            }
        }
        /* woken or interrupted during the linger: take what was ready, then return */
        if (nready > 0 && drain_ready(&st, src, nsrc, ready) < 0)
            return (int)res->records;
        if (res->woken || res->interrupted)
            return (int)res->records;
        if (res->records + res->notes >= want || !has_room(&st))
            return (int)res->records;
        if (a->timeout_ms >= 0) {
            wait_ms = ms_left(deadline);
            if (wait_ms == 0) {
                res->timed_out = 1;
                return (int)res->records;
            }
        }
    }
}

int tsf_drain_into(const struct tsf_plan *plan, struct tsf_source *src, size_t nsrc,
                   struct tsf_drain_args *a, struct tsf_drain_result *res,
                   uint8_t *records, size_t nrecords, size_t start, uint32_t capacity,
                   int32_t timeout_ms, uint32_t linger_ms)
{
    if (res)
        memset(res, 0, sizeof *res);
    if (!plan || !a || !res || (!records && nrecords) || start > nrecords ||
        capacity > nrecords - start || linger_ms > UINT16_MAX)
        return TSF_E_ARG;
    a->records = records ? records + start * plan->record_size : NULL;
    a->capacity = capacity;
    a->timeout_ms = timeout_ms;
    a->linger_ms = (uint16_t)linger_ms;
    a->min_records = 1;
    return tsf_drain(plan, src, nsrc, a, res);
}
