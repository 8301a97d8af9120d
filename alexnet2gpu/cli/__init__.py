"""The command lines: train.py and bench.py at the repository root run `cli.train.main` and `cli.bench.main`."""
