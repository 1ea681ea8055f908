"""Errors and warnings raised by the data layer, so callers can catch them by type."""


class DataError(ValueError):
    """A dataset is misconfigured or its files cannot be used; the message is one line naming the cause."""


class UnreadableImagesWarning(UserWarning):
    """Files with image extensions were skipped: unreadable headers while scanning a folder (one warning for
    all), or pixel data that fails to decode when loaded (one warning per file)."""
