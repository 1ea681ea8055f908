"""Errors and warnings raised by the data layer, so callers can catch them by type."""


class DataError(ValueError):
    """A dataset is misconfigured or its files cannot be used; the message is one line naming the cause."""


class UnreadableImagesWarning(UserWarning):
    """Files with image extensions that could not be opened were skipped while scanning a folder."""
