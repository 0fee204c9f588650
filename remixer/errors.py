"""One family for every error a user can cause or fix: the CLI and the predictor catch `RemixerError`.

Each stage raises its own subclass (AudioError, RequestError, WeightsError,
CheckpointError, ChordError, GenerationError, MBDError, DownloadError), so a
message always says which part failed, and callers need to know one class.
"""


class RemixerError(ValueError):
    """A request or a setup the product cannot serve, explained for the user."""
