"""openflash's errors, when nothing catches them, printed short: the traceback up to the user's
own line, then the message with its caret and hint.

A bad value in a decorator or a config (a spec such as ``"pandas=2.2.3"``, an unknown apt name, a
field out of range) raises openflash's error from deep inside openflash, often with the library's
own error (packaging's, pydantic's) as its ``__cause__``: Python would print about 50 lines of
frames that are not the user's before the one message that matters. ``install`` (done when
openflash is imported) wraps ``sys.excepthook`` so that an uncaught ``FlashError`` is printed as
the frames that lead to it up to the last of the user's own (the decorator's line, the awaited
call), the error's message and its hint, and one line saying how to see the rest. The library
detail stays in ``__cause__``; FLASH_VERBOSE=1 prints everything as Python would. A Ctrl-C
(KeyboardInterrupt) while openflash builds or runs calls is one line saying what was stopped
(runtime/stopping.py), its commands killed. Other exceptions go to the hook that was there
before, unchanged.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from pathlib import Path
from types import TracebackType

from openflash import _subprocess
from openflash.errors import FlashError
from openflash.runtime import process
from openflash.runtime.stopping import stop_line

__all__ = ["install", "short_report"]

#: Where openflash's own frames come from: the package and its compatibility package.
_OURS = (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "runpod_flash")
#: Frames from here (the standard library, installed packages) are nobody's own line.
_LIBRARIES = tuple(
    Path(p).resolve()
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def install() -> None:
    """Wrap ``sys.excepthook`` (once) so that uncaught FlashErrors print short."""
    previous = sys.excepthook
    if getattr(previous, "_openflash", False):
        return

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        short = None
        if isinstance(error, FlashError) and not _verbose():
            short = short_report(error, tb)
        elif isinstance(error, KeyboardInterrupt):  # Ctrl-C while openflash was busy: one line
            line = stop_line(process.current(), "Ctrl-C")
            _subprocess.stop_all()
            short = f"{line}\n" if line else None  # nothing of ours ran: Python's own report
        if short is None:
            previous(kind, error, tb)
        else:
            sys.stderr.write(short)
            sys.stderr.flush()

    hook._openflash = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def short_report(error: FlashError, tb: TracebackType | None) -> str | None:
    """The short text for ``error`` raised through ``tb``: the frames from the user's first one
    to the user's last one before openflash's, then the error. None when no frame of the user's
    leads to it (an error inside openflash itself: the full traceback says more)."""
    frames = traceback.extract_tb(tb)
    start = next((i for i, f in enumerate(frames) if _users(f.filename)), None)
    if start is None:
        return None
    first_ours = next(
        (i for i, f in enumerate(frames) if i > start and _ours(f.filename)), len(frames)
    )
    last_user = max(i for i in range(start, first_ours) if _users(frames[i].filename))
    kept = traceback.StackSummary.from_list(frames[start : last_user + 1])
    trimmed = len(frames) - len(kept) + (error.__cause__ is not None)
    header = "Traceback (most recent call last"
    if trimmed:  # said first, so that the hint stays the last line
        header += "; openflash's own frames left out, FLASH_VERBOSE=1 shows them"
    lines = [f"{header}):\n", *kept.format()]
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines)


def _verbose() -> bool:
    return os.environ.get("FLASH_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def _ours(filename: str) -> bool:
    return _under(filename, _OURS)


def _users(filename: str) -> bool:
    """A frame of the user's code: a real file, neither openflash's nor a library's."""
    if filename.startswith("<") or _ours(filename):
        return False
    return not _under(filename, _LIBRARIES)


def _under(filename: str, folders: tuple[Path, ...]) -> bool:
    try:
        path = Path(filename).resolve()
    except OSError:
        return False
    return any(path.is_relative_to(folder) for folder in folders)
