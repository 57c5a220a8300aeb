"""Errors raised by models, checkpoints and the encoder catalogue.

Each is an :class:`~napari_emseg.errors.EmsegError` whose message names the input at fault and
says what to do, so front ends can show it as it is.
"""

from __future__ import annotations

from ..errors import EmsegError


class ModelError(EmsegError):
    """Base class of the errors in :mod:`napari_emseg.models`."""


class InputShapeError(ModelError, ValueError):
    """A tensor given to a network has the wrong rank, channel count or spatial size."""


class CheckpointError(ModelError):
    """Base class of checkpoint problems."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


class CorruptCheckpointError(CheckpointError):
    """The file is damaged (truncated, bad header, weights that do not fit their config)."""


class NotACheckpointError(CheckpointError):
    """A readable weights file, but not a self-describing napari-emseg checkpoint."""


class TaskMismatchError(CheckpointError):
    """The checkpoint was trained for another task than the one asked for."""


class ChannelMismatchError(CheckpointError):
    """The checkpoint expects another number of input channels than the data or model has."""


class TransplantError(ModelError):
    """Encoder weights do not fit the model they are loaded into."""


class UnknownEncoderError(ModelError, KeyError):
    """No catalogue entry and no file of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DownloadError(ModelError):
    """A catalogue download failed or its checksum did not match."""
