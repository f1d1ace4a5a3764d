"""`zaya-edge chat` and `run` as a person uses them: commands, exits, a context that fills up, a
--max-new-tokens default that cannot fit. The tiny artifact's context is 512 tokens, so the
512-token default never fits a prompt there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from test_runtime_cli import cli

CLAMPED = re.compile(r"max_new_tokens 512 does not fit the context \(prompt (\d+) of (\d+)\): clamped to (\d+)")
LONG = "word " * 1000  # far more tokens than the context holds


def replies(stdout: str) -> list[str]:
    return [r for r in stdout.split(">>> ") if r.strip()]


def test_unknown_commands_are_answered_not_sent(tiny_artifact):
    proc = cli("chat", tiny_artifact[1], "--max-new-tokens", "4", stdin="/stats\n/foo\n/stats\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert "unknown command /foo; commands: /reset /stats /quit" in proc.stderr
    assert proc.stderr.count("no turn yet") == 2  # /foo was not a turn
    assert replies(proc.stdout) == []


def test_eof_and_quit_leave_a_clean_line(tiny_artifact):
    proc = cli("chat", tiny_artifact[1], "--max-new-tokens", "4", stdin="")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ">>> \n"


def test_ctrl_c_at_the_prompt_ends_the_chat_cleanly(tiny_artifact):
    proc = subprocess.Popen([sys.executable, "-m", "zaya_edge", "chat", str(tiny_artifact[1]), "--max-new-tokens", "4"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert os.read(proc.stdout.fileno(), 4) == b">>> "  # waiting at the prompt
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == b"\n" and b"Traceback" not in err and b"interrupted" not in err


def test_a_turn_beyond_the_context_keeps_the_conversation(tiny_artifact):
    """The overlong message is refused with a notice; the next turn runs as if it had never been typed."""
    flags = ("--max-new-tokens", "8", "--temperature", "0")
    kept = cli("chat", tiny_artifact[1], *flags, stdin=f"first\n{LONG}\nsecond\n/quit\n")
    assert kept.returncode == 0, kept.stderr
    assert "does not fit the context" in kept.stderr and "/reset" in kept.stderr and "Traceback" not in kept.stderr
    plain = cli("chat", tiny_artifact[1], *flags, stdin="first\nsecond\n/quit\n")
    assert len(replies(plain.stdout)) == 2 and replies(kept.stdout) == replies(plain.stdout)


def test_chat_clamps_the_default_budget_with_a_notice(tiny_artifact):
    proc = cli("chat", tiny_artifact[1], "--temperature", "0", stdin="hello\n/stats\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    prompt, context, budget = map(int, CLAMPED.search(proc.stderr).groups())
    assert context == 512 and prompt + budget == context and "tok/s" in proc.stderr


def test_run_clamps_the_default_budget_and_refuses_an_explicit_one(tiny_artifact):
    proc = cli("run", tiny_artifact[1], "hello there", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    prompt, context, budget = map(int, CLAMPED.search(proc.stderr).groups())
    assert context == 512 and prompt + budget == context and proc.stdout.strip()
    given = cli("run", tiny_artifact[1], "hello there", "--max-new-tokens", "600")
    assert given.returncode == 2 and given.stderr.startswith("error: --max-new-tokens 600 does not fit the context")
    assert len(given.stderr.splitlines()) == 1
    fits = cli("run", tiny_artifact[1], "hello there", "--max-new-tokens", "5")
    assert fits.returncode == 0 and "clamped" not in fits.stderr
