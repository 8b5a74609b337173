/* tsf_query.c: the bulk lookup loop (see tsf_query.h).
 *
 * Requests go out in rounds of at most in_flight ids: the kernel answers every GET inside the
 * send() and queues the replies, so a round's replies must fit the receive buffer (the caller
 * sizes in_flight).  tsf_drain receives and decodes them; each record or error note is mapped to
 * its request by seq - first_seq.  Replies the kernel could not queue (a drop counted in
 * SO_MEMINFO, ENOBUFS, an EAGAIN/ENOBUFS/ENOMEM error reply) leave their requests pending, and
 * the round is sent again for those.
 *
 * With claims, several calls (threads, each with its own socket) share the requests, their
 * state bytes and the placed records: a call sends only the rounds it claimed, and writes only
 * those requests' state and rows, so no byte is written by two threads.
 */
#define _GNU_SOURCE
#include "tsf_query.h"
#include "tsf_nl.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define TSF_MAX_FRUITLESS_RESENDS 3   /* rounds in a row that got nothing back before giving up */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int resend_errno(int32_t code)
{
    return code == EAGAIN || code == ENOBUFS || code == ENOMEM;
}

/* The request a seq answers, or n when it is none of ours. */
static uint32_t request_of(const struct tsf_query *q, uint32_t seq)
{
    uint32_t idx = seq - q->first_seq;
    return idx < q->n ? idx : q->n;
}

/* The first row of the records array the next receive decodes into: placed records leave it
 * as soon as they are kept, so their array is a scratch refilled from its start. */
static uint32_t arrival_row(const struct tsf_query *q)
{
    return q->placed ? 0 : q->rows;
}

/* Keep the records just decoded that answer pending requests: compacted to the front of the
 * records array in arrival order, or copied to their request's row of placed.  Returns how many
 * it kept. */
static uint32_t keep_records(const struct tsf_plan *plan, struct tsf_query *q, uint32_t count)
{
    uint32_t kept = 0, base = arrival_row(q);
    for (uint32_t r = 0; r < count; r++) {
        uint8_t *rec = q->records + (size_t)(base + r) * plan->record_size;
        uint32_t idx = request_of(q, tsf_rd32(rec + plan->off_seq));
        if (idx == q->n || q->state[idx] != TSF_QUERY_PENDING)
            continue;   /* a stale reply (an abandoned lookup) or a duplicate */
        q->state[idx] = TSF_QUERY_FOUND;
        if (q->placed) {
            memcpy(q->placed + (size_t)idx * plan->record_size, rec, plan->record_size);
            kept++;
            continue;
        }
        uint32_t row = q->rows + kept;
        if (row != q->rows + r)
            memmove(q->records + (size_t)row * plan->record_size, rec, plan->record_size);
        if (row > 0 && idx < q->last_index)
            q->unordered = 1;
        q->row_index[row] = idx;
        q->last_index = idx;
        kept++;
    }
    q->rows += kept;
    return kept;
}

/* Send the pending requests among [lo, hi); returns how many, or -1 (q->error set). */
static long send_round(struct tsf_query *q, uint32_t lo, uint32_t hi)
{
    size_t len = 0;
    uint32_t count = 0;
    for (uint32_t i = lo; i < hi; i++) {
        if (q->state[i] != TSF_QUERY_PENDING)
            continue;
        long built = tsf_build_get(q->reqbuf + len, TSF_GET_REQUEST_SIZE, q->family,
                                   q->first_seq + i, q->attr, &q->ids[i], 1, 0);
        if (built != TSF_GET_REQUEST_SIZE)
            return -1;
        len += TSF_GET_REQUEST_SIZE;
        count++;
    }
    if (!count)
        return 0;
    for (;;) {
        ssize_t sent = send(q->fd, q->reqbuf, len, 0);
        if (sent >= 0)
            break;
        if (errno == EINTR)
            continue;
        q->error = errno;
        return -1;
    }
    return count;
}

/* Receive until `expected` requests of the round are answered.  Returns -1 to go on (every one
 * answered, or *lost set and the queue empty) or a TSF_QUERY_* reason to return. */
