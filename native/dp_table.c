/*
 * Table files (dp_table.h, docs/tables.md): their header, mapping them,
 * read-only while frozen, a conversion from another format, and the N-API
 * calls for both the datapath and `ziu tables` (which maps a file of a
 * running datapath without an engine).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "dp.h"
#include "ziu.h"

static const uint32_t ENTRY_BYTES[3] = {0, sizeof(struct dp_bridge_entry), sizeof(struct dp_flow1)};

static uint32_t aux_count_of(uint32_t kind) { return kind == DP_TABLE_BRIDGE ? DP_TABLE_PORTS : DP_FLOW_LOG; }
static uint64_t aux_bytes_of(uint32_t kind) { return kind == DP_TABLE_BRIDGE ? (uint64_t)DP_TABLE_PORTS * DP_PORT_NAME : (uint64_t)DP_FLOW_LOG * 4; }
static uint32_t max_entries_of(uint32_t kind) { return kind == DP_TABLE_BRIDGE ? DP_BRIDGE_MAX_ENTRIES : DP_FLOW_MAX_ENTRIES; }

static uint32_t fnv(const uint8_t *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

uint64_t dp_table_bytes(uint32_t kind, uint32_t entries) {
  return DP_TABLE_HDR_BYTES + aux_bytes_of(kind) + (uint64_t)entries * ENTRY_BYTES[kind];
}

/* As many entries as a file of this size holds (0: too small for any). */
uint32_t dp_table_entries_for(uint32_t kind, uint64_t bytes) {
  uint64_t fixed = DP_TABLE_HDR_BYTES + aux_bytes_of(kind);
  if (bytes <= fixed) return 0;
  uint64_t n = (bytes - fixed) / ENTRY_BYTES[kind];
  if (n > max_entries_of(kind)) n = max_entries_of(kind);
  return (uint32_t)n;
}

/* Check a header against the file's size; fill t's geometry. NULL, or what is wrong. */
const char *dp_table_check(const uint8_t *map, uint64_t size, uint32_t kind, struct dp_table *t) {
  static __thread char why[160];
  if (size < DP_TABLE_HDR_BYTES) return "the file is smaller than a table header (4096 bytes)";
  const struct dp_table_hdr *h = (const struct dp_table_hdr *)map;
  if (h->magic == 0 && h->kind == 0 && h->format == 0) return "no table header (the file is empty: nothing was ever written to it)";
  if (h->magic != DP_TABLE_MAGIC) return "not a ziu table file (wrong magic number)";
  if (fnv(map, offsetof(struct dp_table_hdr, check)) != h->check) return "the header is corrupted (its checksum does not match)";
  if (h->kind != DP_TABLE_BRIDGE && h->kind != DP_TABLE_FLOW) return "unknown table kind";
  if (kind && h->kind != kind) {
    snprintf(why, sizeof(why), "a %s table where a %s table was expected", h->kind == DP_TABLE_BRIDGE ? "bridge" : "flow", kind == DP_TABLE_BRIDGE ? "bridge" : "flow");
    return why;
  }
  uint32_t fmin = h->kind == DP_TABLE_BRIDGE ? DP_BRIDGE_FORMAT : DP_FLOW_FORMAT_MIN;
  uint32_t fmax = h->kind == DP_TABLE_BRIDGE ? DP_BRIDGE_FORMAT : DP_FLOW_FORMAT_MAX;
  if (h->format < fmin || h->format > fmax) {
    snprintf(why, sizeof(why), "table format %u, which this datapath cannot read (it reads %u to %u)", h->format, fmin, fmax);
    return why;
  }
  if (h->hdr_bytes != DP_TABLE_HDR_BYTES || h->entry_bytes != ENTRY_BYTES[h->kind]) return "the header gives sizes this format does not have";
  if (h->entries == 0 || h->entries > max_entries_of(h->kind)) return "the header gives an entry count out of range";
  uint32_t wmax = h->kind == DP_TABLE_BRIDGE ? DP_BRIDGE_WINDOW : DP_FLOW_WINDOW;
  if (h->window == 0 || h->window > wmax || h->window > h->entries) return "the header gives a probe window out of range";
  if (h->aux_count != aux_count_of(h->kind) || h->aux_off != DP_TABLE_HDR_BYTES || h->entries_off != DP_TABLE_HDR_BYTES + aux_bytes_of(h->kind))
    return "the header gives offsets this format does not have";
  uint64_t need = dp_table_bytes(h->kind, h->entries);
  if (need > size) {
    snprintf(why, sizeof(why), "the header says %llu bytes of entries, the file has only %llu bytes", (unsigned long long)need, (unsigned long long)size);
    return why;
  }
  if (h->idle_s == 0 || h->idle_s > 86400u * 365u) return "the header gives an idle time out of range";
  if (t) {
    t->aux_off = h->aux_off;
    t->ent_off = h->entries_off;
    t->kind = h->kind;
    t->format = h->format;
    t->entries = h->entries;
    t->window = h->window;
    t->entry_bytes = h->entry_bytes;
    t->aux_count = h->aux_count;
    t->idle_s = h->idle_s;
    t->hdr = (struct dp_table_hdr *)map;
    t->aux = (uint8_t *)map + h->aux_off;
    t->ent = (uint8_t *)map + h->entries_off;
  }
  return NULL;
}

