"""RUN/train.log: what train.py prints, from the config banner on, without the progress bar's redraws; appended
to on resume, flushed line by line, written by the main rank alone."""
import io
import sys

import pytest
import torch

from alexnet2gpu.train import engine
from alexnet2gpu.train.batch_log import StepLog
from alexnet2gpu.train.run_log import LOG, attach, capture, file_writer
from tests.helpers.runs import TINY, read_metrics, run_main


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_log_holds_the_lines_a_terminal_shows_and_what_came_before_the_folder(tmp_path, monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    with capture():
        print("config:\n  epochs 2")  # before the run folder is known: held
        sys.stdout.write("\repoch 1/2 [##....] 1/4 ETA 00:03\x1b[K")  # the progress bar's redraws
        sys.stdout.write("\repoch 1/2 [####..] 2/4 ETA 00:02\x1b[K")
        attach(tmp_path, resumed=False)
        sys.stdout.write("\r\x1b[K12:00:00 step 2 | epoch 1/2 50 %\n")  # a batch-job line over the bar
        sys.stdout.write("\repoch 1/2 [######] 4/4 ETA 00:00\x1b[K")
        print("skipped unreadable image a.jpg", file=sys.stderr)  # printed over the bar, not cleared
        sys.stdout.write("\r\x1b[K")  # the bar closed
        print("epoch 1/2 | train loss 2.302")
        assert (tmp_path / LOG).read_text() == ("config:\n  epochs 2\n12:00:00 step 2 | epoch 1/2 50 %\n"
                                                "skipped unreadable image a.jpg\nepoch 1/2 | train loss 2.302\n")
    assert sys.stdout is screen and "[####..] 2/4" in screen.getvalue()  # the terminal got every byte


def test_a_resumed_run_appends_after_a_separator_and_a_crash_leaves_its_traceback(tmp_path):
    with capture():
        print("epoch 1/2")
        attach(tmp_path, resumed=False)
    with pytest.raises(RuntimeError, match="a bug"):
        with capture():
            print("resuming from epoch_0001.pt")
            attach(tmp_path, resumed=True)
            print("epoch 2/2")
            assert (tmp_path / LOG).read_text().endswith("epoch 2/2\n")  # flushed as printed, not at the end
            raise RuntimeError("a bug")
    lines = (tmp_path / LOG).read_text().splitlines()
    assert lines[0] == "epoch 1/2" and lines[1].startswith("----- ") and lines[1].endswith(": resumed -----")
    assert lines[2:4] == ["resuming from epoch_0001.pt", "epoch 2/2"]
    assert lines[4] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: a bug"


def test_without_a_run_folder_nothing_is_written_and_progress_lines_reach_the_log_on_a_terminal(tmp_path):
    with capture():
        print("evaluating best.pt")  # --evaluate: no run folder, nothing kept
        assert file_writer() is None
    assert not list(tmp_path.iterdir())
    screen = Terminal()
    with capture():
        attach(tmp_path, resumed=False)
        log = StepLog(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), torch.device("cpu"),
                      lines=False, stream=screen, file=file_writer())  # a terminal without --log-every
        log.begin(1, 2, 10)
        assert log.due(1, log.last[0] + 31)  # about every 30 s, for the log alone
        log.record(1, 2.5, 5, 0.0, log.last[0] + 31)
    assert screen.getvalue() == "" and "step 1 | epoch 1/2 50 % (5/10) | loss 2.5000" in (tmp_path / LOG).read_text()


def test_the_log_of_a_forked_process_is_its_parents(tmp_path):
    """A loader worker inherits the streams; it never writes the log (the main process alone does)."""
    import os
    with capture() as log:
        attach(tmp_path, resumed=False)
        log.pid = os.getpid() + 1  # as seen from a child
        print("from a worker")
        log.pid = os.getpid()
        print("from the run")
    assert (tmp_path / LOG).read_text() == "from the run\n"


@pytest.mark.slow
def test_a_tiny_runs_log_holds_what_it_printed_and_a_resume_appends(tmp_path, tiny, capsys, monkeypatch):
    """The banner, every epoch line and the last line; a --max-steps stop's bar counts to that step."""
    totals = []
    real = engine.Progress

    def recorded(total, desc, **kw):
        totals.append((desc, total))
        return real(total, desc, **kw)

    monkeypatch.setattr(engine, "Progress", recorded)
    run = tmp_path / "runs" / "r"
    args = ["--data", tiny, "--out", tmp_path / "runs", "--run-name", "r"] + TINY
    code, first, err = run_main(args + ["--epochs", "2", "--max-steps", "1"], capsys)
    assert code == 0, err
    # 4 training images, batch 2: the run stops after 1 step, 2 images in
    assert totals[0] == ("epoch 1/2 to --max-steps (step 1)", 2)
    log = (run / LOG).read_text()
    assert log == first and "config:\n  data " in log and "\nrun folder " in log  # the banner
    assert [line for line in log.splitlines() if line.startswith("epoch 1/2 | ")]
    assert log.splitlines()[-1].startswith("stopped by --max-steps 1 at step 1")

    totals.clear()
    code, second, err = run_main(["--resume", run, "--epochs", "2"], capsys)
    assert code == 0, err
    assert totals[0] == ("epoch 2/2", 4)  # no --max-steps: the whole epoch
    log = (run / LOG).read_text()
    assert log.startswith(first) and log.endswith(second)
    separator = log[len(first):-len(second)]
    assert separator.startswith("----- ") and separator.endswith(": resumed -----\n"), separator
    assert second.startswith("resuming from ") and "\nepoch 2/2 | " in second
    assert second.splitlines()[-1].startswith("done: best val top-1 error")
    assert len(read_metrics(run)) == 2