static int collect(const struct tsf_plan *plan, struct tsf_query *q, uint32_t expected, int *lost)
{
    struct tsf_drain_args a;
    struct tsf_drain_result res;
    uint32_t answered = 0;
    uint64_t truncated = q->src.truncated, bad = q->src.bad, overruns = q->src.overruns;
    uint64_t deadline = mono_ms() + (uint64_t)(q->timeout_ms > 0 ? q->timeout_ms : 0);

    memset(&a, 0, sizeof a);
    a.arena = q->arena;
    a.slot_size = q->slot_size;
    a.nslots = q->nslots;
    a.notes = q->notes;
    a.notes_cap = q->notes_cap;
    a.family = q->family;
    while (answered < expected) {
        uint64_t now = mono_ms();
        a.records = q->records + (size_t)arrival_row(q) * plan->record_size;
        a.capacity = q->capacity - arrival_row(q);
        a.min_records = expected - answered;
        a.timeout_ms = *lost ? 0 : (int32_t)(now < deadline ? deadline - now : 0);
        int rc = tsf_drain(plan, &q->src, 1, &a, &res);
        if (rc < 0)
            return rc;
        uint32_t step = keep_records(plan, q, res.records);
        for (uint32_t i = 0; i < res.notes && i < q->notes_cap; i++) {
            const struct tsf_note *note = &q->notes[i];
            if (note->kind != TSF_NOTE_ERROR)
                continue;
            uint32_t idx = request_of(q, note->seq);
            if (idx == q->n || q->state[idx] != TSF_QUERY_PENDING)
                continue;
            if (note->code == ESRCH) {
                q->state[idx] = TSF_QUERY_MISSING;
            } else if (resend_errno(note->code)) {
                *lost = 1;   /* stays pending: the round sends it again */
            } else {
                q->kernel_error = note->code;
                q->kernel_error_index = idx;
                return TSF_QUERY_KERNEL;
            }
            step++;
        }
        if (res.notes > q->notes_cap || q->src.overruns != overruns)
            *lost = 1;   /* notes counted but not stored, or ENOBUFS: their requests stay pending */
        if (q->src.truncated != truncated || q->src.bad != bad)
            return TSF_QUERY_MALFORMED;
        if (res.error) {
            q->error = res.error;
            return TSF_QUERY_SOCKET;
        }
        if (res.interrupted)
            return TSF_QUERY_INTERRUPTED;
        answered += step;
        if (step)
            deadline = mono_ms() + (uint64_t)(q->timeout_ms > 0 ? q->timeout_ms : 0);
        if (answered < expected && res.timed_out)
            return *lost ? -1 : TSF_QUERY_TIMEOUT;
    }
    return -1;
}

static uint32_t pending_in(const struct tsf_query *q, uint32_t lo, uint32_t hi)
{
    uint32_t count = 0;
    for (uint32_t i = lo; i < hi; i++)
        count += q->state[i] == TSF_QUERY_PENDING;
    return count;
}

/* Send the round [lo, hi) until every request of it is answered (again for what the kernel
 * dropped).  Returns -1 to go on, or a TSF_QUERY_* reason to return. */
static int run_round(const struct tsf_plan *plan, struct tsf_query *q, uint32_t lo, uint32_t hi)
{
    uint32_t fruitless = 0, first = 1;
    for (;;) {
        uint32_t before = pending_in(q, lo, hi);
        if (!before)
            return -1;
        if (!first)
            q->resent += before;
        first = 0;
        uint64_t drops = q->src.drops;
        long sent = send_round(q, lo, hi);
        if (sent < 0)
            return q->error ? TSF_QUERY_SOCKET : TSF_E_ARG;
        /* the kernel answered inside send(): a drop has happened by now or never will */
        tsf_source_read_drops(&q->src);
        int lost = q->src.drops != drops;
        int rc = collect(plan, q, (uint32_t)sent, &lost);
        if (rc >= 0 || rc < -1)
            return rc;
        uint32_t after = pending_in(q, lo, hi);
        fruitless = after == before ? fruitless + 1 : 0;
        if (fruitless > TSF_MAX_FRUITLESS_RESENDS)
            return TSF_QUERY_DROPPING;
    }
}

/* The rounds this call claims, one at a time, until none is left (round_lo..round_hi: what is
 * left of the last one claimed, so a call cut short resumes there). */
