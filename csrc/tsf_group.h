/* tsf_group: per-group sums of u64 words of the caller's rows, a group being a run of equal key
 * bytes along an order the caller sorted.  The exporter's group-by (live/exporter.py, whose
 * numpy form the tests compare against) calls it once per grouping: one pass instead of a copy
 * of the summed columns, a gather in group order and a reduceat, each paying its pages cold.
 *
 * The plan (struct tsf_group_plan) says which bytes of a row are the key and where each summed
 * word lives; the Python layer writes it once from its dtype and tsf_group_plan_check validates
 * it.  A side block (n rows of n_side u64, row-major) adds columns the caller derived itself.
 * Nothing here allocates; every length is the caller's and is checked.  Returns the number of
 * groups, or a negative TSF_E_* code (tsf_codec.h).
 */
#ifndef TSF_GROUP_H
#define TSF_GROUP_H

#include <stdint.h>

/* cffi:begin */
#define TSF_GROUP_MAX_WORDS 64    /* u64 words summed from a row */
#define TSF_GROUP_MAX_SIDE 16     /* u64 columns summed from the side block */

struct tsf_group_plan {
    uint32_t row_size;            /* bytes of one row */
    uint32_t key, key_len;        /* the bytes that tell one group from the next */
    uint32_t n_words;
    uint32_t word[TSF_GROUP_MAX_WORDS];   /* byte offsets of the summed u64 words */
    uint32_t n_side;              /* side columns, summed after the words */
};

struct tsf_group_args {
    const uint8_t *rows; uint64_t rows_len;    /* n rows of row_size bytes (rows_len bytes) */
    uint32_t n;
    const int64_t *order; uint32_t n_order;    /* row indices, equal keys adjacent */
    const uint64_t *side; uint64_t side_len;   /* n x n_side words (side_len words) */
    uint64_t *sums; uint64_t sums_len;         /* out: cap x (n_words + n_side) words */
    uint32_t *first; uint32_t cap;             /* out: each group's first position in order */
};

int tsf_group_plan_check(const struct tsf_group_plan *plan);
int64_t tsf_group_sums(const struct tsf_group_plan *plan, const struct tsf_group_args *a);
/* cffi:end */

#endif