static void point(struct dp_table *t, uint8_t *base) {
  t->map = base;
  t->hdr = (struct dp_table_hdr *)base;
  t->aux = base + t->aux_off;
  t->ent = base + t->ent_off;
}

/*
 * Map a table file and check it: 0, -errno, or -EBADMSG with *why. Both
 * mappings are made now (struct dp_table): the writable one populated, off
 * the packet path, so that taking the table later costs no syscall and no
 * fault; the read-only one (in use unless writable) is not.
 */
int dp_table_map(int fd, uint32_t kind, bool writable, struct dp_table *t, const char **why) {
  *why = NULL;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
    return -EBADMSG;
  }
  if (st.st_size < (off_t)DP_TABLE_HDR_BYTES) {
    *why = "the file is smaller than a table header (4096 bytes)";
    return -EBADMSG;
  }
  size_t len = (size_t)st.st_size;
  uint8_t *ro = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  if (ro == MAP_FAILED) return -errno;
  struct dp_table x;
  memset(&x, 0, sizeof(x));
  const char *w = dp_table_check(ro, len, kind, &x);
  if (w) {
    munmap(ro, len);
    *why = w;
    return -EBADMSG;
  }
  uint8_t *rw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (rw == MAP_FAILED) {
    int err = errno;
    if (writable) {
      munmap(ro, len);
      return -err;
    }
    rw = NULL; /* a read-only fd (ziu tables show): never writable */
  }
  x.ro = ro;
  x.rw = rw;
  x.len = len;
  x.writable = writable;
  point(&x, writable ? rw : ro);
  *t = x;
  return 0;
}

void dp_table_unmap(struct dp_table *t) {
  if (t->ro) munmap(t->ro, t->len);
  if (t->rw) munmap(t->rw, t->len);
  memset(t, 0, sizeof(*t));
}

/* Read-only or writable from now on: which mapping the pointers go to (call with dp->lock held, or before the engine sees t). */
int dp_table_protect(struct dp_table *t, bool writable) {
  if (!t->map || t->writable == writable) return 0;
  if (writable && !t->rw) return -EACCES;
  point(t, writable ? t->rw : t->ro);
  t->writable = writable;
  return 0;
}

/*
 * A port's table id by name: its slot in the directory, else a free one,
 * else (names of ports long gone fill the directory) the slot of a name no
 * port of ours has, its MACs forgotten first. Only a writer assigns; a
 * read-only (frozen) engine gets DP_TPORT_NONE for a new name until it thaws.
 */
