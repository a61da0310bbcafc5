import subprocess
import sys

import pytest

from mocobench import cli


def test_help_lists_every_subcommand_with_a_description(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("data", "pretrain", "inspect", "convert", "fetch", "eval", "score", "leaderboard"):
        line = next((l for l in out.splitlines() if l.strip().startswith(name + " ")), None)
        assert line is not None, f"{name} missing from --help"
        assert len(line.split(None, 1)[1]) > 10, f"{name} has no description"


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_script_and_python_m_agree():
    out = subprocess.run([sys.executable, "-m", "mocobench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "leaderboard" in out.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_entry_point_exists(name):
    import importlib

    module, func, _ = cli.COMMANDS[name]
    assert callable(getattr(importlib.import_module(module), func))
