/* struct taskstats as the kernel declares it, written out by hand from include/uapi/linux/taskstats.h
 * of each era, independently of taskstats_fast/layout.py: the compiler's offsetof() on these is the
 * oracle tests/test_layout_compiler.py checks the layout table against. */
#include <stdint.h>
#define A8 __attribute__((aligned(8)))
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64; typedef int64_t __s64;

struct tsf_timespec64 { __s64 tv_sec; __s64 tv_nsec; };

/* v16 (Linux 6.15+) and v17: max/min appended; v17 appends the timestamps */
struct taskstats_v17 {
	__u16 version; __u32 ac_exitcode; __u8 ac_flag; __u8 ac_nice;
	__u64 cpu_count A8; __u64 cpu_delay_total;
	__u64 blkio_count; __u64 blkio_delay_total;
	__u64 swapin_count; __u64 swapin_delay_total;
	__u64 cpu_run_real_total; __u64 cpu_run_virtual_total;
	char ac_comm[32];
	__u8 ac_sched A8; __u8 ac_pad[3];
	__u32 ac_uid A8; __u32 ac_gid; __u32 ac_pid; __u32 ac_ppid; __u32 ac_btime;
	__u64 ac_etime A8; __u64 ac_utime; __u64 ac_stime; __u64 ac_minflt; __u64 ac_majflt;
	__u64 coremem; __u64 virtmem; __u64 hiwater_rss; __u64 hiwater_vm;
	__u64 read_char; __u64 write_char; __u64 read_syscalls; __u64 write_syscalls;
	__u64 read_bytes; __u64 write_bytes; __u64 cancelled_write_bytes;
	__u64 nvcsw; __u64 nivcsw;
	__u64 ac_utimescaled; __u64 ac_stimescaled; __u64 cpu_scaled_run_real_total;
	__u64 freepages_count; __u64 freepages_delay_total;
	__u64 thrashing_count; __u64 thrashing_delay_total;
	__u64 ac_btime64;
	__u64 compact_count; __u64 compact_delay_total;
	__u32 ac_tgid; __u64 ac_tgetime A8; __u64 ac_exe_dev; __u64 ac_exe_inode;
	__u64 wpcopy_count; __u64 wpcopy_delay_total;
	__u64 irq_count; __u64 irq_delay_total;
	__u64 cpu_delay_max; __u64 cpu_delay_min;
	__u64 blkio_delay_max; __u64 blkio_delay_min;
	__u64 swapin_delay_max; __u64 swapin_delay_min;
	__u64 freepages_delay_max; __u64 freepages_delay_min;
	__u64 thrashing_delay_max; __u64 thrashing_delay_min;
	__u64 compact_delay_max; __u64 compact_delay_min;
	__u64 wpcopy_delay_max; __u64 wpcopy_delay_min;
	__u64 irq_delay_max; __u64 irq_delay_min;
	/* v17 */
	struct tsf_timespec64 cpu_delay_max_ts;
	struct tsf_timespec64 blkio_delay_max_ts;
	struct tsf_timespec64 swapin_delay_max_ts;
	struct tsf_timespec64 freepages_delay_max_ts;
	struct tsf_timespec64 thrashing_delay_max_ts;
	struct tsf_timespec64 compact_delay_max_ts;
	struct tsf_timespec64 wpcopy_delay_max_ts;
	struct tsf_timespec64 irq_delay_max_ts;
};

/* v15 (Linux 6.14 before its stable fix): each max/min pair right after its delay total */
struct taskstats_v15 {
	__u16 version; __u32 ac_exitcode; __u8 ac_flag; __u8 ac_nice;
	__u64 cpu_count A8; __u64 cpu_delay_total; __u64 cpu_delay_max; __u64 cpu_delay_min;
	__u64 blkio_count; __u64 blkio_delay_total; __u64 blkio_delay_max; __u64 blkio_delay_min;
	__u64 swapin_count; __u64 swapin_delay_total; __u64 swapin_delay_max; __u64 swapin_delay_min;
	__u64 cpu_run_real_total; __u64 cpu_run_virtual_total;
	char ac_comm[32];
	__u8 ac_sched A8; __u8 ac_pad[3];
	__u32 ac_uid A8; __u32 ac_gid; __u32 ac_pid; __u32 ac_ppid; __u32 ac_btime;
	__u64 ac_etime A8; __u64 ac_utime; __u64 ac_stime; __u64 ac_minflt; __u64 ac_majflt;
	__u64 coremem; __u64 virtmem; __u64 hiwater_rss; __u64 hiwater_vm;
	__u64 read_char; __u64 write_char; __u64 read_syscalls; __u64 write_syscalls;
	__u64 read_bytes; __u64 write_bytes; __u64 cancelled_write_bytes;
	__u64 nvcsw; __u64 nivcsw;
	__u64 ac_utimescaled; __u64 ac_stimescaled; __u64 cpu_scaled_run_real_total;
	__u64 freepages_count; __u64 freepages_delay_total; __u64 freepages_delay_max; __u64 freepages_delay_min;
	__u64 thrashing_count; __u64 thrashing_delay_total; __u64 thrashing_delay_max; __u64 thrashing_delay_min;
	__u64 ac_btime64;
	__u64 compact_count; __u64 compact_delay_total; __u64 compact_delay_max; __u64 compact_delay_min;
	__u32 ac_tgid; __u64 ac_tgetime A8; __u64 ac_exe_dev; __u64 ac_exe_inode;
	__u64 wpcopy_count; __u64 wpcopy_delay_total; __u64 wpcopy_delay_max; __u64 wpcopy_delay_min;
	__u64 irq_count; __u64 irq_delay_total; __u64 irq_delay_max; __u64 irq_delay_min;
};
