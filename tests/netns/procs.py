"""A child process that prints one JSON object per line, and waiting on what it printed.

``JsonLinesProcess`` reads the child's stdout on a thread; ``wait_for(predicate)`` returns the
first line (in order of arrival) that satisfies the predicate, blocking on a condition variable
until one arrives, the child exits, or the bound passes, in which case it fails with the lines
seen and the child's stderr. The bound is a failure bound, never a measurement.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

Line = dict[str, Any]
WAIT_S = 20.0


class JsonLinesProcess:
    """Wraps a started ``Popen`` (stdin/stdout pipes, text mode) whose stdout is JSON lines."""

    def __init__(self, proc: subprocess.Popen[str], label: str, stderr_file: Any) -> None:
        self.proc = proc
        self.label = label
        self.lines: list[Line] = []
        self._stderr_file = stderr_file
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._pump, name=f"read-{label}", daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls,
        label: str,
        popen: Callable[..., subprocess.Popen[str]],
        argv: Sequence[str],
        **kwargs: Any,
    ) -> JsonLinesProcess:
        """Start ``argv`` with ``popen`` (``subprocess.Popen`` or ``NetBed.popen`` partial)."""
        err = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (read by describe)
        proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                     bufsize=1, **kwargs)  # fmt: skip
        return cls(proc, label, err)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"event": "non-json", "text": raw}
            line.setdefault("received", time.monotonic())
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def mark(self) -> int:
        """The number of lines so far: pass it as ``since`` to wait only on later lines."""
        with self._cond:
            return len(self.lines)

    def wait_for(
        self, predicate: Callable[[Line], bool], timeout: float = WAIT_S, since: int = 0
    ) -> Line:
        """The first line from index ``since`` on satisfying ``predicate``; fails after
        ``timeout`` or at EOF."""
        deadline = time.monotonic() + timeout
        seen = since
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        why = "exited" if self._eof else f"printed nothing matching within {timeout:.0f} s"
        raise AssertionError(f"{self.label} {why}\n{self.describe()}")

    def has(self, predicate: Callable[[Line], bool]) -> bool:
        """Whether a line printed so far satisfies ``predicate``."""
        with self._cond:
            return any(predicate(line) for line in self.lines)

    def send(self, command: str) -> None:
        """Write one command line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = WAIT_S) -> int:
        """Ask for a clean stop (close stdin), wait for exit; kill if it does not come."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)
        finally:
            self._reader.join(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT_S)

    def stderr_text(self) -> str:
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        return self._stderr_file.read()

    def describe(self, tail: int = 30) -> str:
        with self._cond:
            lines = [json.dumps(line) for line in self.lines[-tail:]]
        return (
            f"--- last {len(lines)} lines of {self.label} (exit {self.proc.poll()}):\n"
            + "\n".join(lines)
            + f"\n--- stderr of {self.label}:\n{self.stderr_text()[-3000:]}"
        )
