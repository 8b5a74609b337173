/* tsf_drain: wait on netlink sockets, receive datagrams in batches (recvmmsg) into a
 * caller-owned arena and decode them straight into caller-owned records.
 *
 * Owned by the exit-stream listener (taskstats_fast/kernel/listener.py: many sockets, one per CPU or
 * shard); bulk queries (connection.py) use it on one socket.  No allocation; the Python layer
 * owns every buffer and every socket.  Per-socket counters live in struct tsf_source so loss is
 * accounted where it happens:
 *   - overruns:  ENOBUFS from recv (the kernel dropped datagrams for this socket),
 *   - drops:     the kernel's own count of dropped datagrams (SO_MEMINFO SK_MEMINFO_DROPS),
 *   - seq_lost:  gaps in nlmsg_seq of exit messages (one socket per CPU makes it per-CPU exact;
 *                counted by the sequence analysis in tsf_seq.c),
 *   - truncated: datagrams larger than an arena slot (MSG_TRUNC; their records are lost).
 */
#ifndef TSF_DRAIN_H
#define TSF_DRAIN_H

#include "tsf_codec.h"

/* cffi:begin */
/* tsf_source.flags */
#define TSF_SOURCE_WAKE 1   /* not a netlink socket: a wake-up fd (eventfd/pipe) that ends a
                               wait when readable; tsf_drain never reads it */

struct tsf_source {
    /* set by the caller */
    int32_t fd;
    uint32_t shard;          /* stamped into every record from this socket */
    uint32_t track_seq;      /* 1: exit stream of one CPU, count nlmsg_seq gaps */
    uint32_t flags;          /* TSF_SOURCE_*; 0 = a netlink socket to drain */
    /* sequence state (track_seq): the next seq expected, and a message held for judgement */
    uint32_t seq_valid;
    uint32_t next_seq;
    uint32_t held;           /* 1: the last message broke the sequence; the next one decides */
    uint32_t held_seq;       /* its seq */
    /* counters, only ever increased */
    uint64_t datagrams;
    uint64_t bytes;
    uint64_t records;
    uint64_t seq_lost;       /* events missing between consecutive seqs */
    uint64_t seq_backwards;  /* a jump back that the next message confirmed: not a loss */
    uint64_t overruns;       /* ENOBUFS reported by recv */
    uint64_t drops;          /* kernel's drop counter for the socket, last read */
    uint64_t truncated;      /* datagrams cut by MSG_TRUNC */
    uint64_t bad;            /* malformed parts (TSF_NOTE_BAD) */
    uint64_t kernel_errors;  /* NLMSG_ERROR notes with a non-zero errno */
    uint64_t seq_foreign;    /* messages carrying another CPU's seq (the exiting task migrated
                                between choosing this CPU's listeners and taking the seq) */
    uint64_t events;         /* TASKSTATS messages from the kernel itself (port 0): exit events,
                                as opposed to replies and ACKs */
    int32_t error;           /* fatal errno of the last call on this socket, else 0 */
    int32_t reserved;
};

struct tsf_drain_args {
    uint8_t *arena;          /* nslots * slot_size bytes: recvmmsg lands datagrams here */
    uint32_t slot_size;      /* >= 8192: a PID+TGID exit datagram is 1172..1428 bytes */
    uint32_t nslots;
    uint8_t *records;        /* capacity records of plan->record_size bytes */
    uint32_t capacity;
    uint32_t notes_cap;
    struct tsf_note *notes;  /* notes_cap notes (kernel errors/ACKs, malformed parts) */
    int32_t timeout_ms;      /* wait for min_records: -1 forever, 0 never */
    uint16_t family;
    uint16_t linger_ms;      /* the first time a socket is readable, sleep this long before
                                receiving (waking only for a wake fd), so the kernel queues a
                                burst that one drain then takes; then return once min_records
                                are in */
    uint64_t min_records;    /* keep waiting (within timeout) until this many records or notes */
};

struct tsf_drain_result {
    uint32_t records;
    uint32_t notes;          /* may exceed notes_cap: the rest were counted, not stored */
    uint32_t datagrams;
    uint32_t timed_out;      /* 1 if the wait ended by timeout */
    int32_t interrupted;     /* 1 if poll was interrupted by a signal (EINTR) */
    int32_t error;           /* errno of a fatal error (poll failure, a dead socket), else 0 */
    uint32_t woken;          /* 1 if a TSF_SOURCE_WAKE fd became readable */
    uint32_t reserved;
};

/* Receive and decode from the sockets in src[0..nsrc) (TSF_SOURCE_WAKE entries are only
 * watched) until min_records records or notes are in (the first data lingers linger_ms before
 * it is received), the record space is
 * nearly full, or the timeout passes.  Sockets are drained round-robin, one recvmmsg batch each
 * per turn, so a busy socket cannot starve the others.
 * Returns the records written (also in res->records) or a negative TSF_E_*. */
int tsf_drain(const struct tsf_plan *plan, struct tsf_source *src, size_t nsrc,
              const struct tsf_drain_args *args, struct tsf_drain_result *res);

/* tsf_drain with the per-call arguments passed in the call, for a caller that makes one call
 * per read and pays for every field it sets: the record space is rows [start, start + capacity)
 * of records (nrecords rows of plan->record_size bytes), waiting for one record or note.  Sets
 * those fields of args (records, capacity, timeout_ms, linger_ms, min_records = 1) and runs
 * tsf_drain.  Returns the records written or a negative TSF_E_* (a space outside records, or a
 * linger that does not fit linger_ms). */
int tsf_drain_into(const struct tsf_plan *plan, struct tsf_source *src, size_t nsrc,
                   struct tsf_drain_args *args, struct tsf_drain_result *res,
                   uint8_t *records, size_t nrecords, size_t start, uint32_t capacity,
                   int32_t timeout_ms, uint32_t linger_ms);

/* Refresh src->drops from the kernel (SO_MEMINFO); 0 or a negative errno. */
int tsf_source_read_drops(struct tsf_source *src);

/* Bytes queued in a socket's receive buffer (SK_MEMINFO rmem_alloc: skb truesize, what
 * SO_RCVBUF limits), or a negative errno. */
long tsf_socket_rmem_alloc(int fd);
/* cffi:end */

#endif
