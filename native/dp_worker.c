/*
 * The worker: polls every running TX ring (every queue pair's) and tap fd, bridges what it reads,
 * and sleeps in epoll when there has been nothing to do for DP_SPIN_NS (at
 * once when it shares its CPU, see cpu_shared; after DP_SPIN_RT_NS when it
 * runs real-time).
 *
 * Sleeping without losing a kick: the guest kicks only while the used ring's
 * NO_NOTIFY is clear. So before sleeping we clear it on every running TX ring,
 * fence, and look at every avail index once more; a guest that added a buffer
 * before seeing the cleared flag is caught by that second look, one that adds
 * it after will kick. Taps are level-triggered in epoll. Rings without a kick
 * fd (poll mode) are looked at every DP_SLEEP_MS.
 *
 * Guests' fds: a kick or call eventfd shares its open file description with
 * the guest, which can clear O_NONBLOCK on it at any time (F_SETFL on its own
 * copy) and saturate its counter, so our own O_NONBLOCK proves nothing. Kicks
 * are read with preadv2(RWF_NOWAIT), which eventfd honours whatever the
 * description's flags. Calls cannot be (eventfd's write ignores RWF_NOWAIT:
 * EOPNOTSUPP), so they are written under the guard: a timer that interrupts
 * this thread every DP_GUARD_NS while it is awake and has written a call fd,
 * so a write that blocks returns EINTR after at most that long; the ring's
 * call fd is then given up and the fault reported (see dp_guest_signal).
 *
 * A tap whose device went away (its namespace deleted) reads EBADFD and is
 * EPOLLERR for ever: the port goes down (not read, not written, not in
 * epoll) and the fault is reported, instead of waking us on every epoll_wait.
 */
#include <errno.h>
#include <string.h>
#include <poll.h>
#include <sys/uio.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "dp.h"

#define EV_CTL 0u
#define EV_KICK 1u
#define EV_TAP 2u

uint64_t dp_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void dp_kick_worker(struct dp *dp) {
  uint64_t one = 1;
  ssize_t r;
  do {
    r = write(dp->ctl_fd, &one, sizeof(one));
  } while (r < 0 && errno == EINTR);
}

/* Reset an eventfd of our own (non-blocking) to zero. */
void dp_drain(int fd) {
  uint64_t v;
  ssize_t r;
  do {
    r = read(fd, &v, sizeof(v));
  } while (r < 0 && errno == EINTR);
}

/* Tell JavaScript a fault was recorded (fault_fd is ours, non-blocking). */
static void announce_fault(struct dp *dp) {
  uint64_t one = 1;
  ssize_t r;
  do {
    r = write(dp->fault_fd, &one, sizeof(one));
  } while (r < 0 && errno == EINTR);
}

void dp_ring_fault(struct dp *dp, struct dp_vring *vr, uint8_t code, int err) {
  if (code == DP_FAULT_CHAIN && !vr->broken) {
    vr->broken = true;
    dp->gen++; /* out of the epoll set */
  }
  if (vr->fault) return; /* the first reason is the one reported */
  vr->fault = code;
  vr->fault_errno = err;
  vr->fault_new = true;
  announce_fault(dp);
}

static void tap_fault(struct dp *dp, struct dp_port *p, int err) {
  if (p->down) return;
  p->down = true;
  dp->gen++;
  p->fault = DP_FAULT_TAP_GONE;
  p->fault_errno = err;
  p->fault_new = true;
  announce_fault(dp);
}

/* ---- the guard (see the top of this file) ---- */

static void guard_noop(int sig) { (void)sig; }

static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

/* Process-wide, once: a handler without SA_RESTART, so a blocked write returns EINTR. */
static void guard_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = guard_noop;
  sigemptyset(&sa.sa_mask);
  sigaction(DP_GUARD_SIG, &sa, NULL);
}

/* On the worker: the only signal it takes is the guard's, from its own timer. */
static void guard_init(struct dp *dp) {
  pthread_once(&guard_once, guard_install);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, DP_GUARD_SIG);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  struct sigevent se;
  memset(&se, 0, sizeof(se));
  se.sigev_notify = SIGEV_THREAD_ID;
  se.sigev_signo = DP_GUARD_SIG;
  se._sigev_un._tid = (pid_t)syscall(SYS_gettid);
  dp->guard_ok = timer_create(CLOCK_MONOTONIC, &se, &dp->guard) == 0;
  dp->guard_armed = false;
}

