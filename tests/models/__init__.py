"""Tests of studio.models: built-in offline models, Hub ids, local folders."""
