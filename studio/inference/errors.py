"""Errors of chat testing. Each message is meant for the person at the screen: what is wrong, and
what to do about it."""
from __future__ import annotations


class ChatError(ValueError):
    """A request the service refuses before anything is queued (unknown chat, bad image file, ...)."""


class ChatBusyError(ChatError):
    """The chat still has a message being answered; a second one would interleave the histories."""


class PaneError(Exception):
    """This pane cannot answer this message (adapter for another base, missing adapter folder, image
    on a text model, prompt longer than the model's context). Shown in the pane; the engine and the
    other panes carry on."""


class BaseModelError(Exception):
    """The base model itself could not be prepared or loaded: no pane can answer."""
