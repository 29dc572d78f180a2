#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ziu maintainers
# Apache License 2.0 (see LICENSE in the ziu repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ziu_upgrade
short_description: Upgrade a running datapath in place with C(ziu upgrade), rolling back on failure
version_added: 0.1.0
description:
  - Runs C(ziu upgrade --json) on the node and returns its report. The new datapath instance
    starts beside the running one, takes every vhost-user connection, memory region and tap
    over as file descriptors, and the old one exits; any failure before commit rolls back to
    the old instance, whose traffic never stopped for longer than the switchover.
  - Idempotent. When the running instance already runs the datapath and version that the new
    command reports (C(<new> --handover-info)), nothing is done and the task is ok, unchanged,
    with I(result=up-to-date); I(force=true) upgrades anyway (a rebuild that kept its version).
  - In check mode it runs C(ziu upgrade --dry-run), every preflight check up to the first
    change (the datapath answers and is not in another upgrade, the new command speaks its
    handover protocol and state format, the memory fits), and changes nothing. No process is
    left, no mem file made, the hugepage pool is not changed, no lock or journal is written.
  - The exit codes and the report's JSON shape are documented in the ziu repository,
    docs/ansible.md and C(ziu upgrade --help).
options:
  control:
    description: Control socket of the running (old) datapath.
    type: path
    required: true
  new:
    description:
      - How to start the new datapath, as C(ziu upgrade --new) takes it.
      - Either the full command line (a string, or a list of arguments), or only the new
        binary once the running datapath reports its configuration (a later ziu); then the new
        instance takes the running one's ports and options.
    type: raw
    required: true
  mem:
    description: Create and prepopulate this much memory for the new instance (for example C(1G)) and pass it as C(--mem-file).
    type: str
  page_size:
    description: Hugepage size for I(mem).
    type: str
    choices: [2M, 1G]
  verify_ms:
    description: How long the new instance must forward before commit (ziu's default when omitted).
    type: int
  ready_timeout_ms:
    description: Deadline for the new instance's READY=1.
    type: int
  dead_man_ms:
    description: A frozen old instance thaws itself after this long without resume.
    type: int
  health_url:
    description: An HTTP endpoint that must answer 2xx during verify.
    type: str
  report:
    description: Also write the JSON report to this file on the node.
    type: path
  force:
    description: Upgrade even when the running instance already runs the version the new command reports.
    type: bool
    default: false
  executable:
    description: The ziu command on the node, a path or a command line such as C(node /opt/ziu/bin/ziu.js), or a list.
    type: raw
    default: ziu
  log_level:
    description: ziu's log level on stderr (returned as I(stderr)).
    type: str
    default: warn
    choices: [silent, error, warn, info, debug]
attributes:
  check_mode:
    support: full
    details: C(ziu upgrade --dry-run); the report has I(result=would-upgrade), or the task fails with the refusal.
  diff_mode:
    support: none
author:
  - ziu maintainers
notes:
  - Run it on one node at a time per datapath; ziu refuses a second upgrade of the same datapath
    while one runs (C(ERR_ZIU_LOCKED)). A fleet is rolled by the C(ziu.vswitch.ziu_rolling_upgrade) role.
'''

EXAMPLES = r'''
- name: Upgrade the vswitch datapath to the new release
  ziu.vswitch.ziu_upgrade:
    control: /run/ziu/dp.sock
    new: /opt/ziu-2.1/bin/ziu-datapath --control /run/ziu/dp.sock --vhost-user vm1=/run/vm1.sock
    mem: 1G
    page_size: 2M
  register: upgraded

- name: The same command line as a list (arguments with spaces stay whole)
  ziu.vswitch.ziu_upgrade:
    control: /run/ziu/dp.sock
    new: [/opt/ziu-2.1/bin/ziu-datapath, --control, /run/ziu/dp.sock, --vhost-user, "vm1=/run/vm 1.sock"]

- name: Only say whether it would upgrade (the same as running the play with --check)
  ziu.vswitch.ziu_upgrade:
    control: /run/ziu/dp.sock
    new: /opt/ziu-2.1/bin/ziu-datapath --control /run/ziu/dp.sock --vhost-user vm1=/run/vm1.sock
  check_mode: true
  register: preflight
'''

RETURN = r'''
result:
  description: How it ended, C(committed), C(up-to-date) or, in check mode, C(would-upgrade). A failed task says C(rolled_back), C(refused) or C(failed).
  returned: always
  type: str
  sample: committed
switchover_us:
  description: The traffic gap, from the old instance's freeze to the new instance's first pass (CLOCK_MONOTONIC in both datapaths), in microseconds; null when there was none.
  returned: always
  type: float
  sample: 212.4
outage_us:
  description: >-
    How long this node's traffic stood still as the datapaths measured it: the switchover for a
    committed upgrade, 0 when it ended before the freeze (up-to-date, would-upgrade, refused, or
    rolled back before the freeze), null when ziu cannot tell (rolled back or failed after it).
  returned: always
  type: float
phase:
  description: Where it stopped, for a rollback, a refusal (C(preflight)) or a failure; null when it committed.
  returned: always
  type: str
  sample: verify
reason:
  description: Why it stopped, in ziu's words; null when it committed.
  returned: always
  type: str
version:
  description: The version the node runs afterwards (the new one if committed, else the old one).
  returned: when ziu answered
  type: str
record:
  description: This node's row of a fleet summary (C(result), C(changed), C(switchover_us), C(outage_us), C(phase), C(reason), C(version), C(upgrade_id)); see C(ziu.vswitch.ziu_fleet_summary).
  returned: always
  type: dict
report:
  description: The whole C(ziu upgrade --json) report (snake_case keys), including C(phases), C(ports), C(old), C(new), C(preflight), C(rollback), C(warnings).
  returned: when ziu printed one
  type: dict
rc:
  description: ziu's exit code (0 committed, would-upgrade or up-to-date; 1 rolled back; 2 refused or bad input; 3 failed, operator action needed).
  returned: always
  type: int
cmd:
  description: The command that ran.
  returned: always
  type: list
  elements: str
stderr:
  description: ziu's log and message lines.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ziu.vswitch.plugins.module_utils.ziu_cli import (
    EXECUTABLE_OPTION,
    command_line,
    executable_argv,
    last_line,
    run_json,
)

