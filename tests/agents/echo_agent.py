"""A small interactive TUI agent for tests, run in a real PTY.

It draws an input box at the bottom like Claude Code does, reads raw keystrokes (bracketed paste
aware), and answers ``echo: <text>``. Commands: ``/slow SECONDS text`` streams the reply slowly (Esc or Ctrl-C stops it),
``/slow-once SECONDS text`` streams it slowly the first time in its workspace and at once after,
``/lines N`` prints N numbered lines, ``/sleep SECONDS`` works for a while, ``/write BYTES`` fills
a file in the workspace, ``/put NAME TEXT`` writes TEXT to NAME in it, ``/env`` prints the environment, ``/exit``, ``/crash``, ``/deaf`` stops reading input for good.
``--trust-prompt`` asks "Do you trust the files in this folder? (y/n)" first. ``--fast-return``: an
Enter read together with a paste is a line break in it, not a submit (Gemini CLI's rule for an Enter
within 30 ms of a key). ``--resume-after SECONDS``: that long after its input box is first drawn,
it drops what it has been sent and draws its screen anew, as Gemini CLI resuming a session does.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty

WIDTH = 60
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
SLOWED_MARK = ".echo-slowed-once"


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def draw_box(buffer: str = "") -> None:
    out("╭" + "─" * WIDTH + "╮\r\n")
    out(f"│ > {buffer}\r\n")
    out("╰" + "─" * WIDTH + "╯\r\n")
    out("  ? for shortcuts · esc to interrupt")
    out("\x1b[2A\r\x1b[" + str(4 + len(buffer)) + "C")


def clear_box() -> None:
    out("\r\x1b[1A\x1b[J")


def say(line: str, delay: float = 0.0) -> None:
    if delay:
        for char in line:
            out(char)
            # Esc or Ctrl-C while it streams stops the reply, as Claude Code's "esc to interrupt" does.
            ready, _, _ = select.select([sys.stdin], [], [], delay)
            if ready and any(key in read_key(sys.stdin.fileno()) for key in ("\x1b", "\x03")):
                out("\r\n^C interrupted")
                break
        out("\r\n")
    else:
        out(line + "\r\n")


def answer(text: str) -> None:
    words = text.split()
    command = words[0] if words else ""
    if command == "/exit":
        sys.exit(0)
    if command == "/crash":
        sys.exit(3)
    if command == "/lines" and len(words) > 1:
        for number in range(1, int(words[1]) + 1):
            say(f"line {number}")
    elif command == "/slow" and len(words) > 2:
        reply = "echo: " + " ".join(words[2:])
        say(reply, delay=float(words[1]) / max(len(reply), 1))
    elif command == "/slow-once" and len(words) > 2:
        # A test kills the agent mid-reply; the session's next host retypes the message into a new
        # agent in the same workspace, which need not make the test wait the whole reply again.
        reply = "echo: " + " ".join(words[2:])
        first = not os.path.exists(SLOWED_MARK)
        open(SLOWED_MARK, "w").close()
        say(reply, delay=float(words[1]) / max(len(reply), 1) if first else 0.0)
    elif command == "/env":
        say("\r\n".join(f"{key}={value}" for key, value in sorted(os.environ.items())))
    elif command == "/write" and len(words) > 1:
        with open("filler.bin", "wb") as handle:
            handle.write(os.urandom(int(words[1])))
        say(f"wrote {words[1]} bytes")
    elif command == "/put" and len(words) > 2:
        os.makedirs(os.path.dirname(words[1]) or ".", exist_ok=True)
        with open(words[1], "w", encoding="utf-8") as handle:
            handle.write(" ".join(words[2:]))
        say(f"put {words[1]}")
    elif command == "/cat" and len(words) > 1:
        with open(words[1], encoding="utf-8", errors="replace") as handle:
            say("\r\n".join(handle.read().splitlines()))
    elif command == "/deaf":
        # Alive, but never reads its terminal again: what it is sent is never taken.
        say("not listening")
        say("")
        draw_box()
        while True:
            time.sleep(60)
    elif command == "/sleep" and len(words) > 1:
        say("working...")
        time.sleep(float(words[1]))
        say("done")
    else:
        say(f"echo: {text}")


def read_key(fd: int) -> str:
    return os.read(fd, 1024).decode(errors="replace")


def main() -> None:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        out("\x1b[?2004h")  # ask for bracketed paste, like real agent TUIs
        say("Echo Agent 1.0 — a test agent")
        say("")
        if "--trust-prompt" in sys.argv:
            out("Do you trust the files in this folder? (y/n) ")
            while "y" not in read_key(fd).lower():
                pass
            out("\r\x1b[K")
        draw_box()
        if "--resume-after" in sys.argv:
            time.sleep(float(sys.argv[sys.argv.index("--resume-after") + 1]))
            termios.tcflush(fd, termios.TCIFLUSH)
            out("\x1b[2J\x1b[H")
            say("Resumed session")
            say("")
            draw_box()
        buffer = ""
        pending = ""
        while True:
            pending += read_key(fd)
            pasted = edited = False
            while pending:
                if pending.startswith(PASTE_START):
                    end = pending.find(PASTE_END)
                    if end < 0:
                        break
                    buffer += pending[len(PASTE_START) : end]
                    pending = pending[end + len(PASTE_END) :]
                    pasted = True
                elif pending[0] == "\r" and pasted and "--fast-return" in sys.argv:
                    buffer, pending = buffer + "\n", pending[1:]
                elif pending[0] == "\r":
                    pending = pending[1:]
                    text = buffer.strip()
                    buffer = ""
                    clear_box()
                    if text:
                        say(f"> {text}")
                        say("")
                        answer(text)
                        say("")
                    draw_box()
                    continue
                elif pending[0] == "\x03":
                    pending, buffer = pending[1:], ""
                    clear_box()
                    say("^C interrupted")
                    draw_box()
                    continue
                elif pending[0] == "\x7f":
                    pending, buffer = pending[1:], buffer[:-1]
                elif pending[0] == "\x1b":
                    # Another escape sequence (arrows, Esc): ignored, as a prompt would.
                    pending = pending[3:] if pending.startswith("\x1b[") else pending[1:]
                    continue
                else:
                    buffer, pending = buffer + pending[0], pending[1:]
                edited = True
            if edited:
                # Once per read, as a TUI renders once per batch of input, not once per key.
                out("\r\x1b[K│ > " + buffer)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    main()
