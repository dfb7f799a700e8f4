"""The one gateway to subprocesses.

Every external command dtk runs goes through `run` or `stream`. They log the
command line, give the child a clean environment, enforce a timeout, kill the
child's whole process group (buildah and qemu spawn helpers that would outlive
a plain kill), and on failure raise `CommandError` carrying a copy-pasteable
reproducer and the tail of the output.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dtk.errors import DtkError

log = logging.getLogger("dtk.run")

# Variables a child may need from the caller's environment. Everything else is
# dropped so that builds do not depend on whoever happens to run dtk.
_PASSTHROUGH = (
    "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TERM", "LANG",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "REGISTRY_AUTH_FILE", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF", "BUILDAH_ISOLATION", "XDG_RUNTIME_DIR",
)
_TAIL_LINES = 25
_KILL_GRACE_S = 5.0

# Every child still running. Ctrl-C reaches only the main thread, so commands
# run from worker threads (parallel VM boots, matrix builds) would otherwise
# live on until their own timeout: `terminate_all` ends them.
_live: set[subprocess.Popen[Any]] = set()
_live_lock = threading.Lock()
# Set once dtk is stopping (Ctrl-C, SIGTERM): see `stop_all`.
_stopping = threading.Event()


class Interrupted(KeyboardInterrupt):
    """dtk is stopping. Raised instead of a command's result, since a command that
    ended meanwhile may have been killed by the stop: its failure is not its own, and
    must not be reported (or remembered) as one."""


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandError(DtkError):
    """A command failed; carries what is needed to reproduce it by hand."""

    def __init__(self, argv: Sequence[str], returncode: int | None, tail: str,
                 what: str | None = None, hint: str | None = None) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.tail = tail
        status = "timed out" if returncode is None else f"exited with status {returncode}"
        head = what or f"{Path(self.argv[0]).name} {status}"
        message = f"{head}\n  command: {self.reproducer}"
        if tail.strip():
            message += "\n  output (last lines):\n" + _indent(tail)
        super().__init__(message, hint)

    @property
    def reproducer(self) -> str:
        return shlex.join(self.argv)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSTHROUGH}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def _kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Terminate the child's process group, then kill it if it lingers."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _track(proc: subprocess.Popen[Any], running: bool, cleanup: bool = False) -> None:
    with _live_lock:
        if running:
            _live.add(proc)
        else:
            _live.discard(proc)
    # A command started while `stop_all` ran, after it listed the live ones: `_stopping`
    # was set before that list was taken, so it is seen here.
    if running and not cleanup and _stopping.is_set():
        _kill_group(proc)


def terminate_all() -> None:
    """Kill the process group of every command started here that still runs."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill_group(proc)


def stop_all() -> None:
    """Stop everything for good: every running command's process group is killed, and
    from now on a command (other than `cleanup` ones: removing a working container)
    raises `Interrupted` instead of starting or of reporting how it ended."""
    _stopping.set()
    terminate_all()


def _check_stopping(cleanup: bool) -> None:
    if _stopping.is_set() and not cleanup:
        raise Interrupted("dtk is stopping")


def _check_tool(argv: Sequence[str]) -> None:
    if not argv:
        raise ValueError("empty command")
    if os.sep not in argv[0] and not shutil.which(argv[0], path=child_env()["PATH"]):
        raise DtkError(f"required tool '{argv[0]}' is not installed",
                       hint="run 'make deps' (or install the package that provides it)")


def run(argv: Sequence[str], *, check: bool = True, timeout: float | None = None,
        env: Mapping[str, str] | None = None, cwd: Path | None = None,
        input: str | bytes | None = None, what: str | None = None,
        hint: str | None = None, cleanup: bool = False) -> Result:
    """Run a command to completion, capturing stdout and stderr separately. `cleanup`:
    it undoes something (removes a container) and runs even while dtk stops."""
    argv = [str(a) for a in argv]
    _check_tool(argv)
    _check_stopping(cleanup)
    log.debug("run: %s", shlex.join(argv))
    start = time.monotonic()
    text_input = input.decode() if isinstance(input, bytes) else input
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(env), cwd=cwd,
        start_new_session=True, text=True, errors="replace",
    ) as proc:
        _track(proc, True, cleanup)
        try:
            out, err = proc.communicate(text_input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise CommandError(argv, None, _tail(out + err), what, hint) from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            _track(proc, False)
    _check_stopping(cleanup)
    result = Result(tuple(argv), proc.returncode, out, err, time.monotonic() - start)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, _tail(out + "\n" + err), what, hint)
    return result