uint16_t dp_tables_port_id(struct dp *dp, const char *name) {
  struct dp_table *b = &dp->tables.bridge;
  uint16_t id = dp_bridge_port_id(b, name, true);
  if (id != DP_TPORT_NONE || !b->map || !b->writable) return id;
  for (uint32_t i = 0; i < b->aux_count && i < DP_TABLE_PORTS; i++) {
    if (dp->tables.tmap[i] >= 0) continue;
    dp_bridge_forget_port(dp, (uint16_t)i);
    char *slot = (char *)b->aux + (size_t)i * DP_PORT_NAME;
    memset(slot, 0, DP_PORT_NAME);
    memcpy(slot, name, strnlen(name, DP_PORT_NAME));
    return (uint16_t)i;
  }
  return DP_TPORT_NONE;
}

/* Every port in use gets its table port id by name (assigned if we may write). */
void dp_tables_bind_ports(struct dp *dp) {
  for (uint32_t i = 0; i < DP_TABLE_PORTS; i++) dp->tables.tmap[i] = -1;
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use) continue;
    p->tport = dp_bridge_port_id(&dp->tables.bridge, p->name, false);
    if (p->tport < DP_TABLE_PORTS) dp->tables.tmap[p->tport] = (int16_t)i;
  }
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->tport < DP_TABLE_PORTS) continue;
    p->tport = dp_tables_port_id(dp, p->name);
    if (p->tport < DP_TABLE_PORTS) dp->tables.tmap[p->tport] = (int16_t)i;
  }
}

/*
 * The rings are ours (thaw, with dp->lock held; on the new side maybe in
 * the worker, on the go signal): the tables become writable, a table
 * converted from another format catches up what its writer changed since
 * our copy began, ports get ids they could not get read-only, and from now
 * on every flow we touch is logged once (a handback converts it back).
 */
void dp_tables_thaw(struct dp *dp) {
  struct dp_tables *t = &dp->tables;
  /* A mapping that cannot be made writable stays read-only: we then leave that table alone (every writer checks). */
  dp_table_protect(&t->bridge, true);
  dp_table_protect(&t->flow, true);
  if (t->bridge.writable) t->bridge.hdr->writer_pid = (uint32_t)getpid();
  if (t->flow.writable) {
    t->flow.hdr->writer_pid = (uint32_t)getpid();
    if (t->src.map && !t->own_from_set) t->caught_up = dp_flow_catch_up(&t->src, t->src_from, &t->flow);
    if (!t->own_from_set) {
      t->own_from = t->flow.hdr->generation;
      t->own_from_set = true;
    }
    t->track = t->flow.hdr->generation;
    t->flow.hdr->track_gen = t->track;
  }
  dp_tables_bind_ports(dp);
  dp->now_s = dp_now_s();
}

/* Frozen: someone else may write the tables now; we must not. */
void dp_tables_freeze(struct dp *dp) {
  dp_table_protect(&dp->tables.bridge, false);
  dp_table_protect(&dp->tables.flow, false);
}

void dp_tables_destroy(struct dp *dp) {
  dp_table_unmap(&dp->tables.bridge);
  dp_table_unmap(&dp->tables.flow);
  dp_table_unmap(&dp->tables.src);
}

/* ---- N-API: files without an engine (the datapath's own setup, `ziu tables`) ---- */

static napi_value problem(napi_env env, const char *why, int err) {
  napi_value o;
  napi_create_object(env, &o);
  napi_value s;
  napi_create_string_utf8(env, why ? why : strerror(err), NAPI_AUTO_LENGTH, &s);
  ziu_set_prop(env, o, "problem", s);
  ziu_set_prop(env, o, "errno", ziu_int(env, err));
  return o;
}

