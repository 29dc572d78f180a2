/*
 * ziu native addon: shared helpers for the N-API glue.
 *
 * Convention (see src/native/native.ts): syscall failures are returned to
 * JavaScript as a negative errno number, never thrown. Only programming errors
 * (wrong argument types, which TypeScript validation should already prevent)
 * throw, via napi_throw_type_error.
 */
#ifndef ZIU_H
#define ZIU_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <node_api.h>

#define ZIU_CHECK(env, call)                                   \
  do {                                                         \
    if ((call) != napi_ok) {                                   \
      napi_throw_error((env), NULL, "ziu native: " #call);     \
      return NULL;                                             \
    }                                                          \
  } while (0)

#define ZIU_ARGS(env, info, n)                                 \
  size_t argc = (n);                                           \
  napi_value argv[(n) > 0 ? (n) : 1];                          \
  ZIU_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL)); \
  if (argc < (n)) {                                            \
    napi_throw_type_error(env, NULL, "ziu native: expected " #n " arguments"); \
    return NULL;                                               \
  }

napi_value ziu_int(napi_env env, int64_t v);
napi_value ziu_errno(napi_env env, int err); /* returns -err as a number */
napi_value ziu_undefined(napi_env env);
napi_value ziu_double(napi_env env, double v);
napi_value ziu_bool(napi_env env, bool v);
napi_value ziu_bigint_u64(napi_env env, uint64_t v);
bool ziu_get_i32(napi_env env, napi_value v, int32_t *out);
bool ziu_get_i64(napi_env env, napi_value v, int64_t *out);
/* obj[name], or a TypeError naming the missing property */
bool ziu_get_prop(napi_env env, napi_value obj, const char *name, napi_value *out);
bool ziu_get_prop_i64(napi_env env, napi_value obj, const char *name, int64_t *out);
/* copies a JS string into buf (NUL-terminated); false if too long or not a string */
bool ziu_get_str(napi_env env, napi_value v, char *buf, size_t cap, size_t *len);
bool ziu_get_bytes(napi_env env, napi_value v, void **data, size_t *len);
void ziu_set_prop(napi_env env, napi_value obj, const char *name, napi_value v);

void ziu_register(napi_env env, napi_value exports, const char *name, napi_callback cb);
void ziu_register_const(napi_env env, napi_value exports, const char *name, int64_t v);

napi_value ziu_init_sock(napi_env env, napi_value exports);
napi_value ziu_init_mem(napi_env env, napi_value exports);
napi_value ziu_init_poll(napi_env env, napi_value exports);
napi_value ziu_init_dp(napi_env env, napi_value exports);
napi_value ziu_init_probe(napi_env env, napi_value exports);
napi_value ziu_init_sched(napi_env env, napi_value exports);
napi_value ziu_init_fakenic(napi_env env, napi_value exports);

#endif
