#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ziu maintainers
# Apache License 2.0 (see LICENSE in the ziu repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ziu_fleet_summary
short_description: One summary of a rolling ziu upgrade, from every node's report
version_added: 0.1.0
description:
  - Takes the per-node records of a run (what the C(ziu.vswitch.ziu_rolling_upgrade) role sets as
    C(ziu_node_record) on each host) and writes, in I(dir), one C(nodes/<host>.json) per record,
    C(summary.json), and C(summary.md), a markdown table with one row per node of the fleet in
    rollout order, node, result, switchover, outage, phase and reason. A node without a record
    was not touched (C(not-run)), as after a canary that failed.
  - Run it once, on the controller (delegate_to localhost, run_once).
options:
  dir:
    description: The run's report directory on the controller.
    type: path
    required: true
  hosts:
    description: Every node of the fleet, in the order the rollout goes.
    type: list
    elements: str
    required: true
  records:
    description: The records of the nodes that ran, by host name (C(result), C(switchover_us), C(outage_us), C(phase), C(reason), C(report), ...).
    type: dict
    default: {}
  title:
    description: The markdown heading.
    type: str
    default: ziu rolling upgrade
  check_mode_run:
    description: The play ran in check mode (the summary says so; results are C(would-upgrade)).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: In check mode nothing is written; the summary is still returned.
  diff_mode:
    support: none
author:
  - ziu maintainers
'''

EXAMPLES = r'''
- name: Fleet summary
  ziu.vswitch.ziu_fleet_summary:
    dir: /var/log/ziu-rollouts/20261130T120000Z
    hosts: "{{ query('inventory_hostnames', 'ziu_datapaths') }}"
    records: "{{ my_records }}"
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
summary:
  description: What summary.json holds, C(nodes) (one per host, with C(node), C(result), C(switchover_us), C(outage_us), C(phase), C(reason)) and C(counts) by result.
  returned: always
  type: dict
markdown:
  description: What summary.md holds.
  returned: always
  type: str
json_path:
  description: Path of summary.json.
  returned: always
  type: str
markdown_path:
  description: Path of summary.md.
  returned: always
  type: str
'''

import datetime
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

FIELDS = ('result', 'changed', 'switchover_us', 'outage_us', 'phase', 'reason', 'version', 'upgrade_id', 'check_mode')


def cell(v, unit=''):
    if v is None or v == '':
        return '-'
    if isinstance(v, float):
        v = ('%.1f' % v).rstrip('0').rstrip('.')
    return ('%s%s' % (v, unit)).replace('|', '\\|').replace('\n', ' ')


def write_atomic(path, text):
    d = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.summary.')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type='path', required=True),
            hosts=dict(type='list', elements='str', required=True),
            records=dict(type='dict', default={}),
            title=dict(type='str', default='ziu rolling upgrade'),
            check_mode_run=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    nodes = []
    counts = {}
    records = p['records'] or {}
    for host in p['hosts']:
        rec = records.get(host)
        if not isinstance(rec, dict):
            rec = None
        row = dict(node=host)
        if rec is None:
            row.update(result='not-run', changed=False, switchover_us=None, outage_us=None, phase=None, reason='not touched: the rollout stopped before this node, or it was not in the play')
        else:
            for k in FIELDS:
                row[k] = rec.get(k)
        counts[row['result']] = counts.get(row['result'], 0) + 1
        nodes.append(row)

    summary = dict(
        title=p['title'],
        generated_at=datetime.datetime.utcnow().replace(microsecond=0).isoformat() + 'Z',
        check_mode=p['check_mode_run'],
        hosts=len(nodes),
        counts=counts,
        nodes=nodes,
    )
    lines = ['# %s%s' % (p['title'], ' (check mode)' if p['check_mode_run'] else ''), '',
             ', '.join('%s: %d' % (k, counts[k]) for k in sorted(counts)), '',
             '| node | result | switchover | outage | phase | reason |', '|---|---|---|---|---|---|']
    for n in nodes:
        lines.append('| %s | %s | %s | %s | %s | %s |' % (cell(n['node']), cell(n['result']), cell(n.get('switchover_us'), ' us'),
                                                      cell(n.get('outage_us'), ' us'), cell(n.get('phase')), cell(n.get('reason'))))
    markdown = '\n'.join(lines) + '\n'
    json_path = os.path.join(p['dir'], 'summary.json')
    md_path = os.path.join(p['dir'], 'summary.md')
    text = json.dumps(summary, indent=2, sort_keys=True) + '\n'

    changed = True
    if not module.check_mode:
        nodes_dir = os.path.join(p['dir'], 'nodes')
        if not os.path.isdir(nodes_dir):
            os.makedirs(nodes_dir, 0o755)
        for host in p['hosts']:
            rec = records.get(host)
            # A host name is an inventory name; one that could leave the directory gets no file.
            if isinstance(rec, dict) and '/' not in host and host not in ('.', '..'):
                write_atomic(os.path.join(nodes_dir, '%s.json' % host), json.dumps(rec, indent=2, sort_keys=True) + '\n')
        write_atomic(json_path, text)
        write_atomic(md_path, markdown)
    module.exit_json(changed=changed, summary=summary, markdown=markdown, json_path=json_path, markdown_path=md_path)


if __name__ == '__main__':
    main()
