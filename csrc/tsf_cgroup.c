/* tsf_cgroup.c: one look's cgroup v2 files in one call (see tsf_cgroup.h).
 *
 * What the Python reads cost at an idle interval was not the kernel's reads but the work around
 * them: a bytes object per file, a parse per pressure file, a DirEntry per file of every cgroup
 * directory and numpy calls to join, sort and de-duplicate the thread lists.  Here each file is
 * read into one scratch buffer and parsed where it lies.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tsf_cgroup.h"
#include "tsf_codec.h"

static void fail(struct tsf_cgroup_read *a, int err)
{
    a->changed = 1;
    if (!a->error)
        a->error = err ? err : EIO;
}

/* pread, again when a signal interrupts it before it read anything. */
static ssize_t pread_retrying(int fd, void *buf, size_t len, off_t off)
{
    ssize_t got;
    do
        got = pread(fd, buf, len, off);
    while (got < 0 && errno == EINTR);
    return got;
}

/* Every thread id of one cgroup.threads into keys as (tid << 32 | row): sorting the keys sorts
 * by tid, and among one tid's keys the last is the row read last. */
static int read_threads(struct tsf_cgroup_read *a, int fd, uint32_t row, uint64_t *k)
{
    uint64_t v = 0;
    int digits = 0;
    off_t off = 0;
    for (;;) {
        ssize_t got = pread_retrying(fd, a->buf, a->buf_len, off);
        if (got < 0) {
            fail(a, errno);
            return -1;
        }
        if (got == 0)
            break;
        off += got;
        for (ssize_t i = 0; i < got; i++) {
            uint8_t c = a->buf[i];
            if (c >= '0' && c <= '9') {
                v = v * 10 + (uint64_t)(c - '0');
                digits = 1;
                if (v > 0xFFFFFFFFu) {         /* not a thread id: the file is not what we think */
                    fail(a, EINVAL);
                    return -1;
                }
                continue;
            }
            if (digits) {
                if (*k < a->tids_cap)
                    a->keys[*k] = v << 32 | row;
                (*k)++;
            }
            v = 0;
            digits = 0;
        }
    }
    if (digits) {                              /* no final newline */
        if (*k < a->tids_cap)
            a->keys[*k] = v << 32 | row;
        (*k)++;
    }
    return 0;
}

/* Compare one directory's child directories with the expected listing at *at (advanced past
 * this row's part of it): 0 when equal, 1 when not, -1 when the directory failed. */
static int compare_listing(struct tsf_cgroup_read *a, int fd, uint64_t *at)
{
    int differs = 0;
    if (lseek(fd, 0, SEEK_SET) < 0) {
        fail(a, errno);
        return -1;
    }
    for (;;) {
        long got = syscall(SYS_getdents64, fd, a->buf, a->buf_len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            fail(a, errno);
            return -1;
        }
        if (got == 0)
            return differs;
        for (long pos = 0; pos + 19 <= got;) {
            const uint8_t *d = a->buf + pos;
            uint16_t reclen;
            memcpy(&reclen, d + 16, 2);
            if (reclen < 19 || pos + reclen > got) {
                fail(a, EINVAL);
                return -1;
            }
            const char *name = (const char *)d + 19;
            size_t len = strnlen(name, (size_t)reclen - 19);
            int dot = name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.'));
            if (d[18] == 4 /* DT_DIR */ && !dot && !differs) {
                if (*at + 8 + len + 1 > a->listing_len ||
                    memcmp(a->listing + *at, d, 8) != 0 ||
                    memcmp(a->listing + *at + 8, name, len) != 0 || a->listing[*at + 8 + len] != 0)
                    differs = 1;
                else
                    *at += 8 + len + 1;
            }
            pos += reclen;
        }
    }
}

/* (some, full) total= of one pressure file's text (full stays 0 where the kernel has none). */
static void parse_totals(const uint8_t *p, size_t n, uint64_t *some, uint64_t *full)
{
    size_t line = 0;
    while (line < n) {
        size_t end = line;
        while (end < n && p[end] != '\n')
            end++;
        uint64_t *dst = NULL;
        if (end - line >= 4 && memcmp(p + line, "some", 4) == 0)
            dst = some;
        else if (end - line >= 4 && memcmp(p + line, "full", 4) == 0)
            dst = full;
        if (dst) {
            for (size_t i = line; i + 6 <= end; i++)
                if (memcmp(p + i, "total=", 6) == 0) {
                    uint64_t v = 0;
                    for (i += 6; i < end && p[i] >= '0' && p[i] <= '9'; i++)
                        v = v * 10 + (uint64_t)(p[i] - '0');
                    *dst = v;
                    break;
                }
        }
        line = end + 1;
    }
}