static napi_value header_obj(napi_env env, const struct dp_table *t, uint64_t size) {
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "kind", ziu_int(env, t->kind));
  ziu_set_prop(env, o, "format", ziu_int(env, t->format));
  ziu_set_prop(env, o, "entries", ziu_int(env, t->entries));
  ziu_set_prop(env, o, "entryBytes", ziu_int(env, t->entry_bytes));
  ziu_set_prop(env, o, "idleS", ziu_int(env, t->idle_s));
  ziu_set_prop(env, o, "bytes", ziu_double(env, (double)size));
  ziu_set_prop(env, o, "generation", ziu_bigint_u64(env, __atomic_load_n(&t->hdr->generation, __ATOMIC_ACQUIRE)));
  ziu_set_prop(env, o, "writerPid", ziu_int(env, t->hdr->writer_pid));
  ziu_set_prop(env, o, "live", ziu_int(env, t->kind == DP_TABLE_FLOW ? dp_flow_count(t) : 0));
  return o;
}

/* tableInit(fd, kind, format, idleS, maxEntries): write a fresh header into a file that holds nothing yet (all zero). */
static napi_value n_table_init(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 5);
  int32_t fd, kind, format, idle, max;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &kind) || !ziu_get_i32(env, argv[2], &format) ||
      !ziu_get_i32(env, argv[3], &idle) || !ziu_get_i32(env, argv[4], &max))
    return NULL;
  if ((kind != DP_TABLE_BRIDGE && kind != DP_TABLE_FLOW) || idle < 1) return ziu_errno(env, EINVAL);
  if (kind == DP_TABLE_BRIDGE ? format != DP_BRIDGE_FORMAT : (format < (int)DP_FLOW_FORMAT_MIN || format > (int)DP_FLOW_FORMAT_MAX))
    return ziu_errno(env, EINVAL);
  struct stat st;
  if (fstat(fd, &st) < 0) return ziu_errno(env, errno);
  uint32_t n = dp_table_entries_for((uint32_t)kind, (uint64_t)st.st_size);
  if (max > 0 && n > (uint32_t)max) n = (uint32_t)max;
  uint32_t window = kind == DP_TABLE_BRIDGE ? DP_BRIDGE_WINDOW : DP_FLOW_WINDOW;
  if (n < window) return ziu_errno(env, ENOSPC);
  size_t len = (size_t)dp_table_bytes((uint32_t)kind, n);
  uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (m == MAP_FAILED) return ziu_errno(env, errno);
  for (size_t i = 0; i < DP_TABLE_HDR_BYTES; i++)
    if (m[i]) {
      munmap(m, len);
      return ziu_errno(env, EEXIST);
    }
  memset(m + DP_TABLE_HDR_BYTES, 0, len - DP_TABLE_HDR_BYTES);
  struct dp_table_hdr *h = (struct dp_table_hdr *)m;
  h->magic = DP_TABLE_MAGIC;
  h->kind = (uint32_t)kind;
  h->format = (uint32_t)format;
  h->hdr_bytes = DP_TABLE_HDR_BYTES;
  h->entry_bytes = ENTRY_BYTES[kind];
  h->entries = n;
  h->window = window;
  h->aux_off = DP_TABLE_HDR_BYTES;
  h->entries_off = DP_TABLE_HDR_BYTES + aux_bytes_of((uint32_t)kind);
  h->aux_count = aux_count_of((uint32_t)kind);
  h->idle_s = (uint32_t)idle;
  __atomic_store_n(&h->check, fnv(m, offsetof(struct dp_table_hdr, check)), __ATOMIC_RELEASE);
  munmap(m, len);
  return ziu_int(env, n);
}

/* tableBytes(kind, entries): the file size a table of this many entries needs. */
static napi_value n_table_bytes(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t kind, n;
  if (!ziu_get_i32(env, argv[0], &kind) || !ziu_get_i32(env, argv[1], &n)) return NULL;
  if ((kind != DP_TABLE_BRIDGE && kind != DP_TABLE_FLOW) || n < 1 || (uint32_t)n > max_entries_of((uint32_t)kind)) return ziu_errno(env, EINVAL);
  return ziu_double(env, (double)dp_table_bytes((uint32_t)kind, (uint32_t)n));
}

