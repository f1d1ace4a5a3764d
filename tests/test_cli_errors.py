"""Every file a command reads or writes, and every flag a person mistypes: one line `error: …`,
exit code 2, never a traceback (unless --debug, accepted after the subcommand too)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zaya_edge import __version__
from zaya_edge.errors import ZayaEdgeError

SOLVE = "--population 2 --subset 1 --rounds 1 --budget 16 --tail 8 --final-budget 16 --quiet"
SMALL_BENCH = "--runs 1 --prompt 4 --new-tokens 2 --prefill 4 --batches 1"
QUALITY = "quality {art} --reference {art} --length 8"

CASES = {
    "quality --json under a file": QUALITY + " --json {file}/x.json",
    "quality --json in a missing folder": QUALITY + " --json {missing}/x.json",
    "quality --json in a read-only folder": QUALITY + " --json /sys/x.json",
    "quality --json on a full disk": QUALITY + " --json {full} --force",
    "quality --seed -1": QUALITY + " --seed -1",
    "quality --text-file of random bytes": QUALITY + " --text-file {garbage}",
    "quality --tokens corrupt .npy": QUALITY + " --tokens {garbage_npy}",
    "quality --reference with malformed config.json": "quality {art} --reference {bad_ckpt}",
    "bench --json under a file": "bench {art} " + SMALL_BENCH + " --json {file}/x.json",
    "bench --json on a full disk": "bench {art} " + SMALL_BENCH + " --json {full}",
    "eval --json under a file": "eval {art} --limit 1 --json {file}/x.json",
    "eval --seed -1": "eval {art} --limit 1 --seed -1",
    "solve --report under a file": "solve {art} 1+1 " + SOLVE + " --report {file}/x.json",
    "solve --report a folder": "solve {art} 1+1 " + SOLVE + " --report {tmp} --force",
    "solve --report on a full disk": "solve {art} 1+1 " + SOLVE + " --report {full} --force",
    "solve --checkpoint under a file": "solve {art} 1+1 " + SOLVE + " --checkpoint {file}/x.json",
    "solve --checkpoint in a read-only folder": "solve {art} 1+1 " + SOLVE + " --checkpoint /sys/x.json",
    "solve --checkpoint of random bytes": "solve {art} 1+1 " + SOLVE + " --checkpoint {garbage}",
    "solve --checkpoint not a regular file": "solve {art} 1+1 " + SOLVE + " --checkpoint {full}",
    "solve --template of random bytes": "solve {art} 1+1 " + SOLVE + " --template {garbage}",
    "solve --template not a regular file": "solve {art} 1+1 " + SOLVE + " --template {full}",
    "solve --seed -1": "solve {art} 1+1 " + SOLVE + " --seed -1",
    "run --seed -1": "run {art} hi --seed -1",
    "chat --seed -1": "chat {art} --seed -1",
    "run on malformed zaya_edge.json": "run {bad_art} hi",
    "inspect --context 0": "inspect {art} --context 0",
    "export -o under a file": "export {ckpt} -o {file}/x --quiet",
    "export -o in a read-only folder": "export {ckpt} -o /sys/x --quiet",
    "export of malformed config.json": "export {bad_ckpt} -o {tmp}/out --quiet",
}


@pytest.fixture(scope="module")
def places(tiny_artifact, tiny_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-inputs")
    (tmp / "file").write_text("a file, not a folder\n")
    garbage = bytes(range(256)) * 4
    (tmp / "garbage.bin").write_bytes(garbage)
    (tmp / "garbage.npy").write_bytes(garbage)
    bad_ckpt = tmp / "bad-ckpt"
    shutil.copytree(tiny_checkpoint[1], bad_ckpt)
    (bad_ckpt / "config.json").write_text('{"model_type": "zaya", ')
    bad_art = tmp / "bad-art"
    shutil.copytree(tiny_artifact[1], bad_art)
    (bad_art / "zaya_edge.json").write_text('{"format_version": 2, ')
    (tmp / "full.json").symlink_to("/dev/full")  # a disk that fills (a link: a regression replaces the link only)
    return dict(full=tmp / "full.json", art=tiny_artifact[1], ckpt=tiny_checkpoint[1], tmp=tmp, file=tmp / "file", missing=tmp / "missing",
                garbage=tmp / "garbage.bin", garbage_npy=tmp / "garbage.npy", bad_ckpt=bad_ckpt, bad_art=bad_art)


def zaya(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "zaya_edge", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_and_exit_code_2(places, case):
    proc = zaya(*CASES[case].format(**places).split())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not list(places["tmp"].glob(".*.tmp"))  # no temporary file left behind


def test_debug_after_the_subcommand_shows_the_traceback(places):
    proc = zaya("run", places["art"], "hi", "--max-new-tokens", "600", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ContextFullError" in proc.stderr


def test_every_subcommand_accepts_version():
    from click.testing import CliRunner

    from zaya_edge.app.cli import main

    for name in main.commands:
        got = CliRunner().invoke(main, [name, "--version"])
        assert (got.exit_code, got.output.strip()) == (0, f"zaya-edge {__version__}"), name
    assert CliRunner().invoke(main, ["--version"]).output.strip() == f"zaya-edge {__version__}"


def test_a_full_disk_keeps_the_old_report(tmp_path, monkeypatch):
    from zaya_edge.app import files

    out = tmp_path / "report.json"
    out.write_text('{"old": true}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(ZayaEdgeError, match=f"cannot write {out}: No space left on device"):
        files.write_json_atomic(out, {"new": True})
    assert json.loads(out.read_text()) == {"old": True} and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_an_output_path_is_checked_before_the_work(tmp_path):
    from zaya_edge.app.files import check_output

    (tmp_path / "file").write_text("x")
    (tmp_path / "old.json").write_text("{}")
    for path, message in [(tmp_path / "file" / "x.json", "is not a folder"),
                          (tmp_path / "missing" / "x.json", "does not exist"),
                          (tmp_path, "is a folder"),
                          (tmp_path / "old.json", "already exists; pass --force")]:
        with pytest.raises(ZayaEdgeError, match=message):
            check_output(path, force_flag="--force")
    check_output(tmp_path / "old.json", force_flag=None)  # a command without --force replaces it
    check_output(Path("/dev/null"), force_flag="--force")  # written in place, never replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "old.json"]
