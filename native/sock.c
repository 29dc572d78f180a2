/*
 * Unix sockets that carry file descriptors (SCM_RIGHTS).
 *
 * Every socket is created SOCK_NONBLOCK | SOCK_CLOEXEC: readiness comes from
 * uv_poll (poll.c), so no call here ever blocks the event loop. EINTR is
 * retried here; EAGAIN is returned as -EAGAIN for the caller to treat as
 * "would block"; close() is never retried (Linux releases the fd even when it
 * reports EINTR, and a retry could close an fd another thread just opened).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "ziu.h"

/* The kernel's per-message limit (SCM_MAX_FD in include/net/scm.h). */
#define ZIU_SCM_MAX_FD 253

static bool fill_addr(napi_env env, napi_value v, struct sockaddr_un *sa, socklen_t *salen, int *err) {
  size_t len = 0;
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  /* sun_path holds 108 bytes including the NUL: TypeScript checks the length
   * first and names the path; this is only the backstop. */
  if (!ziu_get_str(env, v, sa->sun_path, sizeof(sa->sun_path), &len)) return false;
  if (len == 0) {
    *err = EINVAL;
    return true;
  }
  *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  *err = 0;
  return true;
}

static napi_value n_socket(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t type;
  if (!ziu_get_i32(env, argv[0], &type)) return NULL;
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET) return ziu_errno(env, EINVAL);
  int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? ziu_errno(env, errno) : ziu_int(env, fd);
}

static napi_value n_socketpair(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t type;
  if (!ziu_get_i32(env, argv[0], &type)) return NULL;
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET) return ziu_errno(env, EINVAL);
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) return ziu_errno(env, errno);
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, ziu_int(env, sv[0]));
  napi_set_element(env, arr, 1, ziu_int(env, sv[1]));
  return arr;
}

static napi_value n_bind(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd;
  struct sockaddr_un sa;
  socklen_t salen;
  int err;
  if (!ziu_get_i32(env, argv[0], &fd) || !fill_addr(env, argv[1], &sa, &salen, &err)) return NULL;
  if (err) return ziu_errno(env, err);
  return bind(fd, (struct sockaddr *)&sa, salen) < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

static napi_value n_listen(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd, backlog;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &backlog)) return NULL;
  return listen(fd, backlog) < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

static napi_value n_accept(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  int c;
  do {
    c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (c < 0 && errno == EINTR);
  return c < 0 ? ziu_errno(env, errno) : ziu_int(env, c);
}

static napi_value n_connect(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd;
  struct sockaddr_un sa;
  socklen_t salen;
  int err;
  if (!ziu_get_i32(env, argv[0], &fd) || !fill_addr(env, argv[1], &sa, &salen, &err)) return NULL;
  if (err) return ziu_errno(env, err);
  /* A unix connect completes at once or fails; on a non-blocking socket a
   * full backlog answers EAGAIN, which the caller retries. connect() must not
   * simply be restarted after EINTR (it may have completed), so EINTR is
   * reported as EAGAIN too and the retry then sees EISCONN. */
  if (connect(fd, (struct sockaddr *)&sa, salen) < 0) return ziu_errno(env, errno == EINTR ? EAGAIN : errno);
  return ziu_int(env, 0);
}

static napi_value n_sendmsg(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t fd;
  void *data;
  size_t len;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_bytes(env, argv[1], &data, &len)) return NULL;
  uint32_t nfds = 0;
  if (napi_get_array_length(env, argv[2], &nfds) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: fds must be an array");
    return NULL;
  }
  if (nfds > ZIU_SCM_MAX_FD) return ziu_errno(env, ETOOMANYREFS);

  int fds[ZIU_SCM_MAX_FD];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value e;
    napi_get_element(env, argv[2], i, &e);
    if (!ziu_get_i32(env, e, &fds[i])) return NULL;
  }

  struct iovec iov = {.iov_base = data, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * ZIU_SCM_MAX_FD)];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? ziu_errno(env, errno) : ziu_int(env, n);
}

