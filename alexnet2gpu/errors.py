"""The one error class a user sees: a sentence naming the thing and the fix (train.py prints it, exits 1)."""


class TrainError(Exception):
    """A mistake in the input or an event that must stop training; str() is the whole message."""
