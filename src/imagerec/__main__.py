import signal
import sys

from imagerec.procs import exit_status_kept

try:  # Ctrl-C while the CLI is still importing: a clean exit, not a traceback
    from imagerec.cli import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted before any work was done.\n")
    exit_status_kept()
    sys.exit(130)

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before any work was done.\n")
        sys.exit(130)
    finally:  # only shutdown is left: a late Ctrl-C must not turn the exit status into a kill by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        exit_status_kept()
