"""User-facing errors: each carries one clear message naming the patient, file and problem."""


class RecurError(Exception):
    """Bad input or a refused operation. The CLI prints the message alone (no traceback)."""