# Phases at or after which the old instance had frozen: a rollback from there stopped traffic.
AFTER_FREEZE = ('freeze', 'resume', 'verify', 'commit')


def outage_us(report):
    result = report.get('result')
    if result == 'committed':
        return report.get('switchover_us')
    if result in ('up-to-date', 'would-upgrade', 'refused'):
        return 0
    rollback = report.get('rollback') or {}
    if result == 'rolled_back' and rollback.get('phase') not in AFTER_FREEZE:
        return 0
    return None


def bad_input(module, why):
    record = dict(result='refused', changed=False, switchover_us=None, outage_us=0, phase='input', reason=why, version=None, upgrade_id=None)
    module.fail_json(msg=why, record=record, rc=2, cmd=[], stderr='', **dict((k, record[k]) for k in ('result', 'switchover_us', 'outage_us', 'phase', 'reason')))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            control=dict(type='path', required=True),
            new=dict(type='raw', required=True),
            mem=dict(type='str'),
            page_size=dict(type='str', choices=['2M', '1G']),
            verify_ms=dict(type='int'),
            ready_timeout_ms=dict(type='int'),
            dead_man_ms=dict(type='int'),
            health_url=dict(type='str'),
            report=dict(type='path'),
            force=dict(type='bool', default=False),
            executable=EXECUTABLE_OPTION,
            log_level=dict(type='str', default='warn', choices=['silent', 'error', 'warn', 'info', 'debug']),
        ),
        required_by=dict(page_size='mem'),
        supports_check_mode=True,
    )
    p = module.params
    try:
        new = command_line(p['new'])
    except ValueError as e:
        bad_input(module, str(e))
    if not new:
        bad_input(module, 'new: empty; give the new datapath binary or its command line')

    argv = executable_argv(module, p['executable']) + ['upgrade', '--json', '--control', p['control'], '--new', new]
    for opt, flag in (('mem', '--mem'), ('page_size', '--page-size'), ('verify_ms', '--verify-ms'), ('ready_timeout_ms', '--ready-timeout-ms'),
                      ('dead_man_ms', '--dead-man-ms'), ('health_url', '--health-url'), ('report', '--report')):
        if p[opt] is not None:
            argv += [flag, str(p[opt])]
    if not p['force']:
        argv.append('--skip-if-current')
    if module.check_mode:
        argv.append('--dry-run')

    rc, report, out, err = run_json(module, argv)
    common = dict(rc=rc, cmd=argv, stderr=err)
    if not isinstance(report, dict) or 'result' not in report:
        # Bad input (exit 2 before any report) or a crash: ziu's last stderr line says why.
        why = last_line(err) or last_line(out) or 'ziu printed no report'
        record = dict(result='refused' if rc == 2 else 'failed', changed=False, switchover_us=None, outage_us=0 if rc == 2 else None,
                      phase='input' if rc == 2 else None, reason=why, version=None, upgrade_id=None)
        module.fail_json(msg='ziu upgrade printed no report (exit %d): %s' % (rc, why), record=record, **dict(common, **dict((k, record[k]) for k in ('result', 'switchover_us', 'outage_us', 'phase', 'reason'))))

    result = report['result']
    rollback = report.get('rollback') or {}
    new_info = report.get('new') or {}
    old_info = report.get('old') or {}
    version = new_info.get('version') if result == 'committed' else old_info.get('version')
    message = report.get('message') or last_line(err) or result
    changed = result in ('committed', 'would-upgrade')
    if result in ('committed', 'up-to-date', 'would-upgrade'):
        phase, reason, msg = None, None, None
    elif result == 'rolled_back':
        phase, reason = rollback.get('phase'), rollback.get('reason') or 'rolled back'
        msg = 'rolled back in %s: %s (traffic stays on the old instance, pid %s)' % (phase, reason, old_info.get('pid'))
    elif result == 'refused':
        phase, reason = 'preflight', message
        msg = 'refused in preflight, nothing changed: %s' % message
    else:
        # failed: neither committed cleanly nor rolled back; the message says what to do.
        phase = rollback.get('phase') or (list(report['phases'])[-1] if report.get('phases') else None)
        reason = message
        msg = 'failed, operator action needed: %s' % message
    record = dict(result=result, changed=changed, switchover_us=report.get('switchover_us'), outage_us=outage_us(report),
                  phase=phase, reason=reason, version=version, upgrade_id=report.get('upgrade_id'))
    facts = dict(result=result, switchover_us=record['switchover_us'], outage_us=record['outage_us'], phase=phase, reason=reason,
                 record=record, report=report, **common)
    if version is not None:
        facts['version'] = version
    if msg is None:
        module.exit_json(changed=changed, **facts)
    module.fail_json(msg=msg, code=rollback.get('code') or report.get('code'), **facts)


if __name__ == '__main__':
    main()
