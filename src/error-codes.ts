/**
 * Every code a ZiuError can carry, with how a command ends when that error
 * ends it. `ziu` and `ziu-datapath` take their exit codes from here; an
 * upgrade's or a recovery's result maps onto the same outcomes
 * (upgrade/report.ts, upgrade/recover.ts). test/errors.test.ts checks this
 * list against every ERR_ZIU_ literal in src and against the docs.
 */

/** Exit codes, the same for every command (README: "Exit codes"). */
export const EXIT = {
  ok: 0,
  /** failed, or the answer is "no" (a plan that does not fit); an upgrade: rolled back */
  failed: 1,
  /** bad input, or refused before anything changed */
  refused: 2,
  /** failed and left something for the operator to do (the message says what) */
  operator: 3,
} as const;

export type Outcome = keyof typeof EXIT;

/** How a command ends when an error of that code ends it. */
export type ErrorClass = Exclude<Outcome, 'ok'>;

export interface ErrorInfo {
  readonly class: ErrorClass;
  readonly meaning: string;
}

const refused = (meaning: string) => ({ class: 'refused', meaning }) as const;
const failed = (meaning: string) => ({ class: 'failed', meaning }) as const;

/*
 * No code is 'operator' yet: exit 3 comes from an upgrade or recovery that
 * ended neither committed nor rolled back. Codes that read like refusals but
 * are 'failed' (ERR_ZIU_DEMO_BUSY, ERR_ZIU_HUGEPAGES_UNSUPPORTED, ...) exit 1
 * as they always did; an upgrade refuses them by phase, not by code.
 */
