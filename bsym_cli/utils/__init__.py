"""Errors with their exit codes, and logging."""