/* tableCheck(fd, kind): the header, or {problem, errno}. kind 0: either. */
static napi_value n_table_check(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd, kind;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &kind)) return NULL;
  struct dp_table t;
  const char *why;
  int r = dp_table_map(fd, (uint32_t)kind, false, &t, &why);
  if (r < 0) return problem(env, why, -r);
  napi_value o = header_obj(env, &t, t.len);
  dp_table_unmap(&t);
  return o;
}

static napi_value mac_str(napi_env env, const uint8_t *m) {
  char s[18];
  snprintf(s, sizeof(s), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value bytes_val(napi_env env, const uint8_t *p, size_t n) {
  void *data;
  napi_value ab, arr;
  napi_create_arraybuffer(env, n, &data, &ab);
  memcpy(data, p, n);
  napi_create_typedarray(env, napi_uint8_array, n, ab, 0, &arr);
  return arr;
}

/* tableDump(fd, kind, max): the header, the port directory and up to max live entries (read-only mapping). */
static napi_value n_table_dump(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t fd, kind, max;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &kind) || !ziu_get_i32(env, argv[2], &max)) return NULL;
  struct dp_table t;
  const char *why;
  int r = dp_table_map(fd, (uint32_t)kind, false, &t, &why);
  if (r < 0) return problem(env, why, -r);
  napi_value o = header_obj(env, &t, t.len), ports, list;
  ziu_set_prop(env, o, "nowS", ziu_int(env, dp_now_s()));
  napi_create_array(env, &ports);
  napi_create_array(env, &list);
  uint32_t k = 0;
  if (t.kind == DP_TABLE_BRIDGE) {
    for (uint32_t i = 0; i < t.aux_count; i++) {
      char name[DP_PORT_NAME + 1];
      memcpy(name, t.aux + (size_t)i * DP_PORT_NAME, DP_PORT_NAME);
      name[DP_PORT_NAME] = 0;
      napi_value v;
      if (name[0]) napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v);
      else napi_get_null(env, &v);
      napi_set_element(env, ports, i, v);
    }
    const struct dp_bridge_entry *e = (const struct dp_bridge_entry *)t.ent;
    for (uint32_t i = 0; i < t.entries && (int32_t)k < max; i++) {
      if (e[i].port == 0) continue;
      napi_value x;
      napi_create_object(env, &x);
      ziu_set_prop(env, x, "slot", ziu_int(env, i));
      ziu_set_prop(env, x, "mac", mac_str(env, e[i].mac));
      ziu_set_prop(env, x, "port", ziu_int(env, e[i].port - 1));
      ziu_set_prop(env, x, "lastSeenS", ziu_int(env, e[i].last_seen));
      napi_set_element(env, list, k++, x);
    }
  } else {
    for (uint32_t i = 0; i < t.entries && (int32_t)k < max; i++) {
      struct dp_flow f;
      dp_flow_read(&t, i, &f);
      if ((f.state & 0xffu) != DP_FLOW_LIVE) continue;
      napi_value x;
      napi_create_object(env, &x);
      ziu_set_prop(env, x, "slot", ziu_int(env, i));
      ziu_set_prop(env, x, "family", ziu_int(env, f.key.family));
      ziu_set_prop(env, x, "proto", ziu_int(env, f.key.proto));
      ziu_set_prop(env, x, "ethertype", ziu_int(env, f.key.ethertype));
      ziu_set_prop(env, x, "src", bytes_val(env, f.key.src, 16));
      ziu_set_prop(env, x, "dst", bytes_val(env, f.key.dst, 16));
      ziu_set_prop(env, x, "sport", ziu_int(env, f.key.sport));
      ziu_set_prop(env, x, "dport", ziu_int(env, f.key.dport));
      ziu_set_prop(env, x, "inPort", ziu_int(env, f.key.in_port));
      ziu_set_prop(env, x, "action", ziu_int(env, f.action));
      ziu_set_prop(env, x, "outPort", ziu_int(env, f.out_port));
      ziu_set_prop(env, x, "packets", ziu_double(env, (double)f.packets));
      ziu_set_prop(env, x, "bytes", ziu_double(env, (double)f.bytes));
      ziu_set_prop(env, x, "createdS", ziu_int(env, f.created));
      ziu_set_prop(env, x, "lastSeenS", ziu_int(env, f.last_seen));
      ziu_set_prop(env, x, "tcpFlags", ziu_int(env, f.tcp_flags));
      ziu_set_prop(env, x, "marked", ziu_bool(env, (f.state & DP_FLOW_MARK) != 0));
      ziu_set_prop(env, x, "pinned", ziu_bool(env, (f.state & DP_FLOW_PIN) != 0));
      ziu_set_prop(env, x, "gen", ziu_bigint_u64(env, f.gen));
      napi_set_element(env, list, k++, x);
    }
  }
  ziu_set_prop(env, o, "ports", ports);
  ziu_set_prop(env, o, "list", list);
  dp_table_unmap(&t);
  return o;
}