static int run_claimed(const struct tsf_plan *plan, struct tsf_query *q, uint64_t started)
{
    for (;;) {
        if (q->round_lo >= q->round_hi) {
            uint32_t lo, hi;
            if (!tsf_claims_take(q->claims, q->from_back != 0, &lo, &hi))
                return TSF_QUERY_DONE;
            if (hi > q->n)
                return TSF_E_ARG;   /* claims over more requests than this call was given */
            q->round_lo = lo;
            q->round_hi = hi;
        }
        /* a claimed round may be longer than this socket's own rounds: send it in those */
        uint32_t hi = q->round_hi - q->round_lo < q->in_flight ? q->round_hi
                                                              : q->round_lo + q->in_flight;
        int rc = run_round(plan, q, q->round_lo, hi);
        if (rc != -1)
            return rc;
        q->round_lo = hi;
        if (q->slice_ms > 0 && mono_ms() - started >= (uint64_t)q->slice_ms)
            return TSF_QUERY_INTERRUPTED;   /* resumable: every round sent so far is complete */
    }
}

int tsf_query(const struct tsf_plan *plan, struct tsf_query *q)
{
    if (!plan || !q || (!q->ids && q->n) || (!q->state && q->n) || !q->in_flight || !q->reqbuf ||
        !q->arena || !q->records || (!q->row_index && !q->placed) || !q->notes ||
        q->capacity < (uint64_t)(q->placed ? q->in_flight : q->n) + 2 ||
        q->notes_cap < q->in_flight + q->nslots || (q->claims && !q->placed))
        return TSF_E_ARG;
    q->src.fd = q->fd;
    q->error = 0;
    uint64_t started = mono_ms();
    if (q->claims)
        return run_claimed(plan, q, started);
    for (uint32_t lo = 0; lo < q->n; lo += q->in_flight) {
        uint32_t hi = q->n - lo < q->in_flight ? q->n : lo + q->in_flight;
        int rc = run_round(plan, q, lo, hi);
        if (rc != -1)
            return rc;
        if (q->slice_ms > 0 && mono_ms() - started >= (uint64_t)q->slice_ms && hi < q->n)
            return TSF_QUERY_INTERRUPTED;   /* resumable: every round so far is complete */
    }
    return TSF_QUERY_DONE;
}

int tsf_claims_init(struct tsf_claims *c, uint32_t n, uint32_t step)
{
    if (!c || !step)
        return TSF_E_ARG;
    c->step = step;
    c->reserved = 0;
    __atomic_store_n(&c->span, (uint64_t)n << 32, __ATOMIC_RELEASE);
    return 0;
}

int tsf_claims_take(struct tsf_claims *c, int from_back, uint32_t *lo, uint32_t *hi)
{
    uint64_t span = __atomic_load_n(&c->span, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t a = (uint32_t)span, b = (uint32_t)(span >> 32);
        if (a >= b)
            return 0;
        uint32_t size = b - a < c->step ? b - a : c->step;
        uint32_t na = from_back ? a : a + size, nb = from_back ? b - size : b;
        uint64_t next = (uint64_t)na | (uint64_t)nb << 32;
        if (__atomic_compare_exchange_n(&c->span, &span, next, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            *lo = from_back ? nb : a;
            *hi = from_back ? b : na;
            return 1;
        }
    }
}

void tsf_claims_stop(struct tsf_claims *c)
{
    __atomic_store_n(&c->span, 0, __ATOMIC_RELEASE);
}

long tsf_query_compact(uint8_t *records, uint32_t record_size, const uint8_t *state, uint32_t n)
{
    if ((!records || !state) && n)
        return TSF_E_ARG;
    uint32_t rows = 0, i = 0;
    while (i < n) {
        if (state[i] != TSF_QUERY_FOUND) {
            i++;
            continue;
        }
        uint32_t end = i;   /* one move per run of found rows */
        while (end < n && state[end] == TSF_QUERY_FOUND)
            end++;
        if (rows != i)
            memmove(records + (size_t)rows * record_size, records + (size_t)i * record_size,
                    (size_t)(end - i) * record_size);
        rows += end - i;
        i = end;
    }
    return rows;
}
