"""Third-party libraries are quiet: their logging, warnings and prints go to the run's log file.

ONNX Runtime's calibrators print from Python, ORT and ExecuTorch print from C++ straight to file
descriptor 2, torch.export logs through `logging` ("torchvision is not installed"), and pytree code
raises FutureWarnings. Inside `quiet(...)`:

- Python `logging` (every library logger) goes to the log file only: the root logger gets one file
  handler, and library loggers' own stream handlers are detached for the duration;
- `warnings` are captured into logging (logging.captureWarnings), so they land in the same file;
- sys.stdout / sys.stderr (Python prints) are the log file;
- file descriptors 1 and 2 are dup2'ed onto the log file, so C/C++ prints land there too.

optkit's own output is written through the `Terminal` streams, which are duplicates of the real
stdout/stderr taken before the redirection. With `verbose`, nothing is redirected: library output
reaches the terminal as it would without optkit, and logging and warnings also go to the file.

The log starts in optkit's cache (`<cache>/logs/`), because a run's folder does not exist until the
run has finished; `move_into(run_dir)` appends it to `runs/<id>/logs/optkit.log` afterwards.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, TextIO

RUN_LOG = Path("logs") / "optkit.log"


@dataclasses.dataclass
class Terminal:
    """Where optkit's own output goes while libraries are redirected, and the log that holds theirs."""
    out: TextIO
    err: TextIO
    log_path: Path

    def move_into(self, run_dir: Path | None) -> Path:
        """Append this command's library log to run_dir/logs/optkit.log; the log's final path."""
        if run_dir is None or not Path(run_dir).is_dir():
            with contextlib.suppress(OSError):  # nothing was said: no file left behind
                if self.log_path.stat().st_size == 0:
                    self.log_path.unlink()
            return self.log_path
        target = Path(run_dir) / RUN_LOG
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "ab") as dst, open(self.log_path, "rb") as src:
                dst.write(src.read())
            self.log_path.unlink(missing_ok=True)
            return target
        except OSError:  # an unwritable run folder keeps the log where it is
            return self.log_path


def _log_file() -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = Path(os.environ.get("OPTKIT_CACHE_DIR") or Path.home() / ".cache" / "optkit") / "logs"
    for folder in (root, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"libraries-{stamp}-{os.getpid()}-", suffix=".log", dir=folder)
            os.close(fd)  # unique: two commands in one second never share (or move) each other's log
            return Path(name)
        except OSError:
            continue
    return Path(os.devnull)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def _fd_redirect(target_fd: int, fds: tuple[int, ...]) -> Iterator[dict[int, int]]:
    """dup2 each fd onto target_fd; yields {fd: saved duplicate}; restores on exit."""
    saved: dict[int, int] = {}
    try:
        for fd in fds:
            try:
                saved[fd] = os.dup(fd)
            except OSError:  # a closed fd (a daemon, some CI runners): nothing to redirect
                continue
        yield saved
    finally:
        for fd, dup in saved.items():
            with contextlib.suppress(OSError):
                os.dup2(dup, fd)
                os.close(dup)


def _library_handlers() -> list[tuple[logging.Logger, logging.Handler]]:
    """Stream handlers that libraries attached to their own loggers (torch, nncf, INC): detached while quiet."""
    found = []
    for logger in [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                           if isinstance(lg, logging.Logger))]:
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                found.append((logger, h))
    return found


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[Terminal]:
    """Route library output into a log file for the duration (see the module docstring)."""
    path = _log_file()
    log_fh = open(path, "a", encoding="utf-8", buffering=1)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    detached = [] if verbose else _library_handlers()
    for logger, h in detached:
        logger.removeHandler(h)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    real_out, real_err = sys.stdout, sys.stderr
    opened: list[TextIO] = []
    try:
        with warnings.catch_warnings():
            # every warning once per place, into the log; a library's own "ignore" filters still apply after ours
            warnings.simplefilter("default")
            if verbose:  # logging and warnings reach the log through the root handler; the terminal too
                shown = logging.StreamHandler(real_err)
                shown.setLevel(logging.WARNING)
                root.addHandler(shown)
                try:
                    yield Terminal(real_out, real_err, path)
                finally:
                    root.removeHandler(shown)
                return
            sys.stdout.flush(), sys.stderr.flush()
            # fds 1 and 2 always: C++ prints go there even when sys.stdout is an in-process test buffer
            with _fd_redirect(log_fh.fileno(), (1, 2)) as saved:
                # optkit's terminal: a duplicate of the real fd when the stream has one, else the stream itself
                # (an in-process test runner's buffers have no fd and are not touched by dup2)
                def term(stream) -> TextIO:
                    fd = _fileno(stream)
                    if fd is None or fd not in saved:
                        return stream
                    f = os.fdopen(os.dup(saved[fd]), "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                                  buffering=1)
                    opened.append(f)
                    return f

                terminal = Terminal(term(real_out), term(real_err), path)
                for fd in saved:
                    os.dup2(log_fh.fileno(), fd)
                sys.stdout = sys.stderr = log_fh
                try:
                    yield terminal
                finally:
                    sys.stdout, sys.stderr = real_out, real_err
                    log_fh.flush()
                    for f in opened:
                        with contextlib.suppress(OSError, ValueError):
                            f.flush()
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        for logger, h in detached:
            logger.addHandler(h)
        for logger, h in _library_handlers():  # handlers a library made while quiet point at the closed log
            if getattr(h, "stream", None) is log_fh:
                h.setStream(sys.__stderr__)
        for f in opened:
            with contextlib.suppress(OSError, ValueError):
                f.close()
        log_fh.close()
