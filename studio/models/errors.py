"""Errors of the model registry. Each message says what went wrong and what the user can do."""
from __future__ import annotations


class ModelError(Exception):
    """Base class: a model reference cannot be inspected, prepared or loaded."""


class UnknownModelRefError(ModelError, ValueError):
    """The reference is neither a built-in name, an existing folder, nor a Hub id."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model does not exist where the reference points (folder, Hub repo, Hub cache)."""


class HubUnreachableError(ModelNotFoundError):
    """A Hub id is not in the local Hugging Face cache and the Hub cannot be reached."""

    def __init__(self, repo_id: str, cause: BaseException | None = None):
        hint = ("HF_HUB_OFFLINE is set; unset it to download" if _offline() else "check the network, or "
                "download it on a machine with access and copy its Hugging Face cache (~/.cache/huggingface)")
        super().__init__(f"model {repo_id} not found locally and the Hub is unreachable ({hint}).")
        self.repo_id = repo_id
        self.__cause__ = cause


class InvalidModelFolderError(ModelError, ValueError):
    """A local folder is missing files that loading needs."""


class UnsupportedModelError(ModelError, ValueError):
    """The model exists but is not something the studio can fine-tune (e.g. an encoder-only model)."""


class RemoteCodeRequiredError(ModelError, PermissionError):
    """The model ships its own Python code; running it needs an explicit, per-model opt-in."""

    def __init__(self, ref: str, model_type: str | None):
        super().__init__(
            f"model {ref} (model_type {model_type!r}) needs custom code from its repository, which "
            "transformers does not ship. That code runs with your permissions: enable "
            "'trust remote code' for this model only if you trust its authors.")
        self.ref = ref


class MissingPackageError(ModelError, ImportError):
    """A Python package that a built-in model comes from is not installed."""

    def __init__(self, package: str, needed_for: str, install: str, detail: str | None = None):
        msg = f"{needed_for} need(s) the Python package {package!r}. Install it with: {install}"
        super().__init__(msg + (f" ({detail})" if detail else ""))
        self.package = package
        self.install = install


def _offline() -> bool:
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub is a hard dependency of transformers
        return False
