"""Chat testing: a base model and up to three adapters side by side, served by the worker.

- ``service``: what the UI and CLI call (create_chat, send_message, poll, stop, comparisons). No torch.
- ``jobs``: the worker's job handlers and the worker-owned engine.
- ``engine``: ``ChatEngine``, one base model in memory with adapters switched on and off.

Importing this package imports nothing heavy; import the submodule you need.
"""
