"""Where a process's CPU time goes, from py-spy's sampling profiler: record, then summarise by category.

``recording(pid, output)`` runs ``py-spy record --format raw`` (folded stacks: one line per distinct
stack, ``frame;frame;...;leaf count``, each frame ``function (file:line)``) against a running process
until the block ends; py-spy is in the ``bench`` dependency group. py-spy leaves out threads it deems
idle, but it takes a thread blocked in ``queue.SimpleQueue.get`` (an idle hash thread) for a busy
one, and more so when it pauses the process for each sample (its default): with ``gil=True``
(``--gil``) only the thread holding the GIL is sampled, which is the Python work of the process
(argon2 releases the GIL, and so does waiting), and ``nonblocking=True`` leaves the process running.

``summarise(path)`` puts every sample into one category, by the innermost frame that belongs to a
known part (the frames that started the event loop, `uvicorn.run` among them, are left out first:
everything runs inside them). A sample whose innermost known frame is otpservice's own code stays
"our code"; one that ends in the event loop's own frames, or in the standard library under it,
is "event loop". It also ranks leaf functions by their own samples.

Run on its own: .venv/bin/python -m bench.cpu_profile FOLDED_FILE  (prints the summary of a recording)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# (category, substrings of a frame's file name), the first match wins: more specific parts first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("argon2", ("/argon2/", "_argon2_cffi_bindings")),
    ("Redis client (redis-py, hiredis)", ("/redis/", "/hiredis/")),
    ("Prometheus (prometheus_client)", ("/prometheus_client/",)),
    ("logging (structlog, logging, otpservice/logs.py)", ("/structlog/", "/logging/", "otpservice/logs.py")),
    (
        "HTTP server (uvicorn, httptools, otpservice/http/edge.py)",
        ("/uvicorn/", "/httptools/", "otpservice/http/edge.py"),
    ),
    ("Litestar routing, DI, request and response (litestar, msgspec)", ("/litestar/", "/msgspec/")),
    ("our code (otpservice/), other", ("/otpservice/",)),
]
EVENT_LOOP = "event loop (asyncio, uvloop)"
OTHER = "other (standard library, threads)"
_LOOP_FILES = ("/asyncio/", "/uvloop/")
# Frames that start the event loop: everything under the last of them is the loop's work.
_LOOP_ENTRY = re.compile(r"^(?:\w+\.)?(run|run_until_complete|run_forever|_run_once) \(.*/(asyncio|uvloop)/")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


@dataclass
class Profile:
    """A recording's samples by category and its leaf functions by own samples."""

    samples: int
    categories: dict[str, int]
    leaves: list[tuple[str, int]]  # "function (file)", own samples; most first
    rate: int = 0
    seconds: float = 0.0
    options: str = ""  # py-spy's options beyond the rate and format

    def share(self, category: str) -> float:
        return self.categories.get(category, 0) / self.samples if self.samples else 0.0


def py_spy_binary() -> str | None:
    """py-spy from the environment of this interpreter (the bench group), else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@contextlib.contextmanager
def recording(
    pid: int,
    output: Path,
    rate: int = 500,
    binary: str | None = None,
    nonblocking: bool = False,
    gil: bool = False,
) -> Iterator[list[str]]:
    """py-spy records ``pid`` while the block runs, then writes ``output``. Yields a list that holds
    py-spy's complaints (it could not attach, say) once the block ends; empty when it worked."""
    problems: list[str] = []
    binary = binary or py_spy_binary()
    if binary is None:
        problems.append("py-spy is not installed (it is in the bench dependency group)")
        yield problems
        return
    command = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    command += ["--full-filenames", "--output", str(output)]
    if nonblocking:
        command.append("--nonblocking")
    if gil:
        command.append("--gil")
    log = output.with_suffix(".log")
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stderr, stderr=stderr, start_new_session=True)  # noqa: S603
    try:
        time.sleep(0.5)  # attached, or failed to
        if process.poll() is not None:
            problems.append(f"py-spy exited at once ({process.returncode}): {_tail(log)}")
        yield problems
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if not problems and not output.exists():
            problems.append(f"py-spy wrote no profile ({process.returncode}): {_tail(log)}")


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace").strip()
    return " ".join(text.splitlines()[-3:])[:400] or "no output"


def category_of(stack: list[str]) -> str:
    """The category of one sample (frames outermost first)."""
    entry = max((n for n, frame in enumerate(stack) if _LOOP_ENTRY.match(frame)), default=-1)
    inside = stack[entry + 1 :]
    for frame in reversed(inside):
        file = _file(frame)
        for name, parts in CATEGORIES:
            if any(part in file for part in parts):
                return name
    if entry >= 0 or any(part in _file(frame) for frame in inside for part in _LOOP_FILES):
        return EVENT_LOOP
    return OTHER


def _file(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["file"] if match else frame


def _leaf(frame: str) -> str:
    """``function (file)`` with the file shortened to its package-relative path."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['function']} ({short_file(match['file'])})"


def short_file(path: str) -> str:
    for marker in ("/site-packages/", "/otpservice/", "/lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            if marker == "/otpservice/":
                return "otpservice/" + rest
            if marker == "/lib/python3.":
                return rest.split("/", 1)[1] if "/" in rest else rest
            return rest
    return path


def summarise(path: Path, top: int = 15) -> Profile:
    """Samples by category and the ``top`` leaf functions of a py-spy raw (folded) recording."""
    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        samples += count
        categories[category_of(stack)] += count
        leaves[_leaf(stack[-1])] += count
    ordered = dict(sorted(categories.items(), key=lambda item: -item[1]))
    return Profile(samples, ordered, leaves.most_common(top))


def print_profile(profile: Profile) -> None:
    print(f"{profile.samples} samples")
    for name, count in profile.categories.items():
        print(f"  {count / profile.samples:6.1%}  {name}")
    print("Leaf functions by own samples:")
    for leaf, count in profile.leaves:
        print(f"  {count / profile.samples:6.1%}  {leaf}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folded", type=Path, help="a py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print_profile(summarise(args.folded, args.top))


if __name__ == "__main__":
    main()
