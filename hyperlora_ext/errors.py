"""Exception types. Every message says what was wrong, where, and what to do about it."""


class HyperLoRAError(Exception):
    """Base class for all errors this extension raises on purpose."""


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
