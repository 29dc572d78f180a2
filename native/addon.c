/* ziu native addon: module registration and argument helpers. */
#include <stdio.h>
#include <string.h>
#include "ziu.h"

napi_value ziu_int(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

napi_value ziu_errno(napi_env env, int err) { return ziu_int(env, -(int64_t)err); }

napi_value ziu_undefined(napi_env env) {
  napi_value out;
  napi_get_undefined(env, &out);
  return out;
}

napi_value ziu_double(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

napi_value ziu_bool(napi_env env, bool v) {
  napi_value out;
  napi_get_boolean(env, v, &out);
  return out;
}

napi_value ziu_bigint_u64(napi_env env, uint64_t v) {
  napi_value out;
  napi_create_bigint_uint64(env, v, &out);
  return out;
}

bool ziu_get_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: expected an integer");
    return false;
  }
  return true;
}

bool ziu_get_prop(napi_env env, napi_value obj, const char *name, napi_value *out) {
  bool has = false;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has ||
      napi_get_named_property(env, obj, name, out) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof(msg), "ziu native: missing property '%s'", name);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  return true;
}

bool ziu_get_prop_i64(napi_env env, napi_value obj, const char *name, int64_t *out) {
  napi_value v;
  return ziu_get_prop(env, obj, name, &v) && ziu_get_i64(env, v, out);
}

bool ziu_get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: expected an integer");
    return false;
  }
  return true;
}

bool ziu_get_str(napi_env env, napi_value v, char *buf, size_t cap, size_t *len) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: expected a string");
    return false;
  }
  if (n + 1 > cap) {
    napi_throw_range_error(env, NULL, "ziu native: string too long");
    return false;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &n);
  if (len) *len = n;
  return true;
}

bool ziu_get_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) {
    napi_throw_type_error(env, NULL, "ziu native: expected a Uint8Array");
    return false;
  }
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "ziu native: expected a Uint8Array");
    return false;
  }
  return true;
}

void ziu_set_prop(napi_env env, napi_value obj, const char *name, napi_value v) {
  napi_set_named_property(env, obj, name, v);
}

void ziu_register(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

void ziu_register_const(napi_env env, napi_value exports, const char *name, int64_t v) {
  napi_set_named_property(env, exports, name, ziu_int(env, v));
}

static napi_value init(napi_env env, napi_value exports) {
  ziu_init_sock(env, exports);
  ziu_init_mem(env, exports);
  ziu_init_poll(env, exports);
  ziu_init_dp(env, exports);
  ziu_init_probe(env, exports);
  ziu_init_sched(env, exports);
  ziu_init_fakenic(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
