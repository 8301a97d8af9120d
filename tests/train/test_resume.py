"""Resuming: what a resume takes from the checkpoint and what from the command line, where it writes, and
the commands train.py's messages advise, each run as printed."""
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from alexnet2gpu.cli import train
from alexnet2gpu.data.synthetic import ensure_synthetic
from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers.runs import TINY, read_metrics, run_main


@pytest.fixture(scope="module")
def trained(module_tmp, tiny):
    """A run folder after one epoch of one step, at lr 0.01 and batch 2 (tests take copies: `copy_run`)."""
    out = module_tmp("trained")
    code = train.main([str(a) for a in ["--data", tiny, "--out", out, "--run-name", "r", "--epochs", "1",
                                        "--max-steps", "1"] + TINY])
    assert code == 0
    return out / "r"


def copy_run(run: Path, dst: Path) -> Path:
    """A copy of a run folder made of hard links (a resume replaces files, never writes into them)."""
    shutil.copytree(run, dst, copy_function=os.link, ignore=shutil.ignore_patterns("run.lock"))
    return dst


def advised(text: str, after: str) -> list[str]:
    """The arguments of the `python train.py ...` command a message gives after `after`."""
    line = next(l for l in text.splitlines() if after in l)
    words = shlex.split(line.split(after, 1)[1].strip().rstrip("."))
    assert words[:2] == ["python", "train.py"], line
    return words[2:]


@pytest.mark.slow
def test_max_steps_limits_one_invocation_and_a_resume_without_it_trains_on(tmp_path, tiny, capsys):
    """--max-steps is this invocation's limit (2 steps an epoch here): a resume without it trains to --epochs,
    one with it takes that many more steps, and a finished run says there is nothing to train."""
    run = tmp_path / "runs" / "r"
    code, out, err = run_main(["--data", tiny, "--out", tmp_path / "runs", "--run-name", "r", "--epochs", "2",
                               "--max-steps", "1"] + TINY, capsys)
    assert code == 0, err
    assert "stopped by --max-steps 1 at step 1, after epoch 1 of 2" in out and "done:" not in out
    code, out, err = run_main(advised(out, "continue with:"), capsys)  # the advised command, as printed
    assert code == 0, err
    assert [r["steps"] for r in read_metrics(run)] == ["1", "3"] and "done: best val top-1 error" in out
    code, out, err = run_main(["--resume", run, "--epochs", "4", "--max-steps", "1"], capsys)
    assert code == 0, err
    assert [r["steps"] for r in read_metrics(run)] == ["1", "3", "4"] and "stopped by --max-steps 1 at step 4" in out
    assert load_checkpoint(run)["step"] == 4
    code, out, err = run_main(["--resume", run, "--epochs", "3"], capsys)
    assert code == 0 and f"nothing to train: {run} has done 3 epoch(s) and --epochs is 3" in out, out + err
    assert len(read_metrics(run)) == 3


