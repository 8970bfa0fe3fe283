"""The one exception family the command line turns into a one-line message."""


class UserError(Exception):
    """A problem the user can fix; its message is one line and names what is wrong."""
