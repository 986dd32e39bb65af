"""Command-line subcommands: each module here has ``register(subparsers)``."""
