"""train.py's command line: torchvision's and timm's aliases, prefixes of one flag, the two underscore names
the original README used, --help in groups with each flag once, --amp alone, --test-only, and every flag
docs/training.md names."""
import os
import re

import pytest

from alexnet2gpu.cli import train
from alexnet2gpu.train.config import GROUPS, Config, setting
from tests.helpers import ROOT
from tests.helpers.runs import run_main
from tests.helpers.weights import write_untrained_checkpoint


def parsed(*argv) -> dict:
    """The flags given, as train.py reads them."""
    args = train.parser().parse_args([str(a) for a in argv])
    return {k: v for k, v in vars(args).items() if v is not None and v is not False}


def refused(capsys, *argv) -> str:
    """argparse's refusal of `argv`: its stderr, after checking the exit status."""
    with pytest.raises(SystemExit) as stop:
        train.parser().parse_args(list(argv))
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("alias, flag, value", [
    ("--data-path", "--data", "/x"), ("-b", "--batch-size", "8"), ("--output-dir", "--out", "/o"),
    ("--print-freq", "--log-every", "10"), ("--wd", "--weight-decay", "1e-4"), ("-j", "--workers", "3"),
    ("--num_classes", "--num-classes", "5"), ("--in_channels", "--in-channels", "1"),
])
def test_an_alias_sets_what_its_flag_sets(alias, flag, value):
    assert parsed(alias, value) == parsed(flag, value) and len(parsed(flag, value)) == 1


def test_a_prefix_of_one_flag_stands_for_it_and_the_underscore_twins_are_gone(capsys):
    assert parsed("--batch", "8") == {"batch_size": 8}
    assert parsed("--num", "3") == {"num_classes": 3}  # --num-classes, and its hidden --num_classes: one setting
    assert parsed("--cuda", "--test") == {"cuda_graphs": True, "test_only": True}
    assert "ambiguous option: --in could match --in-channels, --init, --init-from" in refused(capsys, "--in", "3")
    err = refused(capsys, "--batch_size", "8")
    assert "unrecognized arguments: --batch_size 8 (flags are spelled with hyphens: --batch-size)" in err


def test_amp_alone_is_bf16_and_fp16_is_refused_in_one_sentence(capsys):
    assert parsed("--amp") == parsed("--amp", "bf16") == parsed("--amp=bf16") == {"amp": "bf16"}
    assert parsed("--amp", "--data", "/x") == {"amp": "bf16", "data": "/x"}
    err = refused(capsys, "--amp", "fp16")
    assert "argument --amp: fp16 is not offered: it needs a loss scaler" in err and "use --amp (bf16" in err
    assert len(err.splitlines()) == 2  # the usage line, then the one sentence


def test_help_lists_each_flag_once_in_its_group_with_its_aliases_beside_it(capsys):
    with pytest.raises(SystemExit):
        train.parser().parse_args(["--help"])
    text = capsys.readouterr().out
    usage, sections = text.split("\n\n")[0], re.split(r"\n\n(?=\S.*:\n)", text.split("\n\n", 2)[2])
    assert "\n" not in usage and len(usage) < 100  # not every option
    titled = {s.split(":\n", 1)[0]: s for s in sections}
    assert list(titled)[1:len(GROUPS) + 1] == list(GROUPS.values())  # after "options:" (-h alone)
    listed = [name for line in re.findall(r"^  (-\S+(?:, -\S+)*)", text, re.M) for name in line.split(", ")]
    assert len(listed) == len(set(listed)) and not any("_" in name for name in listed), listed
    for f in Config.__dataclass_fields__.values():
        names = ", ".join(["--" + f.name.replace("_", "-"), *f.metadata["aliases"]])
        assert re.search(rf"^  {re.escape(names)}\b", titled[GROUPS[f.metadata["group"]]], re.M), names
    assert "  --data, --data-path DIR\n" in text and "  --batch-size, -b BATCH_SIZE\n" in text
    assert "--num_classes" not in text and "--in_channels" not in text
    with pytest.raises(ValueError, match="not one of data, recipe"):
        setting(1, "a setting of no group", group="misc")


def test_every_flag_the_docs_name_is_accepted_and_every_flag_is_documented():
    """The first column of docs/training.md's flag tables against the parser, both ways; the two hidden
    underscore names are mentioned there too."""
    section = (ROOT / "docs" / "training.md").read_text().split("\n## Flags\n")[1].split("\n## ")[0]
    cells = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `-")]
    documented = {name for cell in cells for name in re.findall(r"`(-[-a-z0-9]+)", cell)}  # aliases included
    known = train.parser()._option_string_actions
    hidden = {"--num_classes", "--in_channels"}
    assert documented <= set(known), documented - set(known)
    assert set(known) - {"-h", "--help"} - hidden <= documented, set(known) - documented - hidden
    assert all(f"`{name}`" in section for name in hidden)


@pytest.mark.slow
def test_test_only_evaluates_what_resume_names_as_evaluate_does(tiny, tmp_path, capsys):
    """--test-only --resume CKPT (torchvision's spelling) is --evaluate CKPT: the same errors on the same images,
    for a checkpoint and for --resume auto; nothing is trained or written. Without --resume, or
    with nothing to find, one sentence."""
    runs = tmp_path / "runs"
    best = write_untrained_checkpoint(runs / "r", num_classes=2, classes=sorted(os.listdir(tiny / "train")))
    common = ["--data", tiny, "--workers", "0", "--device", "cpu"]

    def errors(*argv) -> list[str]:
        code, out, err = run_main(list(argv) + common, capsys)
        assert code == 0, err
        return [line.split(": ", 1)[1] for line in out.splitlines() if "crop(s): top-1" in line]

    evaluated = errors("--evaluate", best)
    assert len(evaluated) == 2
    assert errors("--test-only", "--resume", best) == evaluated
    assert errors("--test-only", "--resume", "auto", "--output-dir", runs) == evaluated
    assert os.listdir(runs) == ["r"] and sorted(os.listdir(runs / "r")) == ["checkpoints"]
    code, out, err = run_main(["--test-only"] + common, capsys)
    assert code == 1 and "--test-only evaluates the checkpoint that --resume names: add --resume CKPT" in err
    code, out, err = run_main(["--test-only", "--resume", "auto", "--out", tmp_path / "none"] + common, capsys)
    assert code == 1 and f"no run folder in {tmp_path / 'none'} holds a checkpoint to evaluate" in err
    code, out, err = run_main(["--test-only", "--resume", best, "--evaluate", best] + common, capsys)
    assert code == 1 and "give one of them" in err