/* A pressure file that fails to read (PSI turned off in this cgroup: EOPNOTSUPP) leaves its
 * counters 0, as an absent one does; a removed cgroup fails its cgroup.threads read too. */
static void read_pressure(struct tsf_cgroup_read *a, int fd, uint64_t *some, uint64_t *full)
{
    ssize_t got = pread_retrying(fd, a->buf, a->buf_len, 0);
    if (got > 0)
        parse_totals(a->buf, (size_t)got, some, full);
}

static void sift(uint64_t *k, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && k[child + 1] > k[child])
            child++;
        if (k[root] >= k[child])
            return;
        uint64_t t = k[root];
        k[root] = k[child];
        k[child] = t;
        root = child;
    }
}

/* In place, no allocation (libc's qsort may allocate). */
static void heapsort_u64(uint64_t *k, size_t n)
{
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift(k, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        uint64_t t = k[0];
        k[0] = k[end];
        k[end] = t;
        sift(k, 0, end);
    }
}

int64_t tsf_cgroup_read(struct tsf_cgroup_read *a)
{
    if (!a || (a->n && (!a->threads_fd || !a->dir_fd || !a->id)) || a->n_psi > TSF_CGROUP_MAX_PSI ||
        (a->n_psi && (!a->psi_fd || !a->psi)) || (a->psi && a->psi_width < 1) || !a->buf || a->buf_len < TSF_CGROUP_MIN_BUF ||
        (a->tids_cap && (!a->keys || !a->tids || !a->tid_cgroup)) ||
        (a->listing_len && !a->listing))
        return TSF_E_ARG;
    for (uint32_t j = 0; j < a->n_psi; j++)
        if ((uint64_t)a->psi_word[j] + 1 >= a->psi_width)
            return TSF_E_ARG;
    a->changed = 0;
    a->error = 0;
    a->listed = 0;
    uint64_t k = 0, at = 0;
    for (uint32_t row = 0; row < a->n; row++) {
        if (a->threads_fd[row] >= 0 && read_threads(a, a->threads_fd[row], row, &k) < 0)
            continue;
        if (a->dir_fd[row] >= 0 && compare_listing(a, a->dir_fd[row], &at) != 0)
            a->changed = 1;
        if (!a->psi)
            continue;
        uint64_t *out = a->psi + (uint64_t)row * a->psi_width;
        out[0] = a->id[row];
        for (uint32_t j = 0; j < a->n_psi; j++) {
            int fd = a->psi_fd[(uint64_t)row * a->n_psi + j];
            uint64_t *some = out + a->psi_word[j], *full = some + 1;
            *some = *full = 0;
            if (fd >= 0)
                read_pressure(a, fd, some, full);
        }
    }
    if (at != a->listing_len)              /* a directory listed no more: fewer children */
        a->changed = 1;
    a->listed = k;
    if (k > a->tids_cap)
        return TSF_E_NOSPACE;
    heapsort_u64(a->keys, (size_t)k);
    uint64_t kept = 0;
    for (uint64_t i = 0; i < k; i++) {
        if (i + 1 < k && a->keys[i + 1] >> 32 == a->keys[i] >> 32)
            continue;                      /* the same thread, listed again by a later row */
        a->tids[kept] = (uint32_t)(a->keys[i] >> 32);
        a->tid_cgroup[kept] = a->id[(uint32_t)a->keys[i]];
        kept++;
    }
    return (int64_t)kept;
}

int64_t tsf_cgroup_usage(const int32_t *fds, uint32_t n, uint64_t *usage, uint8_t *buf,
                         uint64_t buf_len)
{
    if ((n && (!fds || !usage)) || !buf || buf_len < TSF_CGROUP_MIN_BUF)
        return TSF_E_ARG;
    int64_t read = 0;
    for (uint32_t i = 0; i < n; i++) {
        usage[i] = TSF_CGROUP_NO_USAGE;
        if (fds[i] < 0)
            continue;
        ssize_t got = pread_retrying(fds[i], buf, buf_len, 0);
        if (got < 12 || memcmp(buf, "usage_usec ", 11) != 0)
            continue;
        uint64_t v = 0;
        ssize_t j = 11;
        for (; j < got && buf[j] >= '0' && buf[j] <= '9'; j++)
            v = v * 10 + (uint64_t)(buf[j] - '0');
        if (j == 11 || j >= got || buf[j] != '\n')
            continue;
        usage[i] = v;
        read++;
    }
    return read;
}
