"""Runnable examples of errtrace (importable so that the tests run the same code)."""
