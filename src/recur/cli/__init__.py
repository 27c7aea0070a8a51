"""The command line: ``recur <command> ...`` (also ``python -m recur``).

:mod:`recur.cli.main` assembles the parser and runs a command. Each stage module
(``synthetic``, ``cohort``, ``convert``, ``preprocess``, ``models``, ``evaluate``, ``margin``,
``reporting``, ``deploy``) adds its commands with ``register(subparsers)``; ``common`` holds the
argument helpers they share.
"""
