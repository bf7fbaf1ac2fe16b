"""`ingot run` as an interactive chat on a real terminal: a pseudo-terminal in its default
(cooked) mode is the child's controlling terminal and its stdin, stdout and stderr, so the "> "
prompt shows, lines are echoed, and Ctrl-C typed on it is a SIGINT from the line discipline.

No sleeps decide the outcome. The test knows the chat waits for a line when "> " has been
printed and the child sits in read(0) (from /proc/PID/syscall). To Ctrl-C an answer that
would otherwise be over in milliseconds, it first types Ctrl-S (XOFF): the terminal stops
output, so the child blocks writing the first piece of its answer, inside the answer; then
Ctrl-C (which also restarts output, IXON) is certain to land while the answer streams.
"""
from __future__ import annotations

import os
import platform
import select
import subprocess
import sys
import time

import pytest

import ingot

pytestmark = pytest.mark.xdist_group("llama")

CTX, BATCH = 1024, 4   # long enough for two turns of history; shared with test_serial.py
MAX_TOKENS = 200
WAIT = 120.0        # seconds per step: generous, for a loaded 2-core CI machine
# The child takes the pty (its stdin) as controlling terminal, then becomes `ingot run`.
_CTTY = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
         "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
_SYSCALLS = {"x86_64": (0, 1), "amd64": (0, 1), "aarch64": (63, 64), "arm64": (63, 64)}
READ, WRITE = _SYSCALLS.get(platform.machine().lower(), (None, None))


