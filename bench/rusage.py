"""Run a command and write its peak RSS (KiB) and CPU seconds to a file: `python -S rusage.py OUT cmd...`.

Why a launcher: Linux keeps a process's peak RSS across fork and exec. A worker forked straight from
the bench process reports at least the bench's own RSS at that moment (a bench that has just seeded a
million rows holds about 150 MB), not what the worker itself used. Started with `-S` this launcher is
a few MB, so the peak that `wait4` gives for its child is the worker's own.
"""

import os
import sys


def main() -> None:
    out, command = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    with open(out, "w") as f:
        f.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}\n")
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
