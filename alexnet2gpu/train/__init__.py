"""A training run: the settings table (config.py) and its checks (checks.py), the run's set-up step by step
(setup.py) and its loaders (loaders.py), the epochs (trainer.py), one step, epoch and evaluation (engine.py), the
paper's SGD and schedule (optim.py), the step as a CUDA graph (cuda_graphs.py), and what a run leaves behind: its
folder and lock (run_folder.py, runlock.py), metrics and pictures (report.py, plot.py), progress lines
(batch_log.py), RUN/train.log (run_log.py) and TensorBoard files (board.py)."""
