#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ziu maintainers
# Apache License 2.0 (see LICENSE in the ziu repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ziu_memory
short_description: Plan hugepage memory and create or remove a datapath instance's mem files with ziu
version_added: 0.1.0
description:
  - I(state=plan) asks C(ziu hugepages plan) whether memory of these sizes fits beside what is in
    use (C(fits-now), C(fits-after-reserve) or C(does-not-fit)) and fails when it does not fit.
    It never changes anything.
  - I(state=present) creates the mem files of an instance that are missing with
    C(ziu memfile create) (hugepages reserved, the file allocated and zeroed up front). A file that
    is already there with the size asked is left alone (ok, unchanged); one with another size fails
    the task, since a datapath may map it.
  - I(state=absent) removes the instance's mem files (all of them, or the roles in I(files)) with
    C(ziu memfile remove); the hugepages ziu reserved for them go back to the kernel.
  - Check mode is supported in every state; I(state=present) then plans the missing files and
    fails if they would not fit.
options:
  state:
    description: What to do.
    type: str
    choices: [plan, present, absent]
    default: present
  instance:
    description: The datapath instance the files belong to (C([A-Za-z0-9._-]+)); required for I(state=present) and I(state=absent).
    type: str
  files:
    description: The instance's mem files.
    type: list
    elements: dict
    suboptions:
      role:
        description: The file's role, for example C(pool-0), C(flow), C(bridge).
        type: str
        required: true
      size:
        description: Its size, for example C(1G) or C(256M) (rounded up to whole pages).
        type: str
        required: true
  sizes:
    description: For I(state=plan), the sizes wanted (the sizes in I(files) when omitted).
    type: list
    elements: str
  page_size:
    description: Hugepage size.
    type: str
    choices: [2M, 1G]
    default: 2M
  backing:
    description: Where the memory comes from for I(state=present); C(auto) is hugetlbfs as root on a kernel with the page size, else tmpfs.
    type: str
    choices: [auto, hugetlbfs, tmpfs]
    default: auto
  node:
    description: For I(state=plan), the NUMA node the memory must come from.
    type: int
  free_only:
    description: For I(state=plan), count only pages free now, not pages the kernel could still reserve.
    type: bool
    default: false
  executable:
    description: The ziu command on the node, a path or a command line, or a list.
    type: raw
    default: ziu
  log_level:
    description: ziu's log level on stderr.
    type: str
    default: warn
    choices: [silent, error, warn, info, debug]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - ziu maintainers
'''

EXAMPLES = r'''
- name: Does the new instance's memory fit beside the running one?
  ziu.vswitch.ziu_memory:
    state: plan
    sizes: [1G, 256M, 64M]
    page_size: 2M

- name: Create and prepopulate the new instance's mem files
  ziu.vswitch.ziu_memory:
    instance: vr-next
    files:
      - { role: pool-0, size: 1G }
      - { role: flow, size: 256M }
      - { role: bridge, size: 64M }
  register: mem

- name: Give the memory back
  ziu.vswitch.ziu_memory:
    instance: vr-next
    state: absent
'''

RETURN = r'''
verdict:
  description: For I(state=plan), and I(state=present) in check mode with files to create, C(fits-now), C(fits-after-reserve) or C(does-not-fit).
  returned: when planned
  type: str
plan:
  description: C(ziu hugepages plan --json) (rows per page size and node, pages needed, free and addable, the reason).
  returned: when planned
  type: dict
pages_free:
  description: Free pages of I(page_size) on the machine as the plan saw them.
  returned: when planned
  type: int
files:
  description: The instance's mem files afterwards (C(ziu memfile list --json) rows; in check mode, as they would be).
  returned: for present and absent
  type: list
  elements: dict
created:
  description: Roles created (or that would be, in check mode).
  returned: for present
  type: list
  elements: str
removed:
  description: Paths removed (or that would be, in check mode).
  returned: for absent
  type: list
  elements: str