static void guard_set(struct dp *dp, bool on) {
  if (!dp->guard_ok || dp->guard_armed == on) return;
  struct itimerspec t;
  memset(&t, 0, sizeof(t));
  if (on) t.it_value.tv_nsec = t.it_interval.tv_nsec = (long)DP_GUARD_NS;
  if (timer_settime(dp->guard, 0, &t, NULL) == 0) dp->guard_armed = on;
}

/*
 * Add 1 to a ring's call eventfd, never blocking for more than DP_GUARD_NS.
 * EAGAIN (a saturated counter on a non-blocking description) is fine: the
 * guest has an interrupt pending anyway. EINTR can only be the guard ending
 * a write that blocked (the guest cleared O_NONBLOCK and saturated the
 * counter): the call fd is given up and reported, as is any other failure.
 */
void dp_guest_signal(struct dp *dp, struct dp_vring *vr) {
  if (vr->call_fd < 0 || vr->call_dead) return;
  guard_set(dp, true);
  if (!dp->guard_armed) {
    /* No timer (timer_create failed): at least never write into a full counter. */
    struct pollfd pfd = {.fd = vr->call_fd, .events = POLLOUT};
    if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT)) return;
  }
  uint64_t one = 1;
  ssize_t r = write(vr->call_fd, &one, sizeof(one));
  if (r == (ssize_t)sizeof(one) || (r < 0 && errno == EAGAIN)) return;
  int err = r < 0 ? errno : EIO;
  vr->call_dead = true;
  dp_ring_fault(dp, vr, err == EINTR ? DP_FAULT_CALL_BLOCKED : DP_FAULT_CALL_FAILED, err);
}

/* Empty a TX ring's kick eventfd without ever blocking (RWF_NOWAIT, whatever
 * the guest did to the description's flags). A failure other than "empty"
 * takes the fd out of epoll (the ring is polled) and is reported. */
static void drain_kick(struct dp *dp, struct dp_vring *vr) {
  if (vr->kick_fd < 0) return;
  uint64_t v;
  struct iovec iov = {.iov_base = &v, .iov_len = sizeof(v)};
  ssize_t r;
  do {
    r = preadv2(vr->kick_fd, &iov, 1, -1, RWF_NOWAIT);
  } while (r < 0 && errno == EINTR);
  if (r >= 0 || errno == EAGAIN) return;
  int err = errno;
  vr->kick_fd = -1;
  dp->gen++;
  dp_ring_fault(dp, vr, DP_FAULT_KICK_FAILED, err);
}

static void tap_out(struct dp *dp, struct dp_port *p, const uint8_t *frame, uint32_t len) {
  if (p->down) return;
  ssize_t r;
  do {
    r = write(p->tap_fd, frame, len);
  } while (r < 0 && errno == EINTR);
  if (r == (ssize_t)len) {
    p->st.tx_packets++;
    p->st.tx_bytes += len;
    return;
  }
  p->st.drops_no_buffer++; /* EAGAIN (queue full), EIO (the link is down) */
  if (r < 0 && (errno == EBADFD || errno == ENXIO || errno == ENODEV)) tap_fault(dp, p, errno); /* the device is gone */
}

/* hash/hashed: the frame's flow hash, computed by the first vhost port with several RX queues that needs it. */
static inline void deliver(struct dp *dp, struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t *hash, bool *hashed) {
  if (p->kind == DP_KIND_VHOST)
    dp_vhost_rx(dp, p, frame, len, hash, hashed);
  else
    tap_out(dp, p, frame, len);
}

/*
 * The bridge: learn the source, forward to the known port or flood. A
 * unicast frame to a known port is counted on its flow (made from this
 * frame if it is the first: dp_flow.c); one whose destination sits behind
 * its own input port is dropped and counted on a drop flow. Table port ids
 * come from a file another process wrote: checked before they index anything.
 */
