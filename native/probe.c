/* Probe packet loops: filled in by the probe work (see src/native/native.ts). */
#include "ziu.h"

napi_value ziu_init_probe(napi_env env, napi_value exports) { return exports; }
