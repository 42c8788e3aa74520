#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The management check of seed 003, run inside L2 by tooling/kernel-tests.sh.

    mgmt-check.py SRC COMPAT INCOMPAT [--errno NAME] [--malformed-errno NAME]

Reads the source instance's migration_version from sysfs (device node and
mdev type node), writes it to a compatible and to an incompatible target
(device node and type node) and expects success and a refusal with the
driver's errno (--errno, default EINVAL); ill-formed strings are refused
too (with --malformed-errno when given), and no refusal changes the
target's own string.  Prints
"PASS  name" / "FAIL  name" lines; exits 1 on any failure.
"""
import errno
import os
import sys

failures = 0


def result(name, problems):
    global failures
    if problems:
        failures += 1
        print('FAIL  kernel: %s' % name)
        for p in problems:
            print('      %s' % p)
    else:
        print('PASS  kernel: %s' % name)
    sys.stdout.flush()


def dev_attr(uuid):
    return '/sys/bus/mdev/devices/%s/migration_version' % uuid


def type_attr(uuid):
    return '/sys/bus/mdev/devices/%s/mdev_type/migration_version' % uuid


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def write(path, data):
    """0 on success, else the errno of the write."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno
    try:
        n = os.write(fd, data)
        if n != len(data):
            return -1
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def ename(e):
    if e == 0:
        return 'success'
    if e < 0:
        return 'a short write'
    return errno.errorcode.get(e, str(e))


def main():
    args = sys.argv[1:]
    want = 'EINVAL'
    want_bad = None
    if '--errno' in args:
        i = args.index('--errno')
        want = args[i + 1]
        del args[i:i + 2]
    if '--malformed-errno' in args:
        i = args.index('--malformed-errno')
        want_bad = args[i + 1]
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit('usage: mgmt-check.py SRC COMPAT INCOMPAT [--errno NAME]')
    src, compat, incompat = args
    want_e = getattr(errno, want)

    # 1. the strings
    p = []
    strings = {}
    for name, path in (('source device', dev_attr(src)),
                       ('source type', type_attr(src)),
                       ('compatible target', dev_attr(compat)),
                       ('incompatible target', dev_attr(incompat))):
        try:
            s = read(path)
        except OSError as e:
            p.append('%s: %s' % (path, e.strerror))
            continue
        strings[name] = s
        body = s[:-1] if s.endswith(b'\n') else s
        if not body or len(body) >= 4096:
            p.append('%s (%s): length %d, want 1..4095' % (name, path, len(body)))
        elif not all(0x20 <= c < 0x7f for c in body):
            p.append('%s (%s): not printable ASCII: %r' % (name, path, body))
    if 'source device' in strings and 'source type' in strings and \
       strings['source device'] != strings['source type']:
        p.append('the device node says %r, its type node %r' %
                 (strings['source device'], strings['source type']))
    result('seed 003: migration_version readable on device and type nodes', p)
    if 'source device' not in strings:
        return
    s = strings['source device']
    body = s[:-1] if s.endswith(b'\n') else s

    # 2. compatible target: device node and type node
    p = []
    for path in (dev_attr(compat), type_attr(compat)):
        for data in (body, body + b'\n'):
            e = write(path, data)
            if e:
                p.append('writing %r to %s: %s' % (data, path, ename(e)))
    result('seed 003: the source string written to a compatible target succeeds', p)

    # 3. incompatible target: refused with the driver's errno
    p = []
    for path in (dev_attr(incompat), type_attr(incompat)):
        e = write(path, body + b'\n')
        if e != want_e:
            p.append('writing the source string %r to %s: %s, want %s' %
                     (body, path, ename(e), want))
    after = read(dev_attr(incompat)) if os.path.exists(dev_attr(incompat)) else None
    if after != strings.get('incompatible target'):
        p.append('the incompatible target string changed: %r -> %r' %
                 (strings.get('incompatible target'), after))
    result('seed 003: the source string written to an incompatible target is '
           'refused with %s' % want, p)

    # 4. ill-formed strings are refused, the target unchanged
    p = []
    # (a zero-length write never reaches the driver: sysfs returns 0)
    bad = [b'\n', b'\n\n', body + b'\n\n', body + b'x',
           body[:len(body) // 2], b'a' * 4096, body + b'\x01', b'\x00' + body,
           body.replace(b'-', b' ', 1)]
    for data in bad:
        if data == body:
            continue
        e = write(dev_attr(compat), data)
        if e == 0:
            p.append('%r was accepted by %s' % (data[:64], dev_attr(compat)))
        elif want_bad and e != getattr(errno, want_bad):
            p.append('%r written to %s: %s, want %s' %
                     (data[:64], dev_attr(compat), ename(e), want_bad))
    if read(dev_attr(compat)) != strings.get('compatible target'):
        p.append('the target string changed')
    result('seed 003: ill-formed migration_version strings are refused%s' %
           (' with ' + want_bad if want_bad else ''), p)


main()
sys.exit(1 if failures else 0)
