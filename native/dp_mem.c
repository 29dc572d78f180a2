/*
 * Guest memory: mapping a frontend's SET_MEM_TABLE regions, and surviving
 * what a hostile frontend can do to them afterwards (docs/datapath.md,
 * "Guest memory").
 *
 * - Only files whose page faults never wait on I/O or on another process are
 *   mapped: shmem (memfd, tmpfs) and hugetlbfs. They are recognised with
 *   F_GET_SEALS, which answers for exactly those two and goes nowhere near a
 *   filesystem's own code: fstatfs, fstat or mmap on a FUSE or NFS file can
 *   each wait on a server the frontend may control.
 * - The frontend can still shrink the file after we mapped it (ftruncate,
 *   fallocate PUNCH_HOLE does not matter: holes read as zeros), and the next
 *   touch of a page past the new end is SIGBUS. A SIGBUS handler looks the
 *   address up in a table of guarded mappings; if it lies in a guest region it
 *   maps anonymous zero pages over the whole mapping (MAP_FIXED), marks the
 *   port's rings faulted (the worker stops running them), records the fault
 *   for the control plane and returns: the access completes on zeros. Any
 *   other SIGBUS goes to whatever handler was there before, or kills the
 *   process as it would have without us.
 *
 * Every access to guest memory happens with dp->lock held (the worker in a
 * pass, the JS thread in a control call), so a guard is added or removed only
 * while no thread can be inside its mapping, and the mapping is replaced
 * under nobody's feet but the faulting thread's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "dp.h"
#include "ziu.h"

#define GUARD_SLOTS (DP_MAX_PORTS * DP_MAX_REGIONS)

/* A guarded mapping. The handler reads slots without a lock: end is written
 * last when a slot is filled (release) and cleared first when it is emptied. */
struct guard {
  uintptr_t start, end; /* the whole mapping; end == 0: free */
  uintptr_t host;       /* where the region starts in it */
  struct dp *dp;
  uint32_t port, region;
};

static struct guard guards[GUARD_SLOTS];
static pthread_mutex_t guards_lock = PTHREAD_MUTEX_INITIALIZER; /* between registrants; never taken by the handler */
static struct sigaction prev_bus;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_err;

/* Not ours: the handler that was there before us, or the default action. */
static void chain(int sig, siginfo_t *si, void *uc) {
  if (prev_bus.sa_flags & SA_SIGINFO) {
    prev_bus.sa_sigaction(sig, si, uc);
    return;
  }
  if (prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN) {
    prev_bus.sa_handler(sig);
    return;
  }
  if (prev_bus.sa_handler == SIG_IGN && si->si_code <= 0) return; /* sent by someone, and ignored before us */
  /* Default (a fault cannot be ignored): die exactly as without us, core included. */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, NULL);
  /* A fault re-runs the access on return and faults again; a sent signal must
   * be sent again (it stays pending until we return: SIGBUS is blocked here). */
  if (si->si_code <= 0) raise(sig);
}

/* Async-signal-safe: atomics, mmap, write, and nothing that locks or allocates
 * (glibc's mmap and write are plain system calls). */
static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  int saved = errno;
  uintptr_t a = (uintptr_t)si->si_addr;
  for (size_t i = 0; si->si_code > 0 && i < GUARD_SLOTS; i++) {
    struct guard *g = &guards[i];
    uintptr_t end = __atomic_load_n(&g->end, __ATOMIC_ACQUIRE);
    if (end == 0 || a < g->start || a >= end) continue;
    /* Zero pages over the whole mapping: every later touch of this region is
     * harmless too, and munmap of the original range still releases it. */
    void *m = mmap((void *)g->start, end - g->start, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) break;
    struct dp_port *p = &g->dp->ports[g->port];
    for (int q = 0; q < DP_MAX_RINGS; q++) __atomic_store_n(&p->rings[q].faulted, true, __ATOMIC_RELAXED);
    if (p->mem_fault.region == 0) {
      p->mem_fault.code = si->si_code;
      p->mem_fault.offset = a >= g->host ? a - g->host : 0;
      __atomic_store_n(&p->mem_fault.region, g->region + 1, __ATOMIC_RELEASE);
    }
    uint64_t one = 1;
    ssize_t w = write(g->dp->fault_fd, &one, sizeof(one)); /* non-blocking; a full counter is still readable */
    (void)w;
    errno = saved;
    return;
  }
  errno = saved;
  chain(sig, si, uc);
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &prev_bus) < 0) install_err = errno;
}