def stream(argv: Sequence[str], *, check: bool = True, timeout: float | None = None,
           env: Mapping[str, str] | None = None, cwd: Path | None = None,
           log_file: Path | None = None, on_line: Callable[[str], None] | None = None,
           what: str | None = None, hint: str | None = None,
           mask: Sequence[str] = (), pass_fds: Sequence[int] = ()) -> Result:
    """Run a long command with stdout+stderr merged, line by line.

    Each line goes to `log_file` (the full log a user reads after a failure)
    and to `on_line` (progress display); only the tail is kept in memory.
    Values in `mask` (build secrets) are replaced by *** in all three, before
    any of them sees the line, even when the command itself prints them.
    `pass_fds`: descriptors the command inherits, at the same numbers.
    """
    hide = masker(mask) if mask else None
    argv = [str(a) for a in argv]
    _check_tool(argv)
    _check_stopping(False)
    log.debug("stream: %s", shlex.join(argv))
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    sink: IO[str] | None = log_file.open("a", encoding="utf-8") if log_file else None
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=child_env(env), cwd=cwd, start_new_session=True, text=True, errors="replace",
        pass_fds=tuple(pass_fds),
    )
    _track(proc, True)
    timed_out = threading.Event()
    watchdog = _start_watchdog(proc, timeout, timed_out)
    try:
        if sink:
            sink.write(f"$ {shlex.join(argv)}\n")
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = hide(raw) if hide else raw
            tail.append(line.rstrip("\n"))
            if sink:
                sink.write(line)
            if on_line:
                on_line(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        _track(proc, False)
        if watchdog:
            watchdog.cancel()
        if sink:
            sink.close()
        if proc.stdout:
            proc.stdout.close()
    _check_stopping(False)
    text = "\n".join(tail)
    if timed_out.is_set():
        raise CommandError(argv, None, text, what, hint)
    result = Result(tuple(argv), proc.returncode, text, "", time.monotonic() - start)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, text, what, hint)
    return result


MASK = "***"
_MIN_MASKED = 3  # shorter fragments would blank ordinary words


def masker(secrets: Sequence[str]) -> Callable[[str], str]:
    """Replace every secret value, and each line of a multi-line one, by ***
    (as CI systems mask secrets in job logs)."""
    parts = {s for value in secrets for s in (value, *value.splitlines())
             if len(s.strip()) >= _MIN_MASKED}
    ordered = sorted(parts, key=len, reverse=True)  # whole values before their lines

    def mask(line: str) -> str:
        for part in ordered:
            line = line.replace(part, MASK)
        return line
    return mask


def _start_watchdog(proc: subprocess.Popen[str], timeout: float | None,
                    fired: threading.Event) -> threading.Timer | None:
    if timeout is None:
        return None

    def expire() -> None:
        fired.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    return timer


class Console:
    """A long-running command dtk reads and types into as it runs: qemu's serial console,
    where a firmware draws screens without newlines and MokManager waits for keys.

    Its merged stdout and stderr are read as they arrive, whole chunks (no line
    buffering), into `log_file` and into memory (the last `keep` bytes); `send` types
    into its stdin. Like `run` and `stream`, it runs in its own process group, which is
    killed when the block ends, on `kill`, or when dtk stops (Ctrl-C)."""

    def __init__(self, argv: Sequence[str], *, log_file: Path, keep: int = 8 << 20) -> None:
        self.argv = [str(a) for a in argv]
        self._log_file, self._keep = log_file, keep
        self._buffer = bytearray()
        self._dropped = 0  # bytes before the kept ones
        self._lock = threading.Lock()
        self._start = 0.0
        self.first_output_s: float | None = None  # since the start
        self.last_output_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Console:
        _check_tool(self.argv)
        _check_stopping(False)
        log.debug("console: %s", shlex.join(self.argv))
        self._start = time.monotonic()
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=child_env(), start_new_session=True)
        _track(self._proc, True)
        self._reader = threading.Thread(target=self._read, daemon=True, name="dtk-console")
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        assert proc is not None
        if proc.poll() is None:
            _kill_group(proc)
        _track(proc, False)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # the child is gone: nothing left to say
                proc.stdin.close()
        _check_stopping(False)

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        with self._log_file.open("ab") as sink:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                sink.write(chunk)
                sink.flush()
                now = time.monotonic() - self._start
                with self._lock:
                    if self.first_output_s is None:
                        self.first_output_s = now
                    self.last_output_s = now
                    self._buffer += chunk
                    extra = len(self._buffer) - self._keep
                    if extra > 0:
                        del self._buffer[:extra]
                        self._dropped += extra

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def output(self) -> tuple[int, bytes]:
        """(offset of the first kept byte, the kept output) — offsets count every byte
        the command ever printed, so a position stays valid as old output is dropped."""
        with self._lock:
            return self._dropped, bytes(self._buffer)

    def poll(self) -> int | None:
        assert self._proc is not None
        return self._proc.poll()

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if it still runs after `timeout` seconds."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(timeout=10)  # the last of the output
        return code

    def send(self, data: bytes, pause_s: float = 0.05) -> None:
        """Type `data`, one byte at a time: a firmware's serial terminal reads a key per
        poll, and an escape sequence sent at once can reach it split badly."""
        assert self._proc is not None and self._proc.stdin is not None
        for byte in data:
            try:
                self._proc.stdin.write(bytes([byte]))
                self._proc.stdin.flush()
            except BrokenPipeError:
                return  # it ended: the caller sees that from poll()
            time.sleep(pause_s)

    def kill(self) -> None:
        assert self._proc is not None
        _kill_group(self._proc)