/*
 * tableAge(fd, idleS): the agent's side of aging (docs/tables.md). Every
 * live flow idle at least idleS is marked, by compare-and-swap on its state
 * word (live -> live|mark), and nothing else is written: the datapath, the
 * only writer of everything else, frees a marked flow that stays idle
 * (dp_flow_sweep) and clears the mark of one that sees traffic. Returns
 * {marked, live} or {problem}.
 */
static napi_value n_table_age(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t fd, idle;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i32(env, argv[1], &idle)) return NULL;
  if (idle < 0) return ziu_errno(env, EINVAL);
  struct dp_table t;
  const char *why;
  int r = dp_table_map(fd, DP_TABLE_FLOW, true, &t, &why);
  if (r < 0) return problem(env, why, -r);
  uint32_t now = dp_now_s(), marked = 0, n = 0;
  for (uint32_t i = 0; i < t.entries; i++) {
    struct dp_flow f;
    dp_flow_read(&t, i, &f);
    if (f.state != DP_FLOW_LIVE) continue; /* free, or marked already */
    n++;
    if ((int32_t)(now - f.last_seen) < idle) continue;
    uint32_t *st = (uint32_t *)(t.ent + (size_t)i * t.entry_bytes + (t.format == 1 ? offsetof(struct dp_flow1, state) : offsetof(struct dp_flow2, state)));
    uint32_t expected = DP_FLOW_LIVE;
    if (__atomic_compare_exchange_n(st, &expected, DP_FLOW_LIVE | DP_FLOW_MARK, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) marked++;
  }
  dp_table_unmap(&t);
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "marked", ziu_int(env, marked));
  ziu_set_prop(env, o, "live", ziu_int(env, n));
  return o;
}

/* ---- N-API: the engine's tables ---- */

/* dpTablesAttach(h, bridgeFd, flowFd, writable): map both (replacing any), ports bound by name. {problem} if a file is not a table. */
static napi_value n_dp_tables_attach(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  struct dp *dp = dp_from_value(env, argv[0]);
  if (!dp) return NULL;
  int32_t bfd, ffd;
  bool writable;
  if (!ziu_get_i32(env, argv[1], &bfd) || !ziu_get_i32(env, argv[2], &ffd) || napi_get_value_bool(env, argv[3], &writable) != napi_ok) return NULL;
  struct dp_table b, f;
  const char *why;
  int r = dp_table_map(bfd, DP_TABLE_BRIDGE, writable, &b, &why);
  if (r < 0) return problem(env, why ? why : NULL, -r);
  r = dp_table_map(ffd, DP_TABLE_FLOW, writable, &f, &why);
  if (r < 0) {
    dp_table_unmap(&b);
    napi_value p = problem(env, why, -r);
    ziu_set_prop(env, p, "flow", ziu_bool(env, true));
    return p;
  }
  dp_lock_ctl(dp);
  dp_tables_destroy(dp);
  dp->tables.bridge = b;
  dp->tables.flow = f;
  dp->tables.own_from_set = false;
  if (!dp->frozen) {
    dp_tables_thaw(dp);
  } else {
    dp_tables_freeze(dp);
    dp_tables_bind_ports(dp);
  }
  dp_changed_unlock(dp);
  return ziu_int(env, 0);
}