def files_under(folder: Path) -> dict:
    """Each file's content, or for a checkpoint its size and modification time."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.suffix != ".pt" else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_checkpoint_outside_a_run_folder_continues_in_a_new_one(trained, tmp_path, capsys):
    """A checkpoint copied to work/models/best.pt, or into a checkpoints/ folder beside another program's
    config.json, is not in a run folder: its surroundings are never written (work/'s own metrics.csv and
    config.json stay as they were); the run goes on in a new run folder under --out, and the banner says so."""
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    os.link(trained / "checkpoints" / "best.pt", work / "models" / "best.pt")
    (work / "metrics.csv").write_text("the user's own table\n")
    (work / "config.json").write_text(json.dumps({"model_type": "something else"}))
    (work / "checkpoints").mkdir()
    os.link(trained / "checkpoints" / "best.pt", work / "checkpoints" / "epoch_0001.pt")
    before = files_under(work)
    runs = tmp_path / "runs"
    for n, source in enumerate((work / "models" / "best.pt", work / "checkpoints" / "epoch_0001.pt"), 1):
        code, out, err = run_main(["--resume", source, "--out", runs, "--epochs", "2"], capsys)
        assert code == 0, err
        assert files_under(work) == before
        new = sorted(runs.iterdir())
        assert len(new) == n and new[-1].name.startswith("run-")
        assert f"run folder {new[-1]}: a new one, since {source} is not in a run folder" in out, out
        assert [r["epoch"] for r in read_metrics(new[-1])] == ["1", "2"]
        assert load_checkpoint(new[-1])["epoch"] == 2
    # a run folder's checkpoint (here given as the folder) continues in its folder
    run = copy_run(trained, tmp_path / "runs2" / "r")
    code, out, err = run_main(["--resume", run / "checkpoints", "--epochs", "2"], capsys)
    assert code == 0 and f"run folder {run}\n" in out, err
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"] and sorted(os.listdir(run.parent)) == ["r"]


def test_every_setting_is_honoured_on_resume_or_refused_with_a_reason():
    """No flag given on resume is dropped silently: each setting is one a resume honours, each invocation's
    own, checked where it is used, or refused with a reason."""
    from dataclasses import fields

    from alexnet2gpu.train.config import AFRESH, RESUMABLE, Config
    from alexnet2gpu.train.resume import CHECKED_ELSEWHERE
    silent = [f.name for f in fields(Config) if f.name not in RESUMABLE + AFRESH + CHECKED_ELSEWHERE
              and not f.metadata["fixed"]]
    assert silent == []
    assert {"lr", "batch_size", "momentum", "weight_decay", "dropout"} <= set(RESUMABLE)
    assert "max_steps" in AFRESH and "max_steps" in RESUMABLE


@pytest.mark.slow
def test_a_resume_refuses_what_it_cannot_change_in_one_sentence(trained, tmp_path, capsys):
    """Each setting fixed by the checkpoint is refused by name, with the reason and what to do; repeating the
    checkpoint's value is no change (a restarted command line resumes as it is)."""
    from alexnet2gpu.train.resume import resume_changes
    run = copy_run(trained, tmp_path / "r")
    best, before = run / "checkpoints" / "best.pt", files_under(run)
    for args, message in ((["--num-classes", "5"], re.escape("--num-classes 5 cannot change on resume (the "
                                                             "checkpoint's run has 2): the network's fc8") +
                           f".* --init-from {best}"),
                          (["--in-channels", "1"], "--in-channels 1 cannot change on resume.*conv1"),
                          (["--seed", "3"], "--seed 3 cannot change .*data order"),
                          (["--init", "caffe"], "--init caffe cannot change .*the checkpoint's run has paper"),
                          (["--schedule", "step", "--lr-steps", "3"], "--schedule step cannot change .*schedule"),
                          (["--patience", "2"], "--patience 2 cannot change .*schedule"),
                          (["--crop", "227"], "--crop 227 cannot change .*crops of that size"),
                          (["--mean", "1,2,3"], "--mean 1.0,2.0,3.0 cannot change .*keeps the mean"),
                          (["--train-per-class", "3"], "--train-per-class 3 cannot change .*built-in set"),
                          (["--run-name", "other"], f"--run-name other cannot change on resume: the run goes on in "
                                                    f"its folder {run}")):
        code, out, err = run_main(["--resume", best, "--epochs", "2", "--lr", "0.5"] + args, capsys)
        assert code == 1 and err.count("\n") == 1 and err.startswith("train.py: error: "), (args, err)
        assert re.search(message, err), (args, err)
    assert files_under(run) == before  # nothing written, not even the lock file
    state = load_checkpoint(best)
    same = dict(seed=0, init="paper", num_classes=2, run_name="r", lr=0.01, batch_size=2, resume=str(best))
    assert resume_changes(state, same, run) == []
    assert resume_changes(state, dict(same, lr=0.5), run) == [("lr", 0.01, 0.5)]


@pytest.mark.slow
def test_a_resume_honours_lr_and_batch_size_and_says_so(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "r")
    code, out, err = run_main(["--resume", run, "--epochs", "2", "--lr", "0.5", "--batch-size", "4"], capsys)
    assert code == 0, err
    assert "lr 0.5 from --lr 0.5 given on resume (the checkpoint's lr was 0.01)" in out and "as given" not in out
    assert "effective batch 4 (4 per tower pair x 1)" in out
    assert ("resumed with: --epochs 2 (the checkpoint's run: 1), --batch-size 4 (the checkpoint's run: 2), "
            "--lr 0.5 (the checkpoint's run: 0.01)") in out
    rows = read_metrics(run)
    assert [(r["lr"], r["steps"]) for r in rows] == [("0.01", "1"), ("0.5", "2")]  # 4 images: one step of 4
    state = load_checkpoint(run)
    assert (state["config"]["lr"], state["config"]["batch_size"]) == (0.5, 4)


