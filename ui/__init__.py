"""Gradio UI: one module per tab (``ui/tabs``) composed by ``ui/app.py``.

Thin by rule: widgets -> typed spec -> a ``studio`` service call. No torch, no SQL, no file layout.
"""
