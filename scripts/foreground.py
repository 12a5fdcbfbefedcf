"""Run a command as the terminal's foreground process group, then give the terminal back.

`make run` runs scripts/run-local.sh through this so that Ctrl-C reaches only the script, which
stops the servers and exits 0; otherwise make receives the SIGINT too and reports an error.
Without a terminal (CI, a pipe) the command just runs.
"""

import os
import signal
import subprocess
import sys


def main() -> int:
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
        previous = os.tcgetpgrp(tty)
    except OSError:  # no terminal: the command still handles an interrupt, not this wrapper
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return subprocess.call(
            sys.argv[1:], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
        )
    # A background process group may only take the terminal with SIGTTOU ignored.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command handles Ctrl-C
    child = subprocess.Popen(
        sys.argv[1:],
        process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        os.tcsetpgrp(tty, child.pid)
        return child.wait()
    finally:
        os.tcsetpgrp(tty, previous)
        os.close(tty)


if __name__ == "__main__":
    sys.exit(main())
