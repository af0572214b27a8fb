#!/usr/bin/python3
"""Installs a seccomp filter on the io_uring system calls, then execs a command under it (the filter is inherited).

Usage: seccomp-exec.py eperm|kill COMMAND [ARGS...]

  eperm  io_uring_setup, io_uring_enter and io_uring_register fail with EPERM, as under Docker's or containerd's
         default profile;
  kill   they kill the process (SIGSYS), as under hardened profiles.

Every other system call is allowed. Needs libseccomp's Python binding for Debian's /usr/bin/python3
(apt-get install python3-seccomp).
"""
import errno
import os
import sys

import seccomp

IO_URING = ("io_uring_setup", "io_uring_enter", "io_uring_register")


def main(argv):
    if len(argv) < 3 or argv[1] not in ("eperm", "kill"):
        sys.stderr.write(__doc__)
        return 2
    action = seccomp.ERRNO(errno.EPERM) if argv[1] == "eperm" else getattr(seccomp, "KILL_PROCESS", seccomp.KILL)
    seccomp_filter = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in IO_URING:
        seccomp_filter.add_rule(action, name)
    seccomp_filter.load()  # sets no_new_privs; kept across execve
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