int dp_mem_install(void) {
  pthread_once(&install_once, install);
  return -install_err;
}

static int guard_add(struct dp *dp, uint32_t port, uint32_t region, const struct dp_region *r) {
  pthread_mutex_lock(&guards_lock);
  int slot = -1;
  for (int i = 0; i < GUARD_SLOTS && slot < 0; i++)
    if (__atomic_load_n(&guards[i].end, __ATOMIC_RELAXED) == 0) slot = i;
  if (slot >= 0) {
    struct guard *g = &guards[slot];
    g->start = (uintptr_t)r->map;
    g->host = (uintptr_t)r->host;
    g->dp = dp;
    g->port = port;
    g->region = region;
    __atomic_store_n(&g->end, (uintptr_t)r->map + r->map_len, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&guards_lock);
  return slot;
}

static void guard_remove(int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&guards_lock);
  __atomic_store_n(&guards[slot].end, 0, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&guards_lock);
}

static inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/*
 * Check and map one region; 0 or -errno (nothing mapped then):
 * -EMEDIUMTYPE: not a file on shmem or hugetlbfs (FUSE, NFS, a disk, a device...);
 * -EFAULT: the file ends before the region does (touching that part would be SIGBUS).
 * Only the pages of the region are mapped, from its offset rounded down to
 * the file's block (a huge page on hugetlbfs).
 */
static int map_region(int fd, uint64_t size, uint64_t off, struct dp_region *r) {
  /* First, and alone: it never calls into the file's filesystem. */
  if (fcntl(fd, F_GET_SEALS) < 0) return errno == EINVAL ? -EMEDIUMTYPE : -errno;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (!S_ISREG(st.st_mode)) return -EMEDIUMTYPE;
  if ((uint64_t)st.st_size < size + off) return -EFAULT;
  uint64_t blk = st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;
  uint64_t from = off / blk * blk;
  size_t len = (size_t)align_up(off + size - from, blk);
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)from);
  if (m == MAP_FAILED) return -errno;
  r->map = m;
  r->map_len = len;
  r->page = blk;
  r->host = (uint8_t *)m + (off - from);
  r->guard = -1;
  return 0;
}

/*
 * Map a whole table for `port` and guard it; 0 or -errno with nothing left
 * mapped. -E2BIG: more bytes than lim->max_bytes; -ENOSPC: more regions than
 * lim->max_regions, or the guard table is full. Nothing is faulted in here:
 * a new instance faults in what it will touch first (dp_prefault_port) once
 * it knows the rings; a new connection's first frames fault their pages in.
 */
int dp_mem_map(struct dp *dp, uint32_t port, struct dp_region *nr, const int32_t *fds, const uint64_t *offs, uint32_t n,
               const struct dp_mem_limits *lim) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) total += nr[i].size; /* each < 2^63 (checked by the caller) */
  if (n > lim->max_regions || n > DP_MAX_REGIONS) return -ENOSPC;
  if (total > lim->max_bytes) return -E2BIG;
  int err = 0;
  uint32_t i = 0;
  for (; i < n && !err; i++) {
    err = map_region(fds[i], nr[i].size, offs[i], &nr[i]);
    if (!err && (nr[i].guard = guard_add(dp, port, i, &nr[i])) < 0) {
      munmap(nr[i].map, nr[i].map_len);
      err = -ENOSPC;
    }
  }
  if (err) dp_mem_unmap(nr, i - 1);
  return err;
}

/* Unguard, then unmap: never the other way round, or a new mapping at the
 * same address would be taken for guest memory. */
void dp_mem_unmap(struct dp_region *r, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    guard_remove(r[i].guard);
    r[i].guard = -1;
    munmap(r[i].map, r[i].map_len);
  }
}

