{
  "targets": [
    {
      "target_name": "ziu_native",
      "sources": [
        "native/addon.c",
        "native/sock.c",
        "native/mem.c",
        "native/poll.c",
        "native/dp.c",
        "native/dp_ring.c",
        "native/dp_worker.c",
        "native/dp_bridge.c",
        "native/dp_flow.c",
        "native/dp_table.c",
        "native/dp_mem.c",
        "native/dp_offload.c",
        "native/dp_offload_fake.c",
        "native/fakenic.c",
        "native/probe.c",
        "native/probe_loop.c",
        "native/sched.c"
      ],
      "libraries": ["-lpthread"],
      "cflags": ["-std=gnu11", "-pthread", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
