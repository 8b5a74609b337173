/* tsf_query: a bulk TASKSTATS lookup as one C call: send GET requests in rounds, receive the
 * replies (tsf_drain: poll + recvmmsg + decode), map each reply to its request by seq, and send
 * again what the kernel dropped.  Runs without the GIL (cffi releases it), so lookups on several
 * sockets from several threads spread the kernel's per-task work over the cores.
 *
 * No allocation: the caller owns every buffer.  The state lives in struct tsf_query, so a call
 * cut short (a signal, a timeout) can be resumed by calling again.
 *
 * One lookup over several sockets: each thread runs tsf_query on its own socket, with the same
 * ids, state and first_seq, and every call claims its rounds one at a time from one shared
 * struct tsf_claims, from the front or from the back, so no thread waits for another that the
 * kernel served less.  Each copies its records to their requests' rows of one shared array
 * (placed), so no row is written by two, and tsf_query_compact closes up the rows of the ids
 * not found once all are done: the joined result needs no copy after.
 */
#ifndef TSF_QUERY_H
#define TSF_QUERY_H

#include "tsf_drain.h"

/* cffi:begin */
/* tsf_query.state[i] */
#define TSF_QUERY_PENDING 0
#define TSF_QUERY_FOUND   1
#define TSF_QUERY_MISSING 2   /* the kernel answered ESRCH */

/* why tsf_query returned */
#define TSF_QUERY_DONE        0   /* every request answered */
#define TSF_QUERY_KERNEL      1   /* the kernel refused one: kernel_error, kernel_error_index */
#define TSF_QUERY_MALFORMED   2   /* a reply was malformed or truncated (src counters say which) */
#define TSF_QUERY_SOCKET      3   /* the socket failed: error */
#define TSF_QUERY_INTERRUPTED 4   /* a signal, or slice_ms passed: call again to resume */
#define TSF_QUERY_TIMEOUT     5   /* no progress for timeout_ms */
#define TSF_QUERY_DROPPING    6   /* the kernel dropped every reply of a round, again and again */

/* The requests [lo, hi) of a lookup not yet claimed, packed as lo | hi << 32 so that one
 * compare-and-swap claims a round from either end; a round is `step` requests, or what is left. */
struct tsf_claims {
    uint64_t span;
    uint32_t step;
    uint32_t reserved;
};

struct tsf_query {
    /* set by the caller */
    int32_t fd;
    uint16_t family;
    uint16_t attr;             /* TASKSTATS_CMD_ATTR_PID or _TGID */
    uint32_t first_seq;        /* request i carries seq first_seq + i */
    uint32_t n;
    const uint32_t *ids;       /* n ids */
    uint8_t *state;            /* n TSF_QUERY_* (zeroed by the caller: all pending) */
    uint32_t in_flight;        /* requests per send: their replies must fit the receive buffer */
    uint32_t slot_size;
    uint32_t nslots;
    uint8_t *arena;            /* nslots * slot_size bytes for recvmmsg */
    uint8_t *reqbuf;           /* in_flight * TSF_GET_REQUEST_SIZE bytes */
    uint8_t *records;          /* capacity records, filled in arrival order */
    uint32_t *row_index;       /* capacity entries: the request each record answers */
    uint32_t capacity;         /* >= n + 2; with placed, >= in_flight + 2 */
    uint32_t notes_cap;        /* >= in_flight + nslots */
    struct tsf_note *notes;
    int32_t timeout_ms;        /* most time without progress */
    int32_t slice_ms;          /* return (TSF_QUERY_INTERRUPTED) after a round once this much time
                                  has passed, so the caller's signal handlers run; 0: never */
    struct tsf_claims *claims; /* NULL: every request is this call's; else it sends the rounds it
                                  claims here (ids, state and placed shared with the other
                                  claimants; placed is required) */
    uint32_t from_back;        /* claim from the back (the high request indices) */
    uint8_t *placed;           /* NULL, or n records: each kept record is copied to its request's
                                  row here (records is then a scratch reused per receive, and
                                  row_index, unordered and last_index are unused), so claimants
                                  sharing one array write only their own requests' rows */
    /* progress, kept across calls */
    uint32_t rows;             /* records kept */
    uint32_t resent;           /* requests sent again after the kernel dropped their replies */
    uint32_t unordered;        /* 1 once a record arrived out of request order */
    uint32_t last_index;       /* request index of the last record kept */
    uint32_t round_lo;         /* claims: the claimed round [round_lo, round_hi) not yet complete */
    uint32_t round_hi;
    /* why the last call returned (besides its TSF_QUERY_* result) */
    int32_t error;             /* errno of a failed send/receive */
    int32_t kernel_error;      /* errno of a refusal other than ESRCH and "could not queue" */
    uint32_t kernel_error_index;
    struct tsf_source src;     /* the socket's counters (fd set by tsf_query) */
};

/* Run (or resume) the lookup: returns a TSF_QUERY_* reason, or a negative TSF_E_* for bad
 * arguments. */
int tsf_query(const struct tsf_plan *plan, struct tsf_query *q);

/* Claims over requests [0, n) in rounds of step (>= 1). */
int tsf_claims_init(struct tsf_claims *c, uint32_t n, uint32_t step);
/* Claim the next round from the front or the back: 1 with [*lo, *hi) set, 0 when none is left. */
int tsf_claims_take(struct tsf_claims *c, int from_back, uint32_t *lo, uint32_t *hi);
/* Hand out nothing more (a claimant failed: the others stop after their current round). */
void tsf_claims_stop(struct tsf_claims *c);

/* Close up n placed records (record_size bytes each) over the rows whose state is not
 * TSF_QUERY_FOUND, keeping their order; returns how many rows are left, or TSF_E_ARG. */
long tsf_query_compact(uint8_t *records, uint32_t record_size, const uint8_t *state, uint32_t n);
/* cffi:end */

#endif