/*
 * A port that a new instance takes over: the pages its worker touches first,
 * faulted in at import so that the takeover does not fault them on the
 * packet path (10-20 ms of latency per handover measured on this virtualised
 * host without it). Those are the rings (descriptor table, avail and used
 * rings) and the buffers their descriptors name: the RX buffers the guest
 * posted, the TX buffers it sent from last. The rest of the guest is left
 * alone: faulting in a whole guest cost 0.6 us a 4 KiB page here on a quiet
 * machine, 1.6 us under load (0.15-0.4 s a GiB), on the import path, for
 * memory the switch may never touch.
 *
 * Descriptors are read once each and are as untrusted as on the packet path:
 * a buffer that is not wholly inside one region is skipped, one descriptor
 * counts at most DP_PREFAULT_DESC bytes (an indirect one: its table alone),
 * a port at most DP_PREFAULT_PORT. Buffers are faulted in only where the
 * file already holds the page (mincore), never in its holes, which would be
 * allocated and charged to us; on hugetlbfs, where mincore tells only what
 * this process has mapped, as they are (a guest's hugetlbfs file is
 * allocated up front). MADV_POPULATE_WRITE faults without writing and
 * reports a page past the file's end as an error, not a SIGBUS. Best effort:
 * what is not faulted in here faults in on first touch.
 */
struct pf_range {
  uintptr_t lo, hi; /* whole pages of the region's mapping */
  uint32_t region;
};

struct pf_set {
  struct pf_range *r;
  uint32_t n, cap;
};

static int pf_cmp(const void *a, const void *b) {
  const struct pf_range *x = a, *y = b;
  if (x->region != y->region) return x->region < y->region ? -1 : 1;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* [h, h + len) of port p, in whole pages of its region's file. */
static void pf_add(struct pf_set *s, const struct dp_port *p, const uint8_t *h, uint64_t len) {
  for (uint32_t i = 0; i < p->nregions && s->n < s->cap; i++) {
    const struct dp_region *r = &p->regions[i];
    if (h < r->host || len > r->size || (uint64_t)(h - r->host) > r->size - len) continue;
    const uintptr_t m = (uintptr_t)r->map, pg = r->page;
    uintptr_t lo = m + ((uintptr_t)h - m) / pg * pg;
    uintptr_t hi = m + ((uintptr_t)h + len - m + pg - 1) / pg * pg;
    if (hi > m + r->map_len) hi = m + r->map_len;
    s->r[s->n++] = (struct pf_range){lo, hi, i};
    return;
  }
}

/* Fault in [lo, hi) of region r: the pages its file holds (hugetlbfs: all). Returns bytes faulted. */
static uint64_t pf_fault(const struct dp_region *r, uintptr_t lo, uintptr_t hi) {
  if (r->page > 4096) return madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) == 0 ? hi - lo : 0;
  unsigned char vec[256];
  uint64_t done = 0;
  for (uintptr_t at = lo; at < hi;) {
    size_t n = (hi - at) / 4096;
    if (n > sizeof(vec)) n = sizeof(vec);
    if (mincore((void *)at, n * 4096, vec) < 0) return done;
    for (size_t i = 0; i < n;) {
      size_t j = i;
      while (j < n && (vec[j] & 1)) j++;
      if (j > i) {
        if (madvise((void *)(at + i * 4096), (j - i) * 4096, MADV_POPULATE_WRITE) < 0) return done;
        done += (j - i) * 4096;
      }
      i = j + 1;
    }
    at += n * 4096;
  }
  return done;
}

/* A ring's ranges, sorted and merged, faulted in within what is left of the port's budget. Returns bytes faulted. */
static uint64_t pf_flush(const struct dp_port *p, struct pf_set *s, uint64_t *budget) {
  qsort(s->r, s->n, sizeof(s->r[0]), pf_cmp);
  uint64_t done = 0;
  for (uint32_t i = 0; i < s->n && *budget > 0;) {
    struct pf_range cur = s->r[i++];
    while (i < s->n && s->r[i].region == cur.region && s->r[i].lo <= cur.hi) {
      if (s->r[i].hi > cur.hi) cur.hi = s->r[i].hi;
      i++;
    }
    const uint64_t pg = p->regions[cur.region].page;
    if (cur.hi - cur.lo > *budget) cur.hi = cur.lo + (*budget + pg - 1) / pg * pg;
    *budget -= cur.hi - cur.lo < *budget ? cur.hi - cur.lo : *budget;
    done += pf_fault(&p->regions[cur.region], cur.lo, cur.hi);
  }
  return done;
}

