/* Datapath packet engine: filled in by the engine work (see src/native/native.ts). */
#include "ziu.h"

napi_value ziu_init_dp(napi_env env, napi_value exports) { return exports; }
