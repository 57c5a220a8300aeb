"""Errors whose message is meant for the user.

Front ends show an :class:`EmsegError`'s message as it is (CLI: one line on stderr and exit
status 2; napari: a notification), without a traceback: the message itself says what is wrong
and what to do. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EmsegError(Exception):
    """Base class of errors caused by the user's input (files, labels, checkpoints, settings)."""