static void forward(struct dp *dp, uint16_t in, const uint8_t *frame, uint32_t len) {
  struct dp_port *ip = &dp->ports[in];
  ip->st.rx_packets++;
  ip->st.rx_bytes += len;
  const uint8_t *dst = frame, *src = frame + 6;
  uint32_t hash = 0;
  bool hashed = false;
  uint16_t tin = ip->tport;
  if (!(src[0] & 1) && tin < DP_TABLE_PORTS) dp_bridge_learn(dp, src, tin);
  if (!(dst[0] & 1)) {
    int t = dp_bridge_lookup(dp, dst);
    int out = t >= 0 ? dp_tables_port(dp, (uint32_t)t) : -1;
    bool known = out >= 0;
    struct dp_flow_key k;
    uint8_t flags;
    if (dp->tables.flow.map && tin < DP_TABLE_PORTS && dp_flow_key_of(frame, len, tin, &k, &flags)) {
      uint16_t pin_out = 0;
      int pin = dp_flow_hit(dp, &k, len, flags, !known ? DP_FLOW_NONE : out == in ? DP_FLOW_DROP : DP_FLOW_FORWARD, (uint16_t)t, &pin_out);
      if (pin == DP_FLOW_DROP) {
        dp->tables.pin_drops++;
        return;
      }
      if (pin == DP_FLOW_FORWARD) {
        /* The control plane's flow: out of its port whatever the bridge says (a port
         * this instance does not have, or the input port itself, drops it). */
        int po = dp_tables_port(dp, pin_out);
        if (po >= 0 && po != in) deliver(dp, &dp->ports[po], frame, len, &hash, &hashed);
        else dp->tables.pin_drops++;
        return;
      }
    }
    if (known) {
      if (out != in) deliver(dp, &dp->ports[out], frame, len, &hash, &hashed);
      return; /* back to where it came from: the segment already has it */
    }
  }
  ip->st.floods++;
  for (uint32_t i = 0; i < dp->ports_hi; i++)
    if (i != in && dp->ports[i].in_use) deliver(dp, &dp->ports[i], frame, len, &hash, &hashed);
}

static unsigned tap_rx_burst(struct dp *dp, struct dp_port *p, unsigned *nframes) {
  unsigned nf = 0, reads = 0;
  while (reads < DP_BATCH) {
    uint8_t *slot = dp->staging + (size_t)nf * DP_SLOT_SIZE;
    ssize_t r = read(p->tap_fd, slot, DP_SLOT_SIZE);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN) {
      tap_fault(dp, p, errno); /* EBADFD: its device is gone (namespace deleted) */
      break;
    }
    if (r <= 0) break; /* EAGAIN: empty */
    reads++;
    if (r < DP_MIN_FRAME || r > DP_MAX_FRAME) {
      p->st.drops_invalid++;
      continue;
    }
    dp->frames[nf].data = slot;
    dp->frames[nf].len = (uint32_t)r;
    nf++;
  }
  *nframes = nf;
  return reads;
}

/* One look at every port. Everything consumed is completed and published
 * before returning, so the lock can be released after any pass. A pass is
 * bounded: once it has run DP_PASS_BUDGET_NS (a flood of frames to hundreds
 * of rings, each copied to every port, can take 100 ms) it stops after the
 * port it is on, and the next pass starts at the following port. So the
 * heartbeat and the control thread never wait for more than about that. */
