"""Triton kernels, imported on first use by the ops one level up: nothing outside this folder imports Triton."""