/*
 * dpTablesConvertFrom(h, srcFd): the new side of a handover whose flow
 * format differs: map the other instance's flow table read-only and copy
 * every entry into ours (attached, writable: nobody else has it), from its
 * track_gen on; the rest is caught up when we thaw (dp_tables_thaw).
 * Returns the entries copied, or {problem}.
 */
static napi_value n_dp_tables_convert_from(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  struct dp *dp = dp_from_value(env, argv[0]);
  if (!dp) return NULL;
  int32_t fd;
  if (!ziu_get_i32(env, argv[1], &fd)) return NULL;
  struct dp_table s;
  const char *why;
  int r = dp_table_map(fd, DP_TABLE_FLOW, false, &s, &why);
  if (r < 0) return problem(env, why, -r);
  dp_lock_ctl(dp);
  struct dp_table *own = &dp->tables.flow;
  if (!own->map || !dp->frozen || s.entries != own->entries) {
    pthread_mutex_unlock(&dp->lock);
    dp_table_unmap(&s);
    return problem(env, !own->map ? "no flow table of our own to convert into" : !dp->frozen ? "the engine serves: too late to convert" : "the two flow tables differ in size: give the new table a file of the old one's size", EINVAL);
  }
  dp_table_unmap(&dp->tables.src);
  dp_table_protect(own, true);
  dp->tables.src = s;
  dp->tables.src_from = __atomic_load_n(&s.hdr->track_gen, __ATOMIC_ACQUIRE);
  uint64_t n = dp_flow_copy_all(&s, own);
  dp->tables.own_from_set = false;
  dp_changed_unlock(dp);
  return ziu_double(env, (double)n);
}

/* dpTablesTrack(h): the old side at export: from now on every flow we touch gets a new generation once. */
static napi_value n_dp_tables_track(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct dp *dp = dp_from_value(env, argv[0]);
  if (!dp) return NULL;
  dp_lock_ctl(dp);
  struct dp_table *f = &dp->tables.flow;
  if (f->map && f->writable) {
    dp->tables.track = f->hdr->generation;
    __atomic_store_n(&f->hdr->track_gen, dp->tables.track, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, 0);
}

/*
 * dpTablesHandback(h): the new side gives the rings back (frozen): what our
 * flow table changed since we took the rings goes back into the old
 * instance's table, in its format, so its counters go on from ours. Returns
 * the entries converted (0 without a conversion).
 */
static napi_value n_dp_tables_handback(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct dp *dp = dp_from_value(env, argv[0]);
  if (!dp) return NULL;
  dp_lock_ctl(dp);
  uint64_t n = 0;
  struct dp_tables *t = &dp->tables;
  if (dp->frozen && t->src.map && t->flow.map && t->own_from_set && dp_table_protect(&t->src, true) == 0) {
    n = dp_flow_catch_up(&t->flow, t->own_from, &t->src);
    dp_table_protect(&t->src, false);
  }
  pthread_mutex_unlock(&dp->lock);
  return ziu_double(env, (double)n);
}

/* dpTablesRelease(h): committed: the other instance's table is no longer needed. */
static napi_value n_dp_tables_release(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct dp *dp = dp_from_value(env, argv[0]);
  if (!dp) return NULL;
  dp_lock_ctl(dp);
  dp_table_unmap(&dp->tables.src);
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, 0);
}

/*
 * dpTablesInfo(h): what the engine's tables hold and did. The live entries
 * are counted after the lock is released (a scan of a big table would stall
 * the worker for milliseconds): only this thread maps and unmaps tables, so
 * the mappings outlive the call, and a count taken while the worker writes
 * is as good as any.
 */