'''

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ziu.vswitch.plugins.module_utils.ziu_cli import (
    EXECUTABLE_OPTION,
    executable_argv,
    last_line,
    parse_size,
    round_up,
    run_json,
)

PAGE = {'2M': 2 << 20, '1G': 1 << 30}
NAME_RE = r'^[A-Za-z0-9._-]+$'


class Ziu(object):
    def __init__(self, module):
        self.module = module
        self.base = executable_argv(module, module.params['executable'])

    def json(self, args, ok=(0,), what=None):
        argv = self.base + args + ['--json']
        rc, doc, out, err = run_json(self.module, argv)
        if rc not in ok or doc is None:
            why = last_line(err) or last_line(out) or 'no output'
            self.module.fail_json(msg='%s failed (exit %d): %s' % (what or ' '.join(args[:2]), rc, why), phase='memory', reason=why, rc=rc, cmd=argv, stderr=err)
        return rc, doc

    def plan(self, sizes):
        p = self.module.params
        args = ['hugepages', 'plan'] + list(sizes) + ['--page-size', p['page_size']]
        if p.get('node') is not None:
            args += ['--node', str(p['node'])]
        if p.get('free_only'):
            args.append('--free-only')
        rc, doc = self.json(args, ok=(0, 1), what='ziu hugepages plan')
        return doc

    def files(self, instance):
        rc, doc = self.json(['memfile', 'list', '--instance', instance], what='ziu memfile list')
        return doc if isinstance(doc, list) else []


def plan_facts(plan, page_size):
    rows = [r for r in plan.get('rows', []) if r.get('node') is None and r.get('page_size') == PAGE[page_size]]
    return dict(verdict=plan.get('verdict'), plan=plan, pages_free=rows[0].get('pages_free') if rows else None)


def short_reason(plan):
    return '; '.join(r.get('reason', '') for r in plan.get('rows', []) if r.get('verdict') == 'does-not-fit') or 'does not fit'


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', choices=['plan', 'present', 'absent'], default='present'),
            instance=dict(type='str'),
            files=dict(type='list', elements='dict', options=dict(role=dict(type='str', required=True), size=dict(type='str', required=True))),
            sizes=dict(type='list', elements='str'),
            page_size=dict(type='str', choices=['2M', '1G'], default='2M'),
            backing=dict(type='str', choices=['auto', 'hugetlbfs', 'tmpfs'], default='auto'),
            node=dict(type='int'),
            free_only=dict(type='bool', default=False),
            executable=EXECUTABLE_OPTION,
            log_level=dict(type='str', default='warn', choices=['silent', 'error', 'warn', 'info', 'debug']),
        ),
        required_if=[('state', 'present', ('instance', 'files')), ('state', 'absent', ('instance',))],
        supports_check_mode=True,
    )
    p = module.params
    if p['instance'] is not None and not re.match(NAME_RE, p['instance']):
        module.fail_json(msg="instance '%s': use [A-Za-z0-9._-]" % p['instance'], phase='input', reason='bad instance name')
    wanted = p['files'] or []
    for f in wanted:
        if not re.match(NAME_RE, f['role']):
            module.fail_json(msg="role '%s': use [A-Za-z0-9._-]" % f['role'], phase='input', reason='bad role name')
        if parse_size(f['size']) is None:
            module.fail_json(msg="size '%s' of %s: use a number of bytes with an optional K, M, G or T suffix, e.g. 64M" % (f['size'], f['role']), phase='input', reason='bad size')
    ziu = Ziu(module)

    if p['state'] == 'plan':
        sizes = p['sizes'] or [f['size'] for f in wanted]
        if not sizes:
            module.fail_json(msg='state=plan needs sizes (or files)', phase='input', reason='nothing to plan')
        plan = ziu.plan(sizes)
        facts = plan_facts(plan, p['page_size'])
        if plan.get('verdict') == 'does-not-fit':
            module.fail_json(msg='does not fit: %s' % short_reason(plan), phase='precheck', reason=short_reason(plan), changed=False, **facts)
        module.exit_json(changed=False, **facts)

    instance = p['instance']
    have = ziu.files(instance)
    by_role = dict((f.get('role'), f) for f in have)

    if p['state'] == 'absent':
        roles = set(f['role'] for f in wanted) if wanted else None
        gone = [f for f in have if roles is None or f.get('role') in roles]
        if not gone:
            module.exit_json(changed=False, files=have, removed=[])
        if not module.check_mode:
            targets = [instance] if roles is None else ['%s/%s' % (instance, f['role']) for f in gone]
            for t in targets:
                ziu.json(['memfile', 'remove', t], what='ziu memfile remove %s' % t)
            have = ziu.files(instance)
        else:
            have = [f for f in have if f not in gone]
        module.exit_json(changed=True, files=have, removed=[f.get('path') for f in gone])

    # present
    missing = []
    for f in wanted:
        cur = by_role.get(f['role'])
        if cur is None:
            missing.append(f)
            continue
        want = round_up(parse_size(f['size']), int(cur.get('page_size') or 4096))
        if int(cur.get('bytes') or 0) != want:
            module.fail_json(msg='%s/%s exists with %s bytes, not the %s asked (%s); a datapath may map it: remove it first (state=absent)'
                             % (instance, f['role'], cur.get('bytes'), want, f['size']), phase='memory', reason='size differs', files=have)
    if not missing:
        module.exit_json(changed=False, files=have, created=[])
    if module.check_mode:
        plan = ziu.plan([f['size'] for f in missing])
        facts = plan_facts(plan, p['page_size'])
        if plan.get('verdict') == 'does-not-fit':
            module.fail_json(msg='would not fit: %s' % short_reason(plan), phase='precheck', reason=short_reason(plan), **facts)
        module.exit_json(changed=True, files=have, created=[f['role'] for f in missing], **facts)
    for f in missing:
        name = '%s/%s' % (instance, f['role'])
        ziu.json(['memfile', 'create', name, '--size', f['size'], '--page-size', p['page_size'], '--backing', p['backing']], what='ziu memfile create %s' % name)
    module.exit_json(changed=True, files=ziu.files(instance), created=[f['role'] for f in missing])


if __name__ == '__main__':
    main()