export const ERRORS = {
  ERR_ZIU_ABORTED: failed('interrupted (a signal or an abort) before it finished'),
  ERR_ZIU_BAD_FD: failed('a value given as an fd is not one, or not a unix stream or seqpacket socket'),
  ERR_ZIU_BAD_MESSAGE: failed('a framed message announces more body bytes than allowed'),
  ERR_ZIU_BATON: failed('the handover baton says the other instance holds the rings, or has not taken them'),
  ERR_ZIU_BENCH_OUT: failed('ziu bench cannot write its results'),
  ERR_ZIU_BENCH_UPGRADE: failed('an upgrade during ziu bench did not commit'),
  ERR_ZIU_CONTROL_BAD_MESSAGE: failed('a control message body is not JSON'),
  ERR_ZIU_CONTROL_TIMEOUT: failed('a datapath did not answer a control request in time'),
  ERR_ZIU_CONTROL_UNKNOWN_OP: failed('a datapath does not know the control op'),
  ERR_ZIU_DEMO_BUSY: failed("another ziu demo seems to be running (its tap interface exists)"),
  ERR_ZIU_EMPTY_MESSAGE: failed('a send without data bytes: an empty seqpacket message, or fds alone'),
  ERR_ZIU_FAULT: failed('a fault injected for tests (ZIU_FAULT)'),
  ERR_ZIU_FLOW: failed('a flow given to the `flow` control op is not valid, or not known'),
  ERR_ZIU_FDS_TRUNCATED: failed('the fds of a received message were cut off (MSG_CTRUNC); every one was closed'),
  ERR_ZIU_FD_NAMES: failed('a handover message does not name each attached fd exactly once'),
  ERR_ZIU_HANDOVER_STATE: failed("the op is not allowed in the instance's handover role"),
  ERR_ZIU_HEALTH: failed('the --health-url check failed during verify'),
  ERR_ZIU_HUGEPAGES_RESTORE: failed('nr_hugepages could not be put back after a failed reservation'),
  ERR_ZIU_HUGEPAGES_SHORT: failed('fewer free hugepages than needed'),
  ERR_ZIU_HUGEPAGES_UNSUPPORTED: failed('the kernel has no hugepages of that size (no sysfs directory)'),
  ERR_ZIU_HUGETLBFS_PAGE_SIZE: failed('a hugetlbfs mount is for another page size'),
  ERR_ZIU_IMPORT: failed('the new instance cannot take a handed-over device'),
  ERR_ZIU_INTERNAL: failed('an error without a code, or with an ERR_ZIU_ code this ziu does not know (the message keeps its text)'),
  ERR_ZIU_INVALID_ARG: failed('a vhost-user message cannot be encoded from these values'),
  ERR_ZIU_JOURNAL: failed('the upgrade journal cannot be read, is invalid, or is already finished'),
  ERR_ZIU_JOURNAL_EXISTS: failed("an unfinished upgrade's journal is in the way (run ziu recover)"),
  ERR_ZIU_LEDGER: failed("a mem file ledger entry or the hugepage debt file in the state dir is not JSON or not ziu's"),
  ERR_ZIU_LOCK: failed('the upgrade lock cannot be read or is not a ziu lock'),
  ERR_ZIU_LOCKED: refused('another upgrade of this datapath is running'),
  ERR_ZIU_MEMFILE: refused('ziu-datapath cannot open a --mem-file, or it is empty'),
  ERR_ZIU_MEMFILE_EXISTS: refused('the mem file exists already'),
  ERR_ZIU_MEMFILE_NO_SPACE: failed('not enough free pages to allocate the mem file (ENOSPC)'),
  ERR_ZIU_MEM_SHORT: failed('upgrade --mem does not fit in the tmpfs directory'),
  ERR_ZIU_MESSAGE_TRUNCATED: failed('a received message was longer than the read buffer'),
  ERR_ZIU_MOUNT: failed('mount or umount failed'),
  ERR_ZIU_NEW_COMMAND: failed("the new datapath's command cannot be run or does not speak the handover protocol"),
  ERR_ZIU_NEW_EXITED: failed('the new datapath exited before READY=1'),
  ERR_ZIU_NOTIFY_SOCKET: failed('the notify socket for the new datapath cannot be bound'),
  ERR_ZIU_NOT_A_DATAPATH: refused('the control socket is not a datapath speaking the handover protocol'),
  ERR_ZIU_NOT_HUGETLBFS: refused('a directory is not a hugetlbfs mount'),
  ERR_ZIU_NOT_TMPFS: refused('the mem-file directory is not on tmpfs'),
  ERR_ZIU_NO_CONTROL: refused('no datapath control socket at that path'),
  ERR_ZIU_NO_HUGEPAGES: refused('the kernel offers no hugepages of that size'),
  ERR_ZIU_NO_LAUNCH: refused("upgrade --new <binary>: the old instance does not report how it was started (hello.launch), so its configuration cannot be reused"),
  ERR_ZIU_NO_MEMFILE: refused('no such mem file'),
  ERR_ZIU_NO_NODE: failed('no hugepages of that size on that NUMA node'),
  ERR_ZIU_OFFLOAD: failed('the offload device (--offload) cannot be reached or attached, or there is no offload module'),
  ERR_ZIU_PEER_CLOSED: failed('the peer closed the connection'),
  ERR_ZIU_PEER_CLOSED_MID_MESSAGE: failed('the peer closed in the middle of a framed message'),
  ERR_ZIU_POOL_LOCKED: refused('another ziu held the hugepage pool lock for longer than the wait allowed'),
  ERR_ZIU_PROBE: failed('a ziu probe run by ziu bench exited early or printed no report'),
  ERR_ZIU_PROBE_CONNECT: failed('no vhost-user back-end connected to the probe in time'),
  ERR_ZIU_PROBE_STOPPED: failed('the probe was stopped before a back-end connected'),
  ERR_ZIU_PROTOCOL: failed('the old and the new datapath speak different handover protocols'),
  ERR_ZIU_READY_TIMEOUT: failed('the new datapath sent no READY=1 in time'),
  ERR_ZIU_SHARED_MEMFILE: refused("the new datapath's command gives it a --mem-file the old instance maps"),
  ERR_ZIU_SOCKET_CLOSED: failed('the socket was closed (with a send pending, or before the op)'),
  ERR_ZIU_SOCKET_PATH: refused('a socket path is empty, too long, or names something that is not a socket'),
  ERR_ZIU_STATE: failed('a handover state document is invalid (the message names the field)'),
  ERR_ZIU_STATE_FORMAT: failed('a handover state format one side does not speak'),
  ERR_ZIU_STOP: failed('a process survived SIGKILL (stuck in the kernel): stop it by hand'),
  ERR_ZIU_SYSFS: failed('unexpected content in a sysfs file'),
  ERR_ZIU_TABLE: failed('a table file is not a ziu table, is corrupted, holds a format this datapath cannot read, or cannot be used'),
  ERR_ZIU_TABLE_FORMAT: failed("the new datapath cannot read the old instance's table format"),
  ERR_ZIU_TOO_MANY_FDS: failed('more fds than one message carries (SCM_MAX_FD), or a peer left too many fds with a message it did not finish'),
  ERR_ZIU_UNTRUSTED_PATH: refused('a file or directory ziu would use is a symlink, or another local user owns or can write it'),
  ERR_ZIU_USAGE: refused('bad input: a flag, an option or a config value (UsageError)'),
  ERR_ZIU_VERIFY: failed('the new instance failed verification'),
  ERR_ZIU_VHOST_BAD_MESSAGE: failed('a vhost-user message does not decode'),
  ERR_ZIU_VHOST_BUSY: failed('a vhost-user request while a reply is still outstanding'),
  ERR_ZIU_VHOST_NEGOTIATION: failed('the vhost-user back-end refused or did not answer the setup the probe needs'),
  ERR_ZIU_VHOST_TIMEOUT: failed('no vhost-user reply in time'),
  ERR_ZIU_VHOST_UNEXPECTED: failed('the vhost-user back-end sent a request unasked'),
} as const satisfies Record<`ERR_ZIU_${string}`, ErrorInfo>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERRORS, code);
}
