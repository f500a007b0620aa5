"""Shared plumbing for the method scripts: models, data loaders, distributed/precision/checkpoint helpers."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing path, mismatched teacher): reported as one line."""
