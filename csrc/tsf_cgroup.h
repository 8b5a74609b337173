/* tsf_cgroup: one look's cgroup v2 files read and parsed in one call (taskstats_fast/accounting/
 * cgroupfs.py owns the walk, which files there are and what they mean; this knows file
 * descriptors and bytes).
 *
 * The caller keeps every file of the hierarchy open between looks and hands the descriptors
 * over, one *row* per cgroup (a row may have no threads file and no directory: the system's
 * /proc/pressure).  Per row, in row order: its cgroup.threads is read with pread until it
 * returns nothing (a seq_file: a short read is not its end), its directory's child directories
 * are listed (lseek + getdents64) and compared with the listing the caller's walk saw, and its
 * pressure files are read (each made in one piece: one pread) and their total= counters parsed.
 * Then the listed threads are sorted by id, a thread listed twice keeping the row read last.
 * ``tsf_cgroup_usage`` reads cpu.stat's usage_usec of each row.  Nothing here allocates: the
 * caller owns every buffer.  Returns a count or a negative TSF_E_* code (tsf_codec.h).
 */
#ifndef TSF_CGROUP_H
#define TSF_CGROUP_H

#include <stdint.h>

/* cffi:begin */
#define TSF_CGROUP_MIN_BUF 4096      /* smallest read scratch (a getdents64 record fits) */
#define TSF_CGROUP_MAX_PSI 8         /* pressure files per row */
#define TSF_CGROUP_NO_USAGE 0xFFFFFFFFFFFFFFFFull   /* tsf_cgroup_usage: not read */

/* The child listing of one directory, as the caller's walk packs it from os.scandir (getdents
 * order): per child directory its inode (u64, little-endian as stored) then its name and a NUL. */

struct tsf_cgroup_read {
    uint32_t n;                  /* rows */
    const int32_t *threads_fd;   /* n: cgroup.threads, -1: none */
    const int32_t *dir_fd;       /* n: the directory whose child directories are compared, -1: none */
    const uint64_t *id;          /* n: each row's cgroup id (its psi row's first word) */
    uint32_t n_psi;              /* pressure files per row */
    const int32_t *psi_fd;       /* n * n_psi, -1: none (both counters stay 0) */
    uint32_t psi_word[TSF_CGROUP_MAX_PSI];   /* word of each file's 'some' in a psi row; 'full' is the next */
    uint32_t psi_width;          /* u64 words per psi row (> every psi_word + 1) */
    uint64_t *psi;               /* n * psi_width, written: id, then the counters (the rest untouched);
                                  * NULL: no psi rows (then n_psi must be 0) */
    const uint8_t *listing;      /* every row's expected child listing, concatenated in row order */
    uint64_t listing_len;
    uint8_t *buf;                /* read scratch */
    uint64_t buf_len;            /* >= TSF_CGROUP_MIN_BUF */
    uint64_t *keys;              /* work: one u64 per listed thread */
    uint32_t *tids;              /* out: sorted, unique thread ids */
    uint64_t *tid_cgroup;        /* out: the id of the row that listed each (read last) */
    uint64_t tids_cap;           /* capacity of keys, tids and tid_cgroup */
    /* results */
    uint64_t listed;             /* thread ids listed (duplicates included) */
    int32_t changed;             /* 1: a listing differs from ``listing``, or a file failed */
    int32_t error;               /* errno of the first failed read (0: none) */
};

/* Read every row (see above): the number of threads kept (sorted, unique), or TSF_E_NOSPACE
 * (more threads than tids_cap: ``listed`` is a lower bound of what is needed) or TSF_E_ARG. */
int64_t tsf_cgroup_read(struct tsf_cgroup_read *a);

/* usage[i] = cpu.stat usage_usec of fds[i] (TSF_CGROUP_NO_USAGE where fds[i] < 0, its read
 * failed or the file does not start with usage_usec): the rows read, or TSF_E_ARG. */
int64_t tsf_cgroup_usage(const int32_t *fds, uint32_t n, uint64_t *usage, uint8_t *buf,
                         uint64_t buf_len);
/* cffi:end */

#endif
