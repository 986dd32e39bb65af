"""Finetune Studio domain layer: datasets, models, methods, estimate, training, inference, export.

Usable without Gradio (see ``python -m studio``). Nothing here imports ``ui``.
"""