uint64_t dp_prefault_port(struct dp_port *p) {
  uint64_t budget = DP_PREFAULT_PORT, done = 0;
  for (int q = 0; q < DP_MAX_RINGS && budget > 0; q++) {
    struct dp_vring *vr = &p->rings[q];
    if (!vr->addr_set || vr->num == 0 || __atomic_load_n(&vr->faulted, __ATOMIC_RELAXED)) continue;
    /* The descriptor table first, and on its own: its entries are read only if
     * the file holds all of it (a table with a hole was never written: nothing
     * to read, and reading the hole would allocate it). */
    struct pf_range table;
    struct pf_set one = {&table, 0, 1};
    pf_add(&one, p, (const uint8_t *)vr->desc, vring_desc_bytes(vr->num));
    if (one.n == 0 || pf_fault(&p->regions[table.region], table.lo, table.hi) != table.hi - table.lo) continue;
    done += table.hi - table.lo;
    /* Then the avail and used rings and every buffer the table names, merged. */
    struct pf_set bufs = {malloc(sizeof(struct pf_range) * (vr->num + 2)), 0, vr->num + 2};
    if (!bufs.r) break;
    pf_add(&bufs, p, (const uint8_t *)vr->avail, vring_avail_bytes(vr->num));
    pf_add(&bufs, p, (const uint8_t *)vr->used, vring_used_bytes(vr->num));
    for (uint32_t i = 0; i < vr->num; i++) {
      const uint64_t addr = __atomic_load_n(&vr->desc[i].addr, __ATOMIC_RELAXED);
      uint32_t len = __atomic_load_n(&vr->desc[i].len, __ATOMIC_RELAXED);
      if (len == 0) continue;
      if (len > DP_PREFAULT_DESC) len = DP_PREFAULT_DESC;
      const uint8_t *h = dp_gpa(p, addr, len);
      if (h) pf_add(&bufs, p, h, len);
    }
    done += pf_flush(p, &bufs, &budget);
    free(bufs.r);
  }
  return done;
}

/* F_GET_SEALS: the seals of a shmem or hugetlbfs file; -EINVAL for any other
 * kind of fd (it never reaches the file's filesystem, so it cannot block). */
static napi_value n_file_seals(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  int s = fcntl(fd, F_GET_SEALS);
  return s < 0 ? ziu_errno(env, errno) : ziu_int(env, s);
}

/*
 * Closing can block: close() of a FUSE or NFS file sends the server a FLUSH
 * and waits for the answer, which a hostile server never gives. An fd we
 * refused as guest memory is closed on a small detached thread of its own
 * (all signals blocked), so only that thread waits. At most CLOSERS_MAX
 * such closes wait at once: -EAGAIN beyond, and the caller decides.
 */
#define CLOSERS_MAX 64
static int closers;

static void *closer(void *arg) {
  close((int)(intptr_t)arg);
  __atomic_sub_fetch(&closers, 1, __ATOMIC_RELAXED);
  return NULL;
}

static napi_value n_close_detached(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  if (fd < 0) return ziu_errno(env, EBADF);
  if (__atomic_add_fetch(&closers, 1, __ATOMIC_RELAXED) > CLOSERS_MAX) {
    __atomic_sub_fetch(&closers, 1, __ATOMIC_RELAXED);
    return ziu_errno(env, EAGAIN);
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int err = pthread_create(&t, &attr, closer, (void *)(intptr_t)fd);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (err) {
    __atomic_sub_fetch(&closers, 1, __ATOMIC_RELAXED);
    return ziu_errno(env, err);
  }
  return ziu_int(env, 0);
}

void dp_mem_register(napi_env env, napi_value exports) {
  ziu_register(env, exports, "closeDetached", n_close_detached);
  ziu_register_const(env, exports, "F_SEAL_SHRINK", F_SEAL_SHRINK);
  ziu_register(env, exports, "fileSeals", n_file_seals);
}
