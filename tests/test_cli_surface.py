"""The CLI surface: fast help, one-line errors, info."""

import subprocess
import sys
import time

from cot_transplant.cli import main


def test_help_is_fast_and_lists_commands():
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "cot_transplant", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("info", "data", "generate", "train", "eval", "demo", "plot", "sweep", "bench"):
        assert cmd in out.stdout
    assert "torch" not in sys.modules or time.time() - t0 < 30  # the real check is below
    probe = subprocess.run([sys.executable, "-c", "import sys, cot_transplant.cli as c; c.build_parser(); "
                            "print('torch' in sys.modules, 'transformers' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False False"


def test_unknown_subcommand_exits_2_with_one_line(capsys):
    try:
        main(["bogus"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice" in err[0]


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "transformers", "peft", "device", "model cache", "git"):
        assert key in out


def test_train_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("trian: {}\n")
    cases = [(["train", str(tmp_path / "missing.yaml")], "config file not found"),
             (["train", str(tmp_path)], "is a directory"),
             (["train", str(tmp_path / "bad.yaml")], "did you mean 'train'"),
             (["train"], "needs a CONFIG"),
             (["train", "--resume", str(tmp_path)], "not a run directory")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
