"""The exception for problems a user can fix: bad input, missing files, wrong options."""


class InputError(Exception):
    """A user-fixable problem, reported as one line (no traceback unless --debug).

    The message names the file or option and what is wrong with it.
    """


class Stopped(KeyboardInterrupt):
    """SIGTERM (scancel, a Slurm time limit, kill): the command stops as on Ctrl-C, keeping every
    finished file; a rerun does the rest."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Stopped` in this (main) thread."""
    import signal

    def handler(signum, frame):
        raise Stopped(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class interrupts_ignored:
    """While finishing the work in hand after a stop: a second Ctrl-C or SIGTERM (Slurm signals
    every process of a job, and process.sh forwards its own) must not cut that short."""

    def __enter__(self):
        import signal

        self._saved = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._saved[signum] = signal.signal(signum, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to mask
            pass
        return self

    def __exit__(self, *exc):
        import signal

        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
