/*
 * Memory and plain fds: memfd, ftruncate, fallocate, fstat, mmap as an
 * ArrayBuffer, eventfd, dup, close, flock.
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ziu.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

static napi_value n_close(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  /* Never retried: on Linux the fd is gone even when close reports EINTR. */
  return close(fd) < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

static napi_value n_dup(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return d < 0 ? ziu_errno(env, errno) : ziu_int(env, d);
}

static napi_value n_memfd_create(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  char name[250];
  int32_t flags;
  if (!ziu_get_str(env, argv[0], name, sizeof(name), NULL) || !ziu_get_i32(env, argv[1], &flags)) return NULL;
  int fd = memfd_create(name, (unsigned)flags | MFD_CLOEXEC);
  return fd < 0 ? ziu_errno(env, errno) : ziu_int(env, fd);
}

static napi_value n_ftruncate(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd;
  int64_t size;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i64(env, argv[1], &size)) return NULL;
  int r;
  do {
    r = ftruncate(fd, size);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

static napi_value n_fallocate(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  int32_t fd, mode;
  int64_t off, len;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &mode) || !ziu_get_i64(env, argv[2], &off) ||
      !ziu_get_i64(env, argv[3], &len))
    return NULL;
  /* A large hugetlbfs fallocate can be interrupted by a signal; pages already
   * allocated stay allocated, so running it again is safe and finishes the job. */
  int r;
  do {
    r = fallocate(fd, mode, off, len);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

/* flock(2). Callers pass LOCK_NB and wait on the event loop, so a lock held
 * elsewhere never blocks JavaScript; EWOULDBLOCK (== EAGAIN) means "held". */
static napi_value n_flock(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd, op;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &op)) return NULL;
  int r;
  do {
    r = flock(fd, op);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

static napi_value n_fstat(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0) return ziu_errno(env, errno);
  napi_value out;
  napi_create_object(env, &out);
  ziu_set_prop(env, out, "size", ziu_int(env, st.st_size));
  ziu_set_prop(env, out, "allocated", ziu_int(env, (int64_t)st.st_blocks * 512));
  ziu_set_prop(env, out, "mode", ziu_int(env, st.st_mode));
  ziu_set_prop(env, out, "dev", ziu_int(env, (int64_t)st.st_dev));
  ziu_set_prop(env, out, "ino", ziu_int(env, (int64_t)st.st_ino));
  return out;
}

/*
 * Mappings. Each mmap'd region becomes an external ArrayBuffer. munmap()
 * detaches the ArrayBuffer first, so JavaScript can never touch an unmapped
 * address; a mapping nobody unmapped is released when the ArrayBuffer is
 * collected. The record is shared between munmap (event loop) and the
 * finalizer, hence the lock.
 */
struct mapping {
  void *addr;
  size_t len;
  bool mapped;
  struct mapping *next;
};
static struct mapping *mappings;
static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;

static void mapping_finalize(napi_env env, void *data, void *hint) {
  struct mapping *m = hint;
  pthread_mutex_lock(&mappings_lock);
  for (struct mapping **p = &mappings; *p; p = &(*p)->next) {
    if (*p == m) {
      *p = m->next;
      break;
    }
  }
  pthread_mutex_unlock(&mappings_lock);
  if (m->mapped) munmap(m->addr, m->len);
  free(m);
}

static napi_value n_mmap(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  int32_t fd, flags;
  int64_t len, off;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i64(env, argv[1], &len) || !ziu_get_i64(env, argv[2], &off) ||
      !ziu_get_i32(env, argv[3], &flags))
    return NULL;
  if (len <= 0 || off < 0) return ziu_errno(env, EINVAL);
  int extra = flags & MAP_POPULATE;
  void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED | extra, fd, off);
  if (p == MAP_FAILED) return ziu_errno(env, errno);
  struct mapping *m = calloc(1, sizeof(*m));
  if (!m) {
    munmap(p, (size_t)len);
    return ziu_errno(env, ENOMEM);
  }
  m->addr = p;
  m->len = (size_t)len;
  m->mapped = true;
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, (size_t)len, mapping_finalize, m, &ab) != napi_ok) {
    munmap(p, (size_t)len);
    free(m);
    napi_throw_error(env, NULL, "ziu native: cannot create an external ArrayBuffer");
    return NULL;
  }
  pthread_mutex_lock(&mappings_lock);
  m->next = mappings;
  mappings = m;
  pthread_mutex_unlock(&mappings_lock);
  return ab;
}

