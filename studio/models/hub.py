"""Models from the Hugging Face Hub: config look-up and download, with readable errors.

Inspecting reads ``config.json`` from the local Hugging Face cache first (instant, and works offline)
and asks the Hub only when it is not cached: the UI inspects models while a user types, and an
unreachable Hub costs ~20 s of retries. Preparing downloads with ``snapshot_download``, which itself
falls back to the cached snapshot when the Hub is unreachable.

Only safetensors weights are fetched: pickled ``*.bin`` checkpoints can run code when loaded.
Python files are fetched only when the user opted in to the model's remote code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .errors import HubUnreachableError, ModelError, ModelNotFoundError

Progress = Callable[[float, str], None]

WEIGHT_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
METADATA_PATTERNS = ["*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt"]  # configs, tokenizer, processor
CODE_PATTERNS = ["*.py"]


def split_revision(repo: str) -> tuple[str, str | None]:
    """``org/name@rev`` -> (``org/name``, ``rev``)."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def fetch_config(repo: str) -> dict:
    """config.json of a Hub model, from the cache if there, else from the Hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, revision = split_revision(repo)
    try:
        path = hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        path = _hub_call(repo, lambda: hf_hub_download(repo_id, "config.json", revision=revision))
    return json.loads(Path(path).read_text(encoding="utf-8"))


def download(repo: str, *, trust_remote_code: bool, progress: Progress) -> Path:
    """Snapshot of config, tokenizer/processor files and safetensors weights; returns its folder."""
    from huggingface_hub import snapshot_download

    repo_id, revision = split_revision(repo)
    patterns = METADATA_PATTERNS + WEIGHT_PATTERNS + (CODE_PATTERNS if trust_remote_code else [])
    progress(0.0, f"downloading {repo} from the Hugging Face Hub (or reusing the local cache)")
    folder = Path(_hub_call(repo, lambda: snapshot_download(repo_id, revision=revision, allow_patterns=patterns)))
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"{repo} has no safetensors weights. The studio does not load pickled PyTorch .bin checkpoints "
            "(loading them can run code); choose a repository that ships *.safetensors, or convert it "
            "with the safetensors conversion tool.")
    return folder


def _hub_call(repo: str, call):
    """Run a huggingface_hub call, turning its exceptions into messages a user can act on."""
    from huggingface_hub import errors as hf

    try:
        return call()
    except hf.GatedRepoError as e:
        raise ModelNotFoundError(f"{repo} is gated: accept its terms on https://huggingface.co/{repo} and log in "
                                 "with `hf auth login` (or set HF_TOKEN).") from e
    except hf.RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"no model {repo} on the Hugging Face Hub (check the spelling; a private "
                                 "repository needs `hf auth login` or HF_TOKEN).") from e
    except hf.RevisionNotFoundError as e:
        raise ModelNotFoundError(f"{repo}: no such revision on the Hub.") from e
    except hf.RemoteEntryNotFoundError as e:
        raise ModelNotFoundError(f"{repo} has no config.json: it is not a transformers model.") from e
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, ConnectionError, TimeoutError) as e:
        raise HubUnreachableError(repo, e) from e
    except hf.HfHubHTTPError as e:
        raise ModelError(f"the Hugging Face Hub answered with an error for {repo}: {e}") from e
    except Exception as e:
        if _is_network_error(e):
            raise HubUnreachableError(repo, e) from e
        raise


def _is_network_error(exc: BaseException) -> bool:
    try:
        import httpx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, httpx.TransportError)
