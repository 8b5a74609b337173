/* tsf_group: per-group sums of u64 words of the caller's rows, a group being a run of equal key
 * bytes along an order the caller sorted.  The exporter's group-by (live/exporter.py, whose
 * numpy form the tests compare against) calls it once per grouping: one pass instead of a copy
 * of the summed columns, a gather in group order and a reduceat, each paying its pages cold.
 *
 * The plan (struct tsf_group_plan) says which bytes of a row are the key and where each summed
 * word lives; the Python layer writes it once from its dtype and tsf_group_plan_check validates
 * it.  Counts (struct tsf_group_count) add columns derived from each row by a test the plan
 * describes: a flag byte under a mask, two u32 fields equal, and a value or 1.  The caller's
 * numpy needed a pass over every row per derived column, each paying its pages cold.
 * Nothing here allocates; every length is the caller's and is checked.  Returns the number of
 * groups, or a negative TSF_E_* code (tsf_codec.h).
 */
#ifndef TSF_GROUP_H
#define TSF_GROUP_H

#include <stdint.h>

/* cffi:begin */
#define TSF_GROUP_MAX_WORDS 64    /* u64 words summed from a row */
#define TSF_GROUP_MAX_COUNTS 16   /* columns counted from tests of a row */
#define TSF_GROUP_NONE 0xFFFFFFFFu   /* an offset that says: no such test, or a value of 1 */

/* A column that adds, for each row that passes both tests, its value (or 1) times scale. */
struct tsf_group_count {
    uint32_t flag;                /* offset of a u8 tested: (row[flag] & mask) == want */
    uint32_t mask, want;
    uint32_t same, same_as;       /* offsets of two u32s that must be equal */
    uint32_t value;               /* offset of the u64 added */
    uint64_t scale;
};

struct tsf_group_plan {
    uint32_t row_size;            /* bytes of one row */
    uint32_t key, key_len;        /* the bytes that tell one group from the next */
    uint32_t n_words;
    uint32_t word[TSF_GROUP_MAX_WORDS];   /* byte offsets of the summed u64 words */
    uint32_t n_counts;            /* counted columns, summed after the words */
    struct tsf_group_count count[TSF_GROUP_MAX_COUNTS];
};

struct tsf_group_args {
    const uint8_t *rows; uint64_t rows_len;    /* n rows of row_size bytes (rows_len bytes) */
    uint32_t n;
    const int64_t *order; uint32_t n_order;    /* row indices, equal keys adjacent */
    uint64_t *sums; uint64_t sums_len;         /* out: cap x (n_words + n_counts) words */
    uint32_t *first; uint32_t cap;             /* out: each group's first position in order */
};

int tsf_group_plan_check(const struct tsf_group_plan *plan);
int64_t tsf_group_sums(const struct tsf_group_plan *plan, const struct tsf_group_args *a);
/* cffi:end */

#endif
