"""The exception for problems a user can fix: bad input, missing files, wrong options."""


class InputError(Exception):
    """A user-fixable problem, reported as one line (no traceback unless --debug).

    The message names the file or option and what is wrong with it.
    """
