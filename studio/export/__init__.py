"""Export: merge an adapter into its base model, verify the result, package it for download.

``service`` is what the UI and the CLI call (no torch import: the UI process stays light); ``job``
is what a worker runs in a child process; ``merge``, ``verify``, ``card`` and ``package`` are the
steps of that job, each usable on its own.
"""
