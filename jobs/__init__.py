"""Durable job queue on the database, the worker loop, and the child-process runner."""
