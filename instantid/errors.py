"""Exception types the pack raises; every message says what, where, and the fix."""

from __future__ import annotations


class InstantIDError(Exception):
    """Base class for errors a user can act on."""


class AdapterFileError(InstantIDError):
    """The InstantID adapter file is missing, unreadable, or not an InstantID adapter."""


class ModelMismatchError(InstantIDError):
    """The model being patched is not the kind of model the adapter was made for."""


class ControlNetMismatchError(InstantIDError):
    """The ControlNet given as IdentityNet cannot take the face tokens."""


class BatchMismatchError(InstantIDError):
    """Batch sizes of faces, masks and latents cannot be matched."""
