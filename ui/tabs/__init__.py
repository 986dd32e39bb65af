"""One module per tab; each has ``render(db)`` to build its widgets inside the current Blocks."""