class Terminal:
    """The master end of the child's terminal."""

    def __init__(self, argv):
        master, slave = os.openpty()
        env = dict(os.environ, PYTHONIOENCODING="utf-8")
        env.pop("INGOT_DEBUG", None)
        self.proc = subprocess.Popen([sys.executable, "-c", _CTTY, *map(str, argv)],
                                     stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.fd, self.out, self.eof = master, bytearray(), False
        self.mark = 0   # the end of the output up to the last prompt

    def drain(self, timeout: float = 0.0) -> bool:
        """Read what the child wrote (waiting up to `timeout` for something); True if any."""
        got = False
        while not self.eof:
            r, _, _ = select.select([self.fd], [], [], timeout if not got else 0)
            if not r:
                break
            try:
                data = os.read(self.fd, 65536)
            except OSError:   # EIO: the child closed its end
                data = b""
            if not data:
                self.eof = True
                break
            self.out += data
            got = True
        return got

    def syscall(self):
        """(number, first argument) of the system call the child is blocked in; "running"
        when it is in none; None when this system does not say (no /proc, no permission)."""
        try:
            with open(f"/proc/{self.proc.pid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            return None
        try:
            return int(fields[0]), int(fields[1], 16)
        except (ValueError, IndexError):
            return "running"

    @property
    def watchable(self) -> bool:
        return READ is not None and self.syscall() is not None

    def blocked_in(self, nr, fd, timeout: float = WAIT) -> bool:
        """Wait until the child sits in system call `nr` on `fd`; False if that cannot be seen
        on this system (the caller then falls back on time)."""
        if not self.watchable:
            return False
        end = time.monotonic() + timeout
        while self.syscall() != (nr, fd):
            assert self.proc.poll() is None, self.transcript()
            assert time.monotonic() < end, f"child never blocked in syscall {nr} on fd {fd}"
            self.drain(0.01)
        return True

    def wait_prompt(self, timeout: float = WAIT) -> bytes:
        """Wait for a new "> " prompt (after something was shown since the last one: the
        echo of what was typed at least) with the child waiting for a line; the output since
        the previous prompt."""
        start, end = self.mark, time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            if self.drain(0.05):
                quiet_since = time.monotonic()
            assert self.proc.poll() is None, self.transcript()
            assert time.monotonic() < end, f"no prompt within {timeout} s: {self.transcript()}"
            if len(self.out) == start or not self.out.endswith(b"> "):
                continue
            if self.watchable:
                if self.syscall() == (READ, 0) and not self.drain(0):
                    break
            elif time.monotonic() - quiet_since > 1.0:   # no /proc/PID/syscall: quiet time
                break
        self.mark = len(self.out)
        return bytes(self.out[start:])

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def transcript(self) -> str:
        return repr(bytes(self.out[-3000:]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        os.close(self.fd)


def _shown(text: str) -> bytes:
    """What the terminal shows for text the program printed (output processing: \\n -> \\r\\n)."""
    return text.encode("utf-8").replace(b"\n", b"\r\n")


def test_chat_on_a_terminal_turns_reset_ctrl_c_exit(artefacts):
    art = artefacts("llama", max_seq_len=CTX, max_batch=BATCH)
    user = lambda t: {"role": "user", "content": t}  # noqa: E731
    with ingot.load(art, threads=1) as model:
        first = model.generate([user("hello")], max_tokens=MAX_TOKENS, temperature=0)
        second = model.generate([user("hello"), {"role": "assistant", "content": first},
                                 user("tell me more")], max_tokens=MAX_TOKENS, temperature=0)
        third = model.generate([user("again")], max_tokens=MAX_TOKENS, temperature=0)
    assert first and second and third   # non-empty answers: Ctrl-S/Ctrl-C need a first piece

    term = Terminal(["-m", "ingot.cli", "run", art, "--max-tokens", MAX_TOKENS, "--threads", 1,
                     "--temperature", 0])
    try:
        banner = term.wait_prompt()
        assert b"ingot: chatting with" in banner and banner.endswith(b"\r\n> ")

        # Two turns: the echoed line, the answer, the next prompt. The second answer is the
        # API's answer to the whole conversation: the history is kept.
        term.type(b"hello\n")
        assert term.wait_prompt() == b"hello\r\n" + _shown(first) + b"\r\n> "
        term.type(b"tell me more\n")
        assert term.wait_prompt() == b"tell me more\r\n" + _shown(second) + b"\r\n> "

        term.type(b"/reset\n")
        assert term.wait_prompt() == b"/reset\r\n(context cleared)\r\n> "
        term.type(b"\x03")   # Ctrl-C at the prompt: a fresh prompt, the chat goes on
        assert term.wait_prompt() == b"^C\r\n> "

        # Ctrl-S, then the line: the answer's first write blocks on the stopped terminal.
        term.type(b"\x13again\n")
        if not term.blocked_in(WRITE, 1):
            time.sleep(3.0)   # no /proc/PID/syscall here: give the answer time to start
        term.type(b"\x03")
        stopped = term.wait_prompt()
        assert stopped.endswith(b" [stopped]\r\n> "), stopped
        # The line discipline flushed the pending echo and echoed ^C (ECHOCTL); the rest is
        # the start of the answer: the piece whose write was held up, then the cut.
        assert b"^C" in stopped
        cut = stopped[:-len(b" [stopped]\r\n> ")].replace(b"^C", b"", 1)
        assert cut and _shown(third).startswith(cut) and len(cut) < len(_shown(third))

        # The chat goes on after the stopped answer, then /exit ends it cleanly.
        term.type(b"one more\n")
        turn = term.wait_prompt()
        assert turn.startswith(b"one more\r\n") and turn.endswith(b"\r\n> ")
        assert b"[stopped]" not in turn and b"ingot: error" not in turn and len(turn) > 16
        term.type(b"/exit\n")
        assert term.proc.wait(WAIT) == 0, term.transcript()
        term.drain(1.0)
        assert b"interrupted" not in term.out and b"Traceback" not in term.out
    finally:
        term.close()


def test_ctrl_d_at_the_prompt_ends_the_chat(artefacts):
    term = Terminal(["-m", "ingot.cli", "run", artefacts("llama", max_seq_len=CTX,
                                                         max_batch=BATCH),
                     "--threads", 1])
    try:
        assert term.wait_prompt().endswith(b"> ")
        term.type(b"\x04")   # Ctrl-D on an empty line: end of input
        assert term.proc.wait(WAIT) == 0, term.transcript()
    finally:
        term.close()
