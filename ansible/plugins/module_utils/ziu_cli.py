# -*- coding: utf-8 -*-
# Copyright: ziu maintainers
# Apache License 2.0 (see LICENSE in the ziu repository)
"""Running the ziu CLI from a module: argv, JSON results, sizes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import shlex

UNITS = {'': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}
SIZE_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$', re.IGNORECASE)

# The options every module that runs ziu takes.
EXECUTABLE_OPTION = dict(type='raw', default='ziu')


def executable_argv(module, executable):
    """The ziu command: a path, a command line ('node /opt/ziu/bin/ziu.js') or a list."""
    if isinstance(executable, list):
        argv = [str(a) for a in executable]
    else:
        argv = shlex.split(str(executable))
    if not argv:
        module.fail_json(msg='executable: empty; give the ziu command, e.g. ziu or /usr/local/bin/ziu', phase='input', reason='empty executable')
    if '/' not in argv[0]:
        found = module.get_bin_path(argv[0], required=False)
        if found is None:
            module.fail_json(msg="executable '%s' not found in PATH on this node: install ziu, or set executable" % argv[0], phase='input', reason='ziu not found')
        argv[0] = found
    return argv


def run_json(module, argv, ok_codes=(0,)):
    """Run ziu with --json; (rc, document or None, stdout, stderr). A non-JSON stdout is None."""
    rc, out, err = module.run_command(argv, check_rc=False, environ_update={'ZIU_LOG_LEVEL': module.params.get('log_level') or 'warn'})
    doc = None
    text = (out or '').strip()
    if text:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
    return rc, doc, out, err


def last_line(text):
    lines = [l for l in (text or '').strip().splitlines() if l.strip()]
    return lines[-1] if lines else ''


def parse_size(text):
    """Bytes of '64M', '1G', '1.5G' or '4096', as ziu reads them (binary units); None if it is not a size."""
    m = SIZE_RE.match(str(text).strip())
    if m is None:
        return None
    value = float(m.group(1)) * UNITS[m.group(2).lower()]
    if value <= 0 or value != int(value):
        return None
    return int(value)


def round_up(n, unit):
    return -(-n // unit) * unit


def command_line(new):
    """--new as ziu takes it: a string as given, a list joined with its spaces escaped (execa's rule)."""
    if isinstance(new, list):
        parts = []
        for a in new:
            a = str(a)
            if re.search(r'[\t\r\n]', a):
                raise ValueError("new: argument %r holds a tab or newline, which ziu's --new cannot carry" % a)
            parts.append(a.replace(' ', '\\ '))
        return ' '.join(parts)
    return str(new).strip()
