/*
 * Readiness for the fds ziu owns, through the event loop's own uv_poll, so
 * that no socket operation ever blocks JavaScript.
 *
 * A poller is owned by exactly one JS object, which calls pollClose before it
 * closes the fd: uv_close removes the fd from epoll at once, so closing the fd
 * right after is safe. The handle memory is freed in the close callback. If the
 * owner is collected without pollClose (a bug), the external's finalizer
 * closes the poller so it can never call into freed memory.
 */
#include <stdlib.h>
#include <uv.h>
#include "ziu.h"

struct poller {
  uv_poll_t handle;
  napi_env env;
  napi_ref cb;
  napi_async_context actx;
  bool closed;     /* pollClose (or the finalizer) stopped it */
  bool uv_done;    /* libuv's close callback ran: the handle is no longer used */
  bool ext_alive;  /* the JS external still points here */
};

/* Freed only when both owners, libuv and the JS external, let go. */
static void on_uv_close(uv_handle_t *h) {
  struct poller *p = h->data;
  p->uv_done = true;
  if (!p->ext_alive) free(p);
}

static void poller_close(struct poller *p) {
  if (p->closed) return;
  p->closed = true;
  uv_poll_stop(&p->handle);
  napi_delete_reference(p->env, p->cb);
  napi_async_destroy(p->env, p->actx);
  uv_close((uv_handle_t *)&p->handle, on_uv_close);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct poller *p = h->data;
  if (p->closed) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, args[2], result;
  napi_get_reference_value(env, p->cb, &cb);
  napi_get_global(env, &global);
  args[0] = ziu_int(env, status);
  args[1] = ziu_int(env, events);
  if (cb != NULL && napi_make_callback(env, p->actx, global, cb, 2, args, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

static void poller_finalize(napi_env env, void *data, void *hint) {
  struct poller *p = data;
  p->ext_alive = false;
  if (!p->closed) poller_close(p);
  else if (p->uv_done) free(p);
}

static napi_value n_poll_start(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t fd, events;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &events)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "ziu native: pollStart expects a callback");
    return NULL;
  }
  uv_loop_t *loop;
  ZIU_CHECK(env, napi_get_uv_event_loop(env, &loop));
  struct poller *p = calloc(1, sizeof(*p));
  if (!p) return ziu_errno(env, ENOMEM);
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r < 0) {
    free(p);
    return ziu_errno(env, -r);
  }
  p->handle.data = p;
  p->env = env;
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "ziu:poll", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &p->actx);
  napi_create_reference(env, argv[2], 1, &p->cb);
  r = uv_poll_start(&p->handle, events, on_poll);
  if (r < 0) {
    poller_close(p);
    return ziu_errno(env, -r);
  }
  napi_value ext;
  p->ext_alive = true;
  napi_create_external(env, p, poller_finalize, NULL, &ext);
  return ext;
}

static struct poller *get_poller(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "ziu native: expected a poll handle");
    return NULL;
  }
  return p;
}

static napi_value n_poll_update(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  struct poller *p = get_poller(env, argv[0]);
  int32_t events;
  if (!p || !ziu_get_i32(env, argv[1], &events)) return NULL;
  if (p->closed) return ziu_errno(env, EBADF);
  int r = events == 0 ? uv_poll_stop(&p->handle) : uv_poll_start(&p->handle, events, on_poll);
  return r < 0 ? ziu_errno(env, -r) : ziu_int(env, 0);
}

static napi_value n_poll_close(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct poller *p = get_poller(env, argv[0]);
  if (!p) return NULL;
  poller_close(p);
  return ziu_undefined(env);
}

napi_value ziu_init_poll(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "POLL_READABLE", UV_READABLE);
  ziu_register_const(env, exports, "POLL_WRITABLE", UV_WRITABLE);
  ziu_register_const(env, exports, "POLL_DISCONNECT", UV_DISCONNECT);
  ziu_register(env, exports, "pollStart", n_poll_start);
  ziu_register(env, exports, "pollUpdate", n_poll_update);
  ziu_register(env, exports, "pollClose", n_poll_close);
  return exports;
}
