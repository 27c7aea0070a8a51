"""The command line: ``recur <command> ...`` (also ``python -m recur``)."""