static unsigned pass(struct dp *dp) {
  unsigned work = 0, looked = 0;
  uint64_t t0 = dp_now_ns();
  dp->now_s = (uint32_t)(t0 / 1000000000ull);
  dp_flow_sweep(dp, t0);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (p->in_use && p->kind == DP_KIND_VHOST)
      for (uint32_t q = 0; q < p->nrings; q++) p->rings[q].pass_descs = 0;
  }
  if (dp->signal_pending) { /* dpSignalCalls: once, whatever NO_INTERRUPT says */
    dp->signal_pending = false;
    for (uint32_t i = 0; i < dp->ports_hi; i++)
      for (uint32_t q = 0; dp->ports[i].in_use && dp->ports[i].kind == DP_KIND_VHOST && q < dp->ports[i].nrings; q++) {
        struct dp_vring *vr = &dp->ports[i].rings[q];
        if (vr->signal_once) dp_guest_signal(dp, vr);
        vr->signal_once = false;
      }
  }
  uint32_t n = dp->ports_hi, start = dp->pass_next < n ? dp->pass_next : 0;
  dp->pass_next = 0;
  for (uint32_t k = 0; k < n; k++) {
    uint32_t i = start + k < n ? start + k : start + k - n;
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->down) continue;
    unsigned nf;
    if (p->kind == DP_KIND_TAP) {
      work += tap_rx_burst(dp, p, &nf);
      for (unsigned f = 0; f < nf; f++) forward(dp, (uint16_t)i, dp->frames[f].data, dp->frames[f].len);
    } else {
      /* Every TX ring, DP_BATCH chains each: the staging slots are reused per ring. */
      for (uint32_t q = 1; q < p->nrings; q += 2) {
        work += dp_vhost_tx_burst(dp, p, &p->rings[q], &nf);
        for (unsigned f = 0; f < nf; f++) forward(dp, (uint16_t)i, dp->frames[f].data, dp->frames[f].len);
      }
    }
    /* The clock only once a batch of frames went through since we last looked: idle passes never read it. */
    if (work - looked >= DP_BATCH) {
      looked = work;
      if (dp_now_ns() - t0 >= DP_PASS_BUDGET_NS) {
        dp->pass_next = i + 1 < n ? i + 1 : 0;
        dp->passes_cut++;
        break;
      }
    }
  }
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (p->in_use && p->kind == DP_KIND_VHOST)
      for (uint32_t q = 0; q < p->nrings; q += 2) dp_ring_publish(dp, &p->rings[q]);
  }
  dp->passes++;
  return work;
}

static void set_no_notify(struct dp *dp, bool no_notify) {
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->kind != DP_KIND_VHOST) continue;
    for (uint32_t q = 1; q < p->nrings; q += 2)
      if (dp_ring_running(&p->rings[q])) dp_ring_set_no_notify(&p->rings[q], no_notify);
  }
}

static bool any_pending(struct dp *dp) {
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->kind != DP_KIND_VHOST) continue;
    for (uint32_t q = 1; q < p->nrings; q += 2)
      if (dp_ring_pending(&p->rings[q])) return true;
  }
  return false;
}

/* Events carry their type, ring and port index: type << 32 | ring << 24 | port (ports < 2^24). */
static void ep_add(struct dp *dp, int fd, uint32_t type, uint32_t port, uint32_t q) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)type << 32) | ((uint64_t)q << 24) | port};
  epoll_ctl(dp->ep_fd, EPOLL_CTL_ADD, fd, &ev); /* a bad fd from TS only costs its wakeups */
}

/* A fresh epoll set rather than edits: an fd TS replaced and closed may still
 * be open elsewhere (the frontend holds the other end of every eventfd), and
 * would otherwise stay registered. */
static void rebuild_epoll(struct dp *dp) {
  if (dp->ep_fd >= 0) close(dp->ep_fd);
  dp->ep_fd = epoll_create1(EPOLL_CLOEXEC);
  dp->ep_gen = dp->gen;
  if (dp->ep_fd < 0) return; /* sleep() then naps DP_SLEEP_MS without fds */
  ep_add(dp, dp->ctl_fd, EV_CTL, 0, 0);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->down) continue;
    if (p->kind == DP_KIND_TAP) {
      ep_add(dp, p->tap_fd, EV_TAP, i, 0);
      continue;
    }
    for (uint32_t q = 1; q < p->nrings; q += 2)
      if (dp_ring_running(&p->rings[q]) && p->rings[q].kick_fd >= 0) ep_add(dp, p->rings[q].kick_fd, EV_KICK, i, q);
  }
}

