/* tsf_join: the accounting merge's join of two looks and the exit records between them, in one
 * pass (taskstats_fast/accounting/merge.py owns the rules and keeps them in numpy as the
 * reference the tests compare against).
 *
 * Rows are the caller's numpy records: *sightings* (merge.SIGHTING_DTYPE) and *task rows*
 * (interval.TASK_DTYPE).  The plan (struct tsf_join_plan) says where each field lives; the
 * Python layer writes it once from its dtypes and tsf_join_plan_check validates it.  Nothing
 * here allocates: the caller owns every buffer, including the scratch.  Returns 0 or a
 * negative TSF_E_* code (tsf_codec.h).
 */
#ifndef TSF_JOIN_H
#define TSF_JOIN_H

#include <stdint.h>

/* cffi:begin */
#define TSF_JOIN_MAX_WORDS 64     /* monotone words of a sighting */
#define TSF_JOIN_MAX_COPIES 32    /* fields copied from a sighting into its task row */
#define TSF_JOIN_MAX_LEVELS 8     /* u64 levels folded by maximum */

struct tsf_join_copy { uint32_t src, dst, len; };

struct tsf_join_plan {
    uint32_t sighting_size, row_size;          /* bytes of one sighting / one task row */
    /* sighting: the monotone block (u64 words; the first n_counters are the delta counters),
     * then single fields (byte offsets) */
    uint32_t s_mono, n_mono, n_counters;
    uint32_t elapsed_word, cpu_word;           /* ac_etime, cpu_run_virtual_total in the block */
    uint32_t n_identity;                       /* words compared to tell a task from a reused pid */
    uint32_t identity[TSF_JOIN_MAX_WORDS];
    uint32_t n_levels;
    uint32_t s_level[TSF_JOIN_MAX_LEVELS];     /* u64 levels: the later is the larger */
    uint32_t s_pid, s_time_ns, s_btime64, s_exitcode, s_birth_lo, s_birth_ns, s_exited;
    uint32_t s_btime;                          /* i64 start second: sorts and de-duplicates exits */
    /* task row: copies from the sighting, then our own fields */
    uint32_t n_copies;
    struct tsf_join_copy copy[TSF_JOIN_MAX_COPIES];
    uint32_t r_btime64, r_exitcode, r_cgroup, r_state, r_attribution, r_flags;
    uint32_t r_summed;                         /* u64 cpu_ns, then the n_counters deltas */
    uint8_t zero_when_off[TSF_JOIN_MAX_WORDS]; /* counters kernel.task_delayacct=0 leaves 0 */
    int64_t tolerance_ns;                      /* slack of two birth ranges (merge.py) */
    uint8_t state_born, state_exited, attribution_exact;
    uint8_t flag_no_start, flag_pid_reused, flag_delayacct_off;
};

/* A look's cgroup walk: sorted unique thread ids and each one's cgroup id. */
struct tsf_join_cgroups {
    const uint32_t *tids;
    const uint64_t *cgroup;
    uint32_t n;
};

struct tsf_join_args {
    const uint8_t *start; uint32_t n_start;   /* the ledger: sightings sorted by unique pid */
    const uint8_t *ends; uint32_t n_end;      /* the closing look: sorted by unique pid */
    uint8_t *exits; uint32_t n_exit;          /* exit sightings sorted by pid; folded in place */
    int64_t start_ns;                         /* when the opening look began */
    struct tsf_join_cgroups start_cg, end_cg;
    uint8_t delayacct_off;
    /* out: task rows (capacity n_exit + n_end), the next ledger (n_end sightings),
     * keep[row] (0: an exited ledger entry seen again: drop it), and scratch */
    uint8_t *rows; uint32_t rows_cap;
    uint8_t *ledger; uint32_t ledger_cap;
    uint8_t *keep;
    int64_t *work; uint32_t work_len;         /* n_start + 3 * n_end + 2 * n_exit */
    /* results */
    uint32_t n_rows, n_dropped, n_unresolved; /* rows; of them to drop; with no cgroup */
};

/* Where a sighting's words come from in a decoded record (layout.DTYPE), and where the
 * computed ones go (merge.sightings says what they mean). */
#define TSF_SIGHTING_MAX_WORDS 96
struct tsf_sighting_plan {
    uint32_t record_size, sighting_size;
    uint32_t n_words;                          /* sighting word i is record word word[i] */
    uint32_t word[TSF_SIGHTING_MAX_WORDS];
    uint32_t r_kind, r_layout, r_btime, r_btime64, r_time_ns, r_etime;   /* record offsets */
    uint8_t kind_pid;
    uint16_t btime64_since;                    /* layouts from which ac_btime64 is filled */
    uint32_t s_pid, s_btime, s_birth_lo, s_birth_ns, s_exited;          /* sighting offsets */
};

int tsf_sighting_plan_check(const struct tsf_sighting_plan *plan);
/* The PID records of n records as sightings in out (capacity cap), in order; look_ns (when
 * has_look) bounds their births from below.  Returns how many, or a negative TSF_E_* code;
 * *sorted is 1 when their pids strictly increase. */
int64_t tsf_sightings(const struct tsf_sighting_plan *plan, const uint8_t *records, uint32_t n,
                      int has_look, int64_t look_ns, uint8_t *out, uint32_t cap, int *sorted);
int tsf_join_plan_check(const struct tsf_join_plan *plan);
/* The interval's rows (see merge.py's opening comment): 0, or a negative TSF_E_* code. */
int tsf_join(const struct tsf_join_plan *plan, struct tsf_join_args *args);
/* merge._unique_exits: the n exit sightings in order of (pid, start second), ties in their own
 * order, each repeat of one exit record (the same pid, start second and monotone words as the
 * next one) left out, copied into out (capacity cap sightings).  work is scratch of work_len
 * bytes, at least TSF_EXIT_ORDER_WORK bytes per exit.  Returns how many were copied, or a
 * negative TSF_E_* code. */
#define TSF_EXIT_ORDER_WORK 32
int64_t tsf_exit_order(const struct tsf_join_plan *plan, const uint8_t *exits, uint32_t n,
                       uint8_t *out, uint32_t cap, uint8_t *work, uint64_t work_len);
/* cffi:end */

#endif
