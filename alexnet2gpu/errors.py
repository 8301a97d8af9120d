"""The errors a user sees: one sentence naming the thing and the fix, printed without a traceback."""


class TrainError(Exception):
    """A mistake in the input or an event that must stop training; str() is the whole message (train.py prints
    it as `train.py: error: ...` and exits 1)."""


class PrepareError(Exception):
    """A mistake in what `python -m alexnet2gpu.prepare` was given; prints as `prepare: error: ...`, exit 2."""

    exit_code = 2


class PrepareFailed(PrepareError):
    """Something broke mid-run (a full disk): finished outputs are kept and a rerun continues; exit 1."""

    exit_code = 1