/* Called and returns with dp->lock held; drops it while blocked. */
static void sleep_until_work(struct dp *dp) {
  if (dp->ep_gen != dp->gen || dp->ep_fd < 0) rebuild_epoll(dp);
  set_no_notify(dp, false);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (any_pending(dp)) {
    set_no_notify(dp, true);
    return;
  }
  dp->sleeps++;
  guard_set(dp, false); /* no guest write while asleep; the timer must not wake us */
  struct epoll_event evs[64];
  pthread_mutex_unlock(&dp->lock);
  int n;
  if (dp->ep_fd >= 0) {
    n = epoll_wait(dp->ep_fd, evs, 64, dp->beat ? DP_BEAT_MS : DP_SLEEP_MS);
  } else {
    struct timespec ts = {0, (dp->beat ? DP_BEAT_MS : DP_SLEEP_MS) * 1000000L};
    nanosleep(&ts, NULL);
    n = 0;
  }
  pthread_mutex_lock(&dp->lock);
  dp->wakeups++;
  if (dp->frozen) return; /* frozen meanwhile: the rings' flags are not ours now */
  /* The fds in the events are only trustworthy if nothing was reconfigured
   * meanwhile; if it was, the eventfds are drained on the next sleep instead. */
  bool same = dp->ep_gen == dp->gen;
  for (int i = 0; i < n; i++) {
    uint32_t type = (uint32_t)(evs[i].data.u64 >> 32), idx = (uint32_t)evs[i].data.u64 & 0xffffffu;
    uint32_t q = ((uint32_t)evs[i].data.u64 >> 24) & 0xffu;
    if (type == EV_CTL) {
      dp_drain(dp->ctl_fd);
      continue;
    }
    if (!same || idx >= dp->max_ports || !dp->ports[idx].in_use) continue;
    struct dp_port *p = &dp->ports[idx];
    if (type == EV_KICK && p->kind == DP_KIND_VHOST && q < DP_MAX_RINGS && DP_RING_TX(q))
      drain_kick(dp, &p->rings[q]);
    else if (type == EV_TAP && p->kind == DP_KIND_TAP && (evs[i].events & (EPOLLERR | EPOLLHUP)))
      tap_fault(dp, p, EBADFD); /* a detached tap: EPOLLERR for ever */
  }
  set_no_notify(dp, true);
}

/* Read every ring once from this thread, when asked (dpArmTakeover): see
 * dp_ring_warm. dp->lock is held, which keeps the mappings in place; a page
 * past the end of a truncated file is absorbed by the SIGBUS handler. */
static void warm_rings(struct dp *dp) {
  if (dp->warm_done == dp->warm_req) return;
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->kind != DP_KIND_VHOST) continue;
    for (uint32_t q = 0; q < p->nrings; q++)
      if (p->rings[q].addr_set && !p->rings[q].faulted) dp_ring_warm(&p->rings[q]);
  }
  dp->warm_done = dp->warm_req;
  pthread_cond_broadcast(&dp->warmed);
}

/* Frozen: no passes, no epoll on guest fds; only a control change (thaw,
 * stop) wakes us. Called and returns with dp->lock held. */