static void close_all(const int *fds, size_t n) {
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

static napi_value n_recvmsg(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t fd, max_fds;
  void *data;
  size_t len;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_bytes(env, argv[1], &data, &len) ||
      !ziu_get_i32(env, argv[2], &max_fds))
    return NULL;
  if (max_fds < 0 || max_fds > ZIU_SCM_MAX_FD) return ziu_errno(env, EINVAL);

  struct iovec iov = {.iov_base = data, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * ZIU_SCM_MAX_FD)];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (max_fds > 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  }
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ziu_errno(env, errno);

  int got[ZIU_SCM_MAX_FD];
  size_t ngot = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int tmp[ZIU_SCM_MAX_FD];
    if (k > ZIU_SCM_MAX_FD) k = ZIU_SCM_MAX_FD;
    memcpy(tmp, CMSG_DATA(c), k * sizeof(int));
    for (size_t i = 0; i < k; i++) {
      if (ngot < ZIU_SCM_MAX_FD) got[ngot++] = tmp[i];
      else close(tmp[i]);
    }
  }

  bool ctrunc = (msg.msg_flags & MSG_CTRUNC) != 0;
  if (ctrunc) {
    /* Some fds were dropped by the kernel: the message cannot be trusted to
     * name its fds correctly, so none of them is handed on. */
    close_all(got, ngot);
    ngot = 0;
  }

  napi_value out, arr;
  napi_create_object(env, &out);
  napi_create_array_with_length(env, ngot, &arr);
  for (size_t i = 0; i < ngot; i++) napi_set_element(env, arr, i, ziu_int(env, got[i]));
  napi_value b_ctrunc, b_trunc;
  napi_get_boolean(env, ctrunc, &b_ctrunc);
  napi_get_boolean(env, (msg.msg_flags & MSG_TRUNC) != 0, &b_trunc);
  ziu_set_prop(env, out, "bytes", ziu_int(env, n));
  ziu_set_prop(env, out, "fds", arr);
  ziu_set_prop(env, out, "ctrunc", b_ctrunc);
  ziu_set_prop(env, out, "trunc", b_trunc);
  return out;
}

static napi_value n_peercred(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  struct ucred cred;
  socklen_t l = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &l) < 0) return ziu_errno(env, errno);
  napi_value out;
  napi_create_object(env, &out);
  ziu_set_prop(env, out, "pid", ziu_int(env, cred.pid));
  ziu_set_prop(env, out, "uid", ziu_int(env, cred.uid));
  ziu_set_prop(env, out, "gid", ziu_int(env, cred.gid));
  return out;
}

static napi_value n_socktype(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t fd;
  if (!ziu_get_i32(env, argv[0], &fd)) return NULL;
  int type;
  socklen_t l = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0) return ziu_errno(env, errno);
  return ziu_int(env, type);
}

static napi_value n_shutdown(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd, how;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &how)) return NULL;
  return shutdown(fd, how) < 0 ? ziu_errno(env, errno) : ziu_int(env, 0);
}

napi_value ziu_init_sock(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "SOCK_STREAM", SOCK_STREAM);
  ziu_register_const(env, exports, "SOCK_SEQPACKET", SOCK_SEQPACKET);
  ziu_register_const(env, exports, "SCM_MAX_FD", ZIU_SCM_MAX_FD);
  ziu_register(env, exports, "socket", n_socket);
  ziu_register(env, exports, "socketpair", n_socketpair);
  ziu_register(env, exports, "bind", n_bind);
  ziu_register(env, exports, "listen", n_listen);
  ziu_register(env, exports, "accept", n_accept);
  ziu_register(env, exports, "connect", n_connect);
  ziu_register(env, exports, "sendmsg", n_sendmsg);
  ziu_register(env, exports, "recvmsg", n_recvmsg);
  ziu_register(env, exports, "peercred", n_peercred);
  ziu_register(env, exports, "sockType", n_socktype);
  ziu_register(env, exports, "shutdown", n_shutdown);
  return exports;
}