@pytest.mark.slow
def test_following_the_advice_after_a_nan_loss_goes_on(trained, tiny, tmp_path, capsys, monkeypatch):
    """The run diverges at the lr it was resumed with; the error gives the command that goes on from the last
    good checkpoint at a lower lr, and that command, run as printed, trains at that lr. Divergence here: any
    step taken at an lr above 0.1 has a NaN loss."""
    from alexnet2gpu.train import engine
    real = engine.train_step

    def diverging(model, optimizer, images, *a, **k):
        return real(model, optimizer, images * (float("nan") if optimizer.param_groups[0]["lr"] > 0.1 else 1.0),
                    *a, **k)

    monkeypatch.setattr(engine, "train_step", diverging)
    run = copy_run(trained, tmp_path / "runs" / "r")
    code, out, err = run_main(["--resume", run, "--epochs", "3", "--lr", "1", "--workers", "0"], capsys)
    assert code == 1 and "the training loss became nan at step 2" in err, err
    kept = run / "checkpoints" / "epoch_0001.pt"
    assert f"the last good checkpoint, {kept}, is kept: continue from it at a lower lr with: " in err
    args = advised(err, "at a lower lr with:")
    assert args == ["--resume", str(kept), "--out", str(run.parent), "--epochs", "3", "--lr", "0.1", "--workers", "0"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    assert [r["lr"] for r in read_metrics(run)] == ["0.01", "0.1", "0.1"]
    # before any checkpoint: the advice is the same command at a lower lr
    fresh = ["--data", tiny, "--out", tmp_path / "runs", "--run-name", "new", "--epochs", "1", "--lr", "0.5"] + TINY
    code, out, err = run_main(fresh, capsys)
    assert code == 1 and "no epoch had finished, so there is no checkpoint: start again at a lower lr with:" in err
    code, out, err = run_main(advised(err, "at a lower lr with:"), capsys)
    assert code == 0, err
    assert [r["lr"] for r in read_metrics(tmp_path / "runs" / "new")] == ["0.05"]


@pytest.mark.slow
def test_evaluate_and_resume_on_other_classes_advise_what_works(trained, tmp_path, capsys):
    """A 3-class set against a 2-class checkpoint: the advice is a --data with the checkpoint's classes, not a
    --num-classes that the checkpoint overrules; --num-classes given to --evaluate is refused by name."""
    three = ensure_synthetic(3, 2, 1, cache_dir=tmp_path / "data3", log=lambda *a: None)
    best = trained / "checkpoints" / "best.pt"
    for args in (["--evaluate", best, "--data", three], ["--resume", best, "--data", three, "--epochs", "2"]):
        code, out, err = run_main(args + ["--workers", "0", "--device", "cpu"], capsys)
        assert code == 1 and f"{three} has other classes than checkpoint {best} (3 vs 2" in err, err
        assert "pass --data with the classes the checkpoint was trained on" in err and "--num-classes" not in err
    code, out, err = run_main(["--evaluate", best, "--data", three, "--num-classes", "3"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert "--num-classes 3 cannot change what --evaluate scores (the checkpoint's is 2): leave it out" in err


@pytest.mark.slow
def test_the_ctrl_c_hint_is_a_command_that_resumes_the_run(tiny, tmp_path, capsys, monkeypatch):
    """Interrupted in epoch 2, train.py prints the command that resumes this run (its --out, its --data and the
    flags given), which, run as printed, finishes it there; before the first checkpoint there is none."""
    from alexnet2gpu.train import engine
    real, steps = engine.train_step, []

    def interrupted(*a, **k):
        steps.append(1)
        if len(steps) == 3:  # the first step of epoch 2 (2 steps an epoch)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "train_step", interrupted)
    out_dir = tmp_path / "elsewhere"
    code, out, err = run_main(["--data", tiny, "--out", out_dir, "--epochs", "2"] + TINY, capsys)
    assert code == 130, err
    (run,) = out_dir.iterdir()
    args = advised(err, "finished epochs are checkpointed: continue with:")
    assert args[:6] == ["--resume", str(run / "checkpoints" / "epoch_0001.pt"), "--out", str(out_dir), "--data",
                        str(tiny)]
    monkeypatch.setattr(engine, "train_step", real)
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"] and list(out_dir.iterdir()) == [run]
    steps[:] = [1, 1]  # interrupted at the first step
    monkeypatch.setattr(engine, "train_step", interrupted)
    code, out, err = run_main(["--data", tiny, "--out", tmp_path / "early", "--epochs", "2"] + TINY, capsys)
    assert code == 130 and "no epoch had finished, so nothing is checkpointed: start again with the same command" \
        in err, err


def test_the_sigterm_message_names_torchrun_only_under_torchrun(monkeypatch):
    from alexnet2gpu.cli.train import stop_message
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plain = stop_message("stopped by SIGTERM", [])
    assert plain == "train.py: stopped by SIGTERM before training began: start again with the same command"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "(under torchrun: another rank failed, see its output)" in stop_message("stopped by SIGTERM", [])
    # rank 1 does not know the path of rank 0's checkpoint: it names --resume auto in the run's --out
    from types import SimpleNamespace

    from alexnet2gpu.train.trainer import Run
    rank1 = SimpleNamespace(ctx=SimpleNamespace(is_main=False, distributed=True), last_checkpoint=None, history=[{}],
                            run_dir=Path("/out/run-1"), given={"data": "/d", "epochs": 90})
    rank1.resume_command = lambda **k: Run.resume_command(rank1, **k)
    assert stop_message("stopped by SIGTERM", [rank1]).endswith(
        "continue with: torchrun <its options as before> train.py --resume auto --out /out --data /d --epochs 90")


@pytest.mark.slow
def test_resume_auto_with_nothing_to_resume_says_it_starts_a_new_run(tiny, tmp_path, capsys):
    code, out, err = run_main(["--data", tiny, "--out", tmp_path / "runs", "--resume", "auto", "--max-steps", "1",
                               "--epochs", "1"] + TINY, capsys)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert f"--resume auto: nothing to resume in {tmp_path / 'runs'}: starting a new run" in out
    assert f"run folder {run}: a new run, since --resume auto found nothing to resume in {tmp_path / 'runs'}" in out