static napi_value n_munmap(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  void *data = NULL;
  size_t len = 0;
  bool is_ab = false;
  napi_is_arraybuffer(env, argv[0], &is_ab);
  if (!is_ab) {
    napi_throw_type_error(env, NULL, "ziu native: munmap expects an ArrayBuffer from mmap");
    return NULL;
  }
  napi_get_arraybuffer_info(env, argv[0], &data, &len);
  if (data == NULL) return ziu_errno(env, EBADF); /* already detached */
  struct mapping *m = NULL;
  pthread_mutex_lock(&mappings_lock);
  for (struct mapping *it = mappings; it; it = it->next) {
    if (it->addr == data && it->mapped) {
      m = it;
      break;
    }
  }
  pthread_mutex_unlock(&mappings_lock);
  if (!m) return ziu_errno(env, EINVAL);
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) return ziu_errno(env, EINVAL);
  int r = munmap(m->addr, m->len);
  int err = errno;
  pthread_mutex_lock(&mappings_lock);
  m->mapped = false;
  pthread_mutex_unlock(&mappings_lock);
  return r < 0 ? ziu_errno(env, err) : ziu_int(env, 0);
}

/*
 * Compare-and-swap of the first 32-bit word of a shared file (a memfd both
 * instances of a handover hold): the baton that decides, once and for all,
 * whether the old instance thawed or the new one resumed. A sequentially
 * consistent atomic on a MAP_SHARED page is atomic across processes too.
 * Returns the word as it was before; the swap happened iff it equals expected.
 */
static napi_value n_cas_word(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t fd, expected, desired;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &expected) || !ziu_get_i32(env, argv[2], &desired))
    return NULL;
  void *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return ziu_errno(env, errno);
  uint32_t old = (uint32_t)expected;
  __atomic_compare_exchange_n((uint32_t *)map, &old, (uint32_t)desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  munmap(map, 4096);
  return ziu_int(env, (int64_t)old);
}

static napi_value n_eventfd(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t initval;
  bool sem = false;
  if (!ziu_get_i32(env, argv[0], &initval)) return NULL;
  napi_get_value_bool(env, argv[1], &sem);
  int fd = eventfd((unsigned)initval, EFD_CLOEXEC | EFD_NONBLOCK | (sem ? EFD_SEMAPHORE : 0));
  return fd < 0 ? ziu_errno(env, errno) : ziu_int(env, fd);
}

static napi_value n_eventfd_read(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  uint64_t v;
  ssize_t n;
  do {
    n = read(fd, &v, sizeof(v));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ziu_errno(env, errno);
  if (n != sizeof(v)) return ziu_errno(env, EIO);
  napi_value out;
  napi_create_bigint_uint64(env, v, &out);
  return out;
}

static napi_value n_eventfd_write(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd;
  uint64_t v;
  bool lossless;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  if (napi_get_value_bigint_uint64(env, argv[1], &v, &lossless) != napi_ok || !lossless) {
    napi_throw_type_error(env, NULL, "ziu native: eventfd value must be a u64 bigint");
    return NULL;
  }
  ssize_t n;
  do {
    n = write(fd, &v, sizeof(v));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ziu_errno(env, errno);
  return ziu_int(env, 0);
}

napi_value ziu_init_mem(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  ziu_register_const(env, exports, "MFD_HUGETLB", MFD_HUGETLB);
  ziu_register_const(env, exports, "MAP_POPULATE", MAP_POPULATE);
  ziu_register(env, exports, "close", n_close);
  ziu_register(env, exports, "dup", n_dup);
  ziu_register(env, exports, "memfdCreate", n_memfd_create);
  ziu_register(env, exports, "ftruncate", n_ftruncate);
  ziu_register(env, exports, "fallocate", n_fallocate);
  ziu_register(env, exports, "fstat", n_fstat);
  ziu_register_const(env, exports, "LOCK_EX", LOCK_EX);
  ziu_register_const(env, exports, "LOCK_NB", LOCK_NB);
  ziu_register(env, exports, "flock", n_flock);
  ziu_register(env, exports, "mmap", n_mmap);
  ziu_register(env, exports, "munmap", n_munmap);
  ziu_register(env, exports, "casWord", n_cas_word);
  ziu_register(env, exports, "eventfd", n_eventfd);
  ziu_register(env, exports, "eventfdRead", n_eventfd_read);
  ziu_register(env, exports, "eventfdWrite", n_eventfd_write);
  return exports;
}
