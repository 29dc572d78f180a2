/*
 * Thread placement for the packet threads: CPU affinity and scheduling
 * policy, set and read back by thread id (a tid from gettid(), which both
 * sched_setaffinity and sched_setscheduler take), so the control plane can
 * place the engine's worker or the probe's loops from the JS thread and a
 * test can read back exactly what the kernel applied. Also pidfds, so that
 * a process is signalled as itself and never as a pid someone reused.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "probe.h" /* its clock and latency histogram, for the noise meter */
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


/*
 * The host's own noise: a thread on one CPU, at the highest priority it may
 * have, that sleeps to a fixed schedule and records how late each wake-up
 * is. Nothing in user space can delay a SCHED_FIFO 99 thread, so what it sees
 * (timer slack, non-preemptible kernel work, a hypervisor taking the vCPU)
 * lies outside any switch: the floor under every VM-side figure.
 */
#define NOISE_MAGIC 0x6e6f6973u

struct noise {
  uint32_t magic;
  pthread_t thread;
  bool started;
  int stop;
  int cpu, priority;
  uint64_t period_ns;
  int applied_priority; /* 0: SCHED_OTHER (not permitted), else the FIFO priority it got */
  uint64_t samples, max_ns, max_at_ns, sum_ns, over_1ms;
  uint64_t hist[HIST_BUCKETS]; /* the probe's log-linear histogram: < 1% relative error */
};

static void *noise_main(void *arg) {
  struct noise *n = arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(n->cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
  struct sched_param sp = {.sched_priority = n->priority};
  n->applied_priority = n->priority > 0 && sched_setscheduler(0, SCHED_FIFO, &sp) == 0 ? n->priority : 0;
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* as the probe's TX thread: no 50 us of slack on top */
  uint64_t next = probe_now_ns() + n->period_ns;
  while (!__atomic_load_n(&n->stop, __ATOMIC_ACQUIRE)) {
    struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull), .tv_nsec = (long)(next % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    uint64_t now = probe_now_ns(), late = now > next ? now - next : 0;
    n->samples++;
    n->sum_ns += late;
    if (late > n->max_ns) {
      n->max_ns = late;
      n->max_at_ns = next;
    }
    if (late > 1000000) n->over_1ms++;
    n->hist[hist_index(late)]++;
    next += n->period_ns;
    if (next < now) next = now + n->period_ns; /* a long stall: do not count the missed ticks twice */
  }
  return NULL;
}

static void noise_finalize(napi_env env, void *data, void *hint) {
  struct noise *n = data;
  if (n->started) {
    __atomic_store_n(&n->stop, 1, __ATOMIC_RELEASE);
    pthread_join(n->thread, NULL);
  }
  n->magic = 0;
  free(n);
}

/* noiseStart(cpu, priority (0: SCHED_OTHER), periodNs) -> handle | -errno */
static napi_value n_noise_start(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t cpu, prio;
  int64_t period;
  if (!ziu_get_i32(env, argv[0], &cpu) || !ziu_get_i32(env, argv[1], &prio) || !ziu_get_i64(env, argv[2], &period)) return NULL;
  if (cpu < 0 || cpu >= CPU_SETSIZE || prio < 0 || prio > 99 || period < 10000 || period > 1000000000) return ziu_errno(env, EINVAL);
  struct noise *n = calloc(1, sizeof(*n));
  if (!n) return ziu_errno(env, ENOMEM);
  n->magic = NOISE_MAGIC;
  n->cpu = cpu;
  n->priority = prio;
  n->period_ns = (uint64_t)period;
  int err = pthread_create(&n->thread, NULL, noise_main, n);
  if (err) {
    free(n);
    return ziu_errno(env, err);
  }
  n->started = true;
  napi_value ext;
  if (napi_create_external(env, n, noise_finalize, NULL, &ext) != napi_ok) {
    napi_throw_error(env, NULL, "ziu native: cannot create a noise handle");
    return NULL;
  }
  return ext;
}

/* noiseStop(handle) -> {samples, maxNs, maxAtNs, meanNs, p99Ns, over1ms, priority} */
static napi_value n_noise_stop(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  void *data = NULL;
  if (napi_get_value_external(env, argv[0], &data) != napi_ok || !data || ((struct noise *)data)->magic != NOISE_MAGIC) {
    napi_throw_type_error(env, NULL, "ziu native: expected a noise handle");
    return NULL;
  }
  struct noise *n = data;
  if (n->started) {
    __atomic_store_n(&n->stop, 1, __ATOMIC_RELEASE);
    pthread_join(n->thread, NULL);
    n->started = false;
  }
  napi_value out;
  napi_create_object(env, &out);
  ziu_set_prop(env, out, "samples", ziu_double(env, (double)n->samples));
  ziu_set_prop(env, out, "maxNs", ziu_double(env, (double)n->max_ns));
  ziu_set_prop(env, out, "maxAtNs", ziu_double(env, (double)n->max_at_ns));
  ziu_set_prop(env, out, "meanNs", ziu_double(env, n->samples ? (double)n->sum_ns / (double)n->samples : 0));
  ziu_set_prop(env, out, "p99Ns", ziu_double(env, (double)probe_hist_percentile(n->hist, n->samples, n->max_ns, 0.99)));
  ziu_set_prop(env, out, "over1ms", ziu_double(env, (double)n->over_1ms));
  ziu_set_prop(env, out, "priority", ziu_int(env, n->applied_priority));
  return out;
}

/*
 * pidfdOpen(pid) -> fd | -errno, pidfdSendSignal(fd, sig) -> 0 | -errno.
 * A pidfd pins one process: once it is open and the process behind it is
 * checked (its start time), a signal sent through it can never reach another
 * process that reused the pid (recover, rollback and retire signal pids that
 * came from a journal or a lock file).
 */
static napi_value n_pidfd_open(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t pid;
  if (!ziu_get_i32(env, argv[0], &pid)) return NULL;
  if (pid <= 0) return ziu_errno(env, EINVAL);
  long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) return ziu_errno(env, errno);
  /* pidfds are not inherited by what we spawn */
  if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0) {
    int err = errno;
    close((int)fd);
    return ziu_errno(env, err);
  }
  return ziu_int(env, fd);
}

static napi_value n_pidfd_send_signal(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd, sig;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &sig)) return NULL;
  if (syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0) return ziu_errno(env, errno);
  return ziu_int(env, 0);
}

napi_value ziu_init_sched(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "SCHED_FIFO_MAX", sched_get_priority_max(SCHED_FIFO));
  ziu_register(env, exports, "schedSet", n_sched_set);
  ziu_register(env, exports, "schedGet", n_sched_get);
  ziu_register(env, exports, "gettid", n_gettid);
  ziu_register(env, exports, "noiseStart", n_noise_start);
  ziu_register(env, exports, "noiseStop", n_noise_stop);
  ziu_register(env, exports, "pidfdOpen", n_pidfd_open);
  ziu_register(env, exports, "pidfdSendSignal", n_pidfd_send_signal);
  return exports;
}
