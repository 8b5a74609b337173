/* tsf_group.c: one pass of per-group sums along a sorted order (see tsf_group.h). */
#include <string.h>

#include "tsf_codec.h"
#include "tsf_group.h"

static inline uint64_t u64_at(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t u32_at(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* An offset of `size` bytes inside a row, or NONE where `none_ok`. */
static int fits(uint32_t at, uint32_t size, uint32_t row_size, int none_ok)
{
    return (none_ok && at == TSF_GROUP_NONE) || (row_size >= size && at <= row_size - size);
}

static uint64_t counted(const struct tsf_group_count *c, const uint8_t *row)
{
    if (c->flag != TSF_GROUP_NONE && (row[c->flag] & c->mask) != c->want)
        return 0;
    if (c->same != TSF_GROUP_NONE && u32_at(row + c->same) != u32_at(row + c->same_as))
        return 0;
    return (c->value == TSF_GROUP_NONE ? 1 : u64_at(row + c->value)) * c->scale;
}

int tsf_group_plan_check(const struct tsf_group_plan *p)
{
    if (!p || !p->row_size || p->n_words > TSF_GROUP_MAX_WORDS || p->n_counts > TSF_GROUP_MAX_COUNTS ||
        !p->key_len || p->key_len > p->row_size || p->key > p->row_size - p->key_len ||
        p->row_size < 8)
        return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_words; i++)
        if (!fits(p->word[i], 8, p->row_size, 0))
            return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_counts; i++) {
        const struct tsf_group_count *c = &p->count[i];
        if (!fits(c->flag, 1, p->row_size, 1) || c->mask > 0xFF || c->want > 0xFF ||
            !fits(c->same, 4, p->row_size, 1) ||
            (c->same != TSF_GROUP_NONE && !fits(c->same_as, 4, p->row_size, 0)) ||
            !fits(c->value, 8, p->row_size, 1))
            return TSF_E_PLAN;
    }
    return 0;
}

int64_t tsf_group_sums(const struct tsf_group_plan *p, const struct tsf_group_args *a)
{
    if (tsf_group_plan_check(p) < 0)
        return TSF_E_PLAN;
    if (!a || (a->n && !a->rows) || (a->n_order && (!a->order || !a->first || !a->sums)))
        return TSF_E_ARG;
    const uint64_t width = (uint64_t)p->n_words + p->n_counts;
    if ((uint64_t)a->n * p->row_size > a->rows_len || (uint64_t)a->cap * width > a->sums_len)
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
        for (uint32_t c = 0; c < p->n_counts; c++)
            sum[p->n_words + c] += counted(&p->count[c], row);
    }
    return groups;
}