static void frozen_wait(struct dp *dp) {
  struct pollfd pfd[2] = {{.fd = dp->ctl_fd, .events = POLLIN}, {.fd = dp->go_fd, .events = POLLIN}};
  nfds_t n = dp->go_fd >= 0 && dp->baton ? 2 : 1;
  warm_rings(dp);
  /* Armed, and the go is late: the process's mappings may change meanwhile
   * (its GC), so read the rings again now and then. Cheap while they are
   * warm; not for ever (an orchestrator that died sends no go). */
  bool rewarm = n == 2 && dp_now_ns() - dp->armed_ns < DP_REWARM_FOR_NS;
  guard_set(dp, false);
  pthread_mutex_unlock(&dp->lock);
  int r = poll(pfd, n, rewarm ? DP_REWARM_MS : DP_SLEEP_MS);
  pthread_mutex_lock(&dp->lock);
  if (r == 0 && rewarm) dp->warm_req++;
  if (r <= 0) return;
  if (pfd[0].revents) dp_drain(dp->ctl_fd);
  /* Armed (checked again: JS may have disarmed meanwhile) and signalled. */
  if (n == 2 && pfd[1].revents && dp->go_fd == pfd[1].fd && dp->baton && dp->frozen) {
    dp_drain(dp->go_fd);
    uint32_t expected = 0; /* BATON_FROZEN */
    if (__atomic_compare_exchange_n(dp->baton, &expected, 1u /* BATON_NEW */, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
      dp_thaw_locked(dp);
      dp->taken_over = true;
    }
    /* Either way JavaScript looks: it took over, or the old side kept the rings. */
    uint64_t one = 1;
    ssize_t w;
    do {
      w = write(dp->done_fd, &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
  }
}

/* Let a waiting control call take the lock. A real-time worker cannot
 * sched_yield to it (that only yields to other real-time threads, and the JS
 * thread may share its CPU): it naps instead. */
static void let_control_in(struct dp *dp) {
  static const struct timespec nap = {0, 1000};
  while (__atomic_load_n(&dp->ctl_waiting, __ATOMIC_ACQUIRE)) {
    if (dp->realtime)
      nanosleep(&nap, NULL);
    else
      sched_yield();
  }
}

/* Whether we share this CPU: something else took it from us (an involuntary
 * context switch) within the last DP_SHARED_NS. Then spinning only burns the
 * time that the thread sharing it (on a small host often the very guest
 * thread that gives us work or takes it) needs. */
static bool cpu_shared(struct dp *dp, uint64_t now) {
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) < 0) return true;
  if ((uint64_t)ru.ru_nivcsw != dp->nivcsw) {
    dp->nivcsw = (uint64_t)ru.ru_nivcsw;
    dp->preempted_ns = now;
  }
  return dp->preempted_ns && now - dp->preempted_ns < DP_SHARED_NS;
}

void *dp_worker_main(void *arg) {
  struct dp *dp = arg;
  uint64_t idle_since = 0, policy_at = 0, spin_ns = DP_SPIN_NS;
  guard_init(dp);
  __atomic_store_n(&dp->worker_tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);
  pthread_mutex_lock(&dp->lock);
  while (!dp->stopping) {
    if (dp->frozen) {
      frozen_wait(dp);
      idle_since = 0;
      continue;
    }
    if (dp->want_first_pass) {
      dp->want_first_pass = false;
      dp->first_pass_ns = dp_now_ns();
    }
    /* Serving and beating: the old instance reads this to tell that we did not hang. */
    if (dp->beat) __atomic_store_n(dp->beat, dp_now_ns(), __ATOMIC_RELEASE);
    if (pass(dp)) {
      idle_since = 0;
    } else {
      uint64_t now = dp_now_ns();
      if (now - policy_at > DP_POLICY_CHECK_NS) {
        /* Placed from outside (sched.c) at any time: look now and then. */
        int pol = sched_getscheduler(0);
        dp->realtime = pol == SCHED_FIFO || pol == SCHED_RR;
        policy_at = now;
      }
      /* No sched_yield while idle: on a CPU shared with a busy-polling guest
       * thread, EEVDF gives that thread a whole slice (ms) for every yield,
       * and we then move at most a ring's worth of frames per slice (this
       * held DPDK's virtio-user rxonly to ~0.05 Mpps). A CFS worker that
       * shares its CPU spins only DP_SPIN_SHARED_NS before it sleeps (the
       * guest's kick wakes it), one that has its CPU to itself DP_SPIN_NS.
       * Not zero: on a virtualised host a sleep and wake-up costs ~30 us of
       * CPU, and sleeping between frames 10 us apart costs more than the
       * spin it saves. A real-time worker spins briefly and then sleeps:
       * while it spins no ordinary thread runs on its CPU, and the kernel's
       * fair server would take the CPU back for tens of ms at a time. */
      if (!idle_since) {
        idle_since = now;
        spin_ns = dp->realtime ? DP_SPIN_RT_NS : cpu_shared(dp, now) ? DP_SPIN_SHARED_NS : DP_SPIN_NS;
      }
      if (now - idle_since >= spin_ns) {
        sleep_until_work(dp);
        idle_since = 0;
      }
    }
    /* Let a waiting control call in: glibc mutexes are not fair, and without
     * this the polling worker would take the lock straight back. */
    pthread_mutex_unlock(&dp->lock);
    let_control_in(dp);
    pthread_mutex_lock(&dp->lock);
  }
  pthread_mutex_unlock(&dp->lock);
  if (dp->guard_ok) timer_delete(dp->guard);
  return NULL;
}
