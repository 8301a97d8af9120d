"""The package as `pip install .` makes it: a console script for every command, each exiting with its main's
status; one version, which setuptools reads without importing torch; the MIT licence; and a Python floor
that setup.cfg and the README state alike and the code keeps."""
import ast
import configparser
import importlib
import re
import subprocess
import sys

import alexnet2gpu
from tests.helpers import ROOT
from tests.helpers.child_env import child_env

COMMANDS = {"train", "bench", "predict", "export", "prepare", "info"}


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def console_scripts() -> dict[str, str]:
    lines = setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def test_every_command_has_a_console_script_whose_target_is_a_main():
    """setup.cfg is read here, not the installed metadata: an editable install made before the last change
    of setup.cfg lists the entry points of then."""
    scripts = console_scripts()
    assert set(scripts) == {f"alexnet2gpu-{c}" for c in COMMANDS}
    for name, target in scripts.items():
        assert callable(load(target)), name
    # the clone's scripts and `python -m` run the same mains
    assert load(scripts["alexnet2gpu-train"]) is importlib.import_module("alexnet2gpu.cli.train").main
    for root_script, command in (("train.py", "train"), ("bench.py", "bench")):
        assert f"from {scripts[f'alexnet2gpu-{command}'].replace(':', ' import ')}" in (ROOT / root_script).read_text()
    for command in ("info", "prepare", "export", "predict"):
        assert f"from {scripts[f'alexnet2gpu-{command}'].replace(':', ' import ')}" in \
            (ROOT / "alexnet2gpu" / f"{command}.py").read_text()


def test_an_installed_command_exits_with_its_mains_status(tmp_path):
    """The script pip writes for a console script, as setuptools and pip write it, run with a mistake: the
    status main returns (2, not argparse's own exit) reaches the shell, and the command names itself."""
    module, name = console_scripts()["alexnet2gpu-info"].split(":")
    script = tmp_path / "alexnet2gpu-info"
    script.write_text(f"import re\nimport sys\nfrom {module} import {name}\nif __name__ == '__main__':\n"
                      f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      f"    sys.exit({name}())\n")
    ran = subprocess.run([sys.executable, str(script), "--num-classes", "0"], capture_output=True, text=True,
                         env=child_env(), cwd=tmp_path, timeout=120)
    assert ran.returncode == 2 and ran.stderr.startswith("alexnet2gpu-info: error: --num-classes"), ran.stderr


def test_the_version_has_one_source_that_setuptools_reads_without_torch():
    version = setup_cfg()["metadata"]["version"]
    assert version.startswith("attr: "), version
    attribute = version.removeprefix("attr: ").strip()
    # what setuptools does at build time, in a process where torch cannot be imported
    code = ("import sys; sys.modules['torch'] = None; from setuptools.config.expand import read_attr; "
            f"print(read_attr({attribute!r}, root_dir={str(ROOT)!r}))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == alexnet2gpu.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", alexnet2gpu.__version__)


def test_the_mit_licence_ships():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the alexnet2gpu authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    metadata = setup_cfg()["metadata"]
    assert metadata["license"] == "MIT" and metadata["license_files"] == "LICENSE"


# Python 3.11+ names (the standard library's and typing's); their use would break the stated floor at run time
NEWER = {"tomllib", "ExceptionGroup", "BaseExceptionGroup", "Self", "StrEnum", "TaskGroup", "add_note",
         "LiteralString", "assert_never", "reveal_type", "TypeVarTuple", "NotRequired", "override", "batched",
         "file_digest", "UTC"}


def test_one_python_floor_that_the_code_keeps():
    """setup.cfg's python_requires is the README's "Python 3.10+"; every Python file of the repository
    parses as 3.10 and names none of the 3.11+ additions above."""
    floor = setup_cfg()["options"]["python_requires"].strip()
    assert floor == ">=3.10"
    assert "Python 3.10+" in (ROOT / "README.md").read_text()
    files = [p for p in ROOT.rglob("*.py") if not {".venv", "build", ".git"} & set(p.relative_to(ROOT).parts)]
    assert len(files) > 100
    for path in files:
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path), feature_version=(3, 10))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {a.name.split(".")[0] for a in node.names}
            names |= {getattr(node, "id", None), getattr(node, "attr", None)}
        assert not names & NEWER, f"{path}: {sorted(names & NEWER)}"