static napi_value n_dp_tables_info(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct dp *dp = dp_from_value(env, argv[0]);
  if (!dp) return NULL;
  dp_lock_ctl(dp);
  struct dp_tables snap = dp->tables;
  pthread_mutex_unlock(&dp->lock);
  struct dp_tables *t = &snap;
  napi_value o, b, f;
  napi_create_object(env, &o);
  napi_get_null(env, &b);
  napi_get_null(env, &f);
  if (t->bridge.map) {
    napi_create_object(env, &b);
    ziu_set_prop(env, b, "format", ziu_int(env, t->bridge.format));
    ziu_set_prop(env, b, "entries", ziu_int(env, t->bridge.entries));
    ziu_set_prop(env, b, "bytes", ziu_double(env, (double)t->bridge.len));
    ziu_set_prop(env, b, "live", ziu_int(env, dp_bridge_count_table(&t->bridge)));
    ziu_set_prop(env, b, "writable", ziu_bool(env, t->bridge.writable));
  }
  if (t->flow.map) {
    napi_create_object(env, &f);
    ziu_set_prop(env, f, "format", ziu_int(env, t->flow.format));
    ziu_set_prop(env, f, "entries", ziu_int(env, t->flow.entries));
    ziu_set_prop(env, f, "bytes", ziu_double(env, (double)t->flow.len));
    ziu_set_prop(env, f, "live", ziu_int(env, dp_flow_count(&t->flow)));
    ziu_set_prop(env, f, "writable", ziu_bool(env, t->flow.writable));
    ziu_set_prop(env, f, "idleS", ziu_int(env, t->flow.idle_s));
    ziu_set_prop(env, f, "generation", ziu_bigint_u64(env, __atomic_load_n(&t->flow.hdr->generation, __ATOMIC_ACQUIRE)));
    ziu_set_prop(env, f, "created", ziu_double(env, (double)t->flows_created));
    ziu_set_prop(env, f, "changed", ziu_double(env, (double)t->flows_changed));
    ziu_set_prop(env, f, "aged", ziu_double(env, (double)t->flows_aged));
    ziu_set_prop(env, f, "evicted", ziu_double(env, (double)t->flows_evicted));
    ziu_set_prop(env, f, "hits", ziu_double(env, (double)t->flow_hits));
    ziu_set_prop(env, f, "pinDrops", ziu_double(env, (double)t->pin_drops));
    ziu_set_prop(env, f, "keptByOffload", ziu_double(env, (double)t->kept_by_offload));
    ziu_set_prop(env, f, "caughtUp", ziu_double(env, (double)t->caught_up));
    ziu_set_prop(env, f, "convertedFrom", t->src.map ? ziu_int(env, t->src.format) : ziu_int(env, 0));
  }
  ziu_set_prop(env, o, "bridge", b);
  ziu_set_prop(env, o, "flow", f);
  return o;
}

void dp_table_register(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "DP_TABLE_BRIDGE", DP_TABLE_BRIDGE);
  ziu_register_const(env, exports, "DP_TABLE_FLOW", DP_TABLE_FLOW);
  ziu_register_const(env, exports, "DP_FLOW_IDLE_S", DP_FLOW_IDLE_S);
  ziu_register_const(env, exports, "DP_MAC_AGE_S", DP_MAC_AGE_S);
  ziu_register_const(env, exports, "DP_FLOW_GRACE_S", DP_FLOW_GRACE_S);
  ziu_register(env, exports, "tableInit", n_table_init);
  ziu_register(env, exports, "tableBytes", n_table_bytes);
  ziu_register(env, exports, "tableCheck", n_table_check);
  ziu_register(env, exports, "tableDump", n_table_dump);
  ziu_register(env, exports, "tableAge", n_table_age);
  ziu_register(env, exports, "dpTablesAttach", n_dp_tables_attach);
  ziu_register(env, exports, "dpTablesConvertFrom", n_dp_tables_convert_from);
  ziu_register(env, exports, "dpTablesTrack", n_dp_tables_track);
  ziu_register(env, exports, "dpTablesHandback", n_dp_tables_handback);
  ziu_register(env, exports, "dpTablesRelease", n_dp_tables_release);
  ziu_register(env, exports, "dpTablesInfo", n_dp_tables_info);
}
