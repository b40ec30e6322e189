"""Exception types. Every message says what was wrong, where, and what to do about it.

Every error may name the request field it is about (``field``): the HTTP API answers with it,
and :func:`about` sets it where the caller knows the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class HyperLoRAError(Exception):
    """Base class for all errors this extension raises on purpose."""

    field: str | None = None  # the request field at fault, when known


class CheckpointError(HyperLoRAError):
    """A model file is missing, unreadable, or does not match the expected layout."""


class ImageError(HyperLoRAError):
    """A reference photo could not be decoded or is unusable."""


class ImageTooLargeError(ImageError):
    """A photo is over a size limit."""


class NoFaceError(HyperLoRAError):
    """No usable face was found in a reference photo."""


class ModelNotFoundError(HyperLoRAError):
    """A named model is not installed where it is looked for."""


class InvalidNameError(HyperLoRAError):
    """A model or file name would leave its root folder, or is otherwise not a plain name."""


class ArgumentError(HyperLoRAError):
    """An argument is unknown, of the wrong type, or out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"HyperLoRA argument '{field}': {message}")
        self.field = field


class FileExistsRefusedError(HyperLoRAError):
    """The target exists and overwriting was not requested."""


class ExportExistsError(FileExistsRefusedError):
    """The export target exists and overwriting was not requested."""


class IdentityNotFoundError(HyperLoRAError):
    """No saved identity of that name exists."""


class NoTokensError(HyperLoRAError):
    """A saved identity has no (matching) tokens file, so it cannot take part in a mix."""


class NoReferenceError(HyperLoRAError):
    """A saved identity has no likeness reference to score images against."""


class UnsupportedForgeError(HyperLoRAError):
    """The running Forge variant lacks the patcher interface this adapter needs."""


class EncodingStopped(HyperLoRAError):
    """The user stopped the job while the photos were being encoded."""


class UnexpectedError(HyperLoRAError):
    """An exception HyperLoRA did not raise on purpose, with what it was doing at the time."""


@contextmanager
def about(field: str, *kinds: type[HyperLoRAError]) -> Iterator[None]:
    """Errors of ``kinds`` (default: every HyperLoRAError) raised inside are about the request
    field ``field``, unless they already name one."""
    caught = kinds or (HyperLoRAError,)
    try:
        yield
    except caught as error:
        if error.field is None:
            error.field = field
        raise
