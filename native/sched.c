/*
 * Thread placement for the packet threads: CPU affinity and scheduling
 * policy, set and read back by thread id (a tid from gettid(), which both
 * sched_setaffinity and sched_setscheduler take), so the control plane can
 * place the engine's worker or the probe's loops from the JS thread and a
 * test can read back exactly what the kernel applied.
 */
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ziu.h"

#define SCHED_MAX_CPUS 1024

/* schedSet(tid, cpus[] (empty: leave affinity), policy -1 leave | 0 other | 1 fifo, priority) -> 0 | -errno */
static napi_value n_sched_set(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  int32_t tid, policy, prio;
  if (!ziu_get_i32(env, argv[0], &tid) || !ziu_get_i32(env, argv[2], &policy) || !ziu_get_i32(env, argv[3], &prio)) return NULL;
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array) {
    napi_throw_type_error(env, NULL, "ziu native: cpus must be an array");
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, argv[1], &n);
  if (tid <= 0 || n > SCHED_MAX_CPUS || policy < -1 || policy > 1) return ziu_errno(env, EINVAL);
  if (n > 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (uint32_t i = 0; i < n; i++) {
      napi_value e;
      int32_t cpu;
      napi_get_element(env, argv[1], i, &e);
      if (!ziu_get_i32(env, e, &cpu)) return NULL;
      if (cpu < 0 || cpu >= CPU_SETSIZE) return ziu_errno(env, EINVAL);
      CPU_SET(cpu, &set);
    }
    if (sched_setaffinity(tid, sizeof(set), &set) < 0) return ziu_errno(env, errno);
  }
  if (policy < 0) return ziu_int(env, 0);
  struct sched_param sp = {.sched_priority = policy == 1 ? prio : 0};
  if (sched_setscheduler(tid, policy == 1 ? SCHED_FIFO : SCHED_OTHER, &sp) < 0) return ziu_errno(env, errno);
  return ziu_int(env, 0);
}

/* schedGet(tid) -> {policy: 0 other | 1 fifo | 2 rr | 3 batch | 5 idle, priority, cpus[]} | -errno */
static napi_value n_sched_get(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t tid;
  if (!ziu_get_i32(env, argv[0], &tid)) return NULL;
  if (tid <= 0) return ziu_errno(env, EINVAL);
  int policy = sched_getscheduler(tid);
  if (policy < 0) return ziu_errno(env, errno);
  struct sched_param sp;
  if (sched_getparam(tid, &sp) < 0) return ziu_errno(env, errno);
  cpu_set_t set;
  if (sched_getaffinity(tid, sizeof(set), &set) < 0) return ziu_errno(env, errno);
  napi_value out, cpus;
  napi_create_object(env, &out);
  napi_create_array(env, &cpus);
  uint32_t k = 0;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) napi_set_element(env, cpus, k++, ziu_int(env, c));
  ziu_set_prop(env, out, "policy", ziu_int(env, policy & ~SCHED_RESET_ON_FORK));
  ziu_set_prop(env, out, "priority", ziu_int(env, sp.sched_priority));
  ziu_set_prop(env, out, "cpus", cpus);
  return out;
}

/* The calling thread's id. */
static napi_value n_gettid(napi_env env, napi_callback_info info) { return ziu_int(env, (int64_t)syscall(SYS_gettid)); }

napi_value ziu_init_sched(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "SCHED_FIFO_MAX", sched_get_priority_max(SCHED_FIFO));
  ziu_register(env, exports, "schedSet", n_sched_set);
  ziu_register(env, exports, "schedGet", n_sched_get);
  ziu_register(env, exports, "gettid", n_gettid);
  return exports;
}
