"""Benchmarks of the layouts and their alternatives (bench.py is the command line).

measure: the timed steps and counts; variants: single-process rows; processes: two-process rows;
runner: runs rows into records; report: table, speed goals, JSON, plot.
"""
from .measure import make_infer_step, make_train_step, train_step

__all__ = ["make_infer_step", "make_train_step", "train_step"]
