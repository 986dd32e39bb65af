"""Errors of the export service. Each message says what went wrong and what the user can do."""
from __future__ import annotations


class ExportError(Exception):
    """Base class: an export cannot be started, built or served."""


class ExportNotFoundError(ExportError, LookupError):
    """No export (or adapter, or run) with that id."""


class ExportNotReadyError(ExportError):
    """The export exists but is not finished, failed, or was not verified: nothing to download."""


class ExportPathRefusedError(ExportError, PermissionError):
    """The export row points outside its folder in the workspace (a tampered or corrupt row)."""


class ExportBusyError(ExportError):
    """The export is queued or running; cancel it before deleting it."""


class AdapterMissingError(ExportError, FileNotFoundError):
    """The adapter's folder is gone from the workspace (deleted by hand, or never written)."""


class VerificationFailedError(ExportError):
    """The merged model's outputs differ from the adapter-on-base outputs beyond the tolerance."""


class AdapterNotMergeableError(ExportError):
    """The adapter's PEFT type (prompt tuning, prefix tuning...) has no weights to merge."""
