"""Keep TensorFlow's native start-up log lines off the terminal.

TensorFlow's C++ libraries write lines such as ``I0000 00:00:... port.cc:153]
oneDNN custom operations are on`` and ``E0000 ... failed call to cuInit``
straight to file descriptor 2, before ``absl::InitializeLog`` runs, so
``TF_CPP_MIN_LOG_LEVEL`` cannot silence them (measured with TF 2.20). The
CLI therefore routes descriptor 2 through a pipe whose reader thread drops
lines in the native log format and forwards everything else (Python
warnings, tracebacks, progress bars) unchanged. ``detect --verbose`` keeps
them.
"""

from __future__ import annotations

import os
import re
import sys
import threading

#: absl / glog line prefixes: severity letter, MMDD, time, thread id, file:line]
_NATIVE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                     rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-]+:\d+\])")
_MAYBE_NATIVE = re.compile(rb"^(W(A(R(N(I(N(G(:.*)?)?)?)?)?)?)?|[IWEF]\d{0,4}( .*)?)$", re.DOTALL)


class NativeLogFilter:
    """Context manager: while active, native log lines on fd 2 are dropped (counted in ``dropped``)."""

    def __init__(self):
        self.dropped = 0
        self._saved = None
        self._thread = None

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
        self._thread.start()
        return self

    def _pump(self, read_end: int) -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = []
                for line in lines:
                    if _NATIVE.match(line):
                        self.dropped += 1
                    else:
                        out.append(line + b"\n")
                # a partial line (a progress bar, a prompt) goes out now unless it may
                # still become a native log line
                if pending and not _MAYBE_NATIVE.match(pending[:40]):
                    out.append(pending)
                    pending = b""
                if out:
                    os.write(self._saved, b"".join(out))
            if pending and not _NATIVE.match(pending):
                os.write(self._saved, pending)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the reader drains and stops
        self._thread.join(timeout=5)
        os.close(self._saved)
        return False
