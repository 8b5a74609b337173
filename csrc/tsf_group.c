/* tsf_group.c: one pass of per-group sums along a sorted order (see tsf_group.h). */
#include <string.h>

#include "tsf_codec.h"
#include "tsf_group.h"

static inline uint64_t u64_at(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

int tsf_group_plan_check(const struct tsf_group_plan *p)
{
    if (!p || !p->row_size || p->n_words > TSF_GROUP_MAX_WORDS || p->n_side > TSF_GROUP_MAX_SIDE ||
        !p->key_len || p->key_len > p->row_size || p->key > p->row_size - p->key_len ||
        p->row_size < 8)
        return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_words; i++)
        if (p->word[i] > p->row_size - 8)
            return TSF_E_PLAN;
    return 0;
}

int64_t tsf_group_sums(const struct tsf_group_plan *p, const struct tsf_group_args *a)
{
    if (tsf_group_plan_check(p) < 0)
        return TSF_E_PLAN;
    if (!a || (a->n && !a->rows) || (a->n_order && (!a->order || !a->first || !a->sums)) ||
        (p->n_side && a->n && !a->side))
        return TSF_E_ARG;
    const uint64_t width = (uint64_t)p->n_words + p->n_side;
    if ((uint64_t)a->n * p->row_size > a->rows_len || (uint64_t)a->n * p->n_side > a->side_len ||
        (uint64_t)a->cap * width > a->sums_len)
        return TSF_E_ARG;
    uint32_t groups = 0;
    const uint8_t *prev = NULL;
    uint64_t *sum = NULL;
    for (uint32_t i = 0; i < a->n_order; i++) {
        int64_t at = a->order[i];
        if (at < 0 || (uint64_t)at >= a->n)
            return TSF_E_ARG;
        const uint8_t *row = a->rows + (uint64_t)at * p->row_size;
        if (!prev || memcmp(row + p->key, prev + p->key, p->key_len) != 0) {
            if (groups == a->cap)
                return TSF_E_NOSPACE;
            a->first[groups] = i;
            sum = a->sums + (uint64_t)groups * width;
            memset(sum, 0, width * sizeof(*sum));
            groups++;
        }
        prev = row;
        for (uint32_t w = 0; w < p->n_words; w++)
            sum[w] += u64_at(row + p->word[w]);   /* wraps as numpy's uint64 sums do */
        if (p->n_side) {
            const uint64_t *side = a->side + (uint64_t)at * p->n_side;
            for (uint32_t s = 0; s < p->n_side; s++)
                sum[p->n_words + s] += side[s];
        }
    }
    return groups;
}
