"""The C compiler and the compiled engine's library cache: the one place that knows the compiler.
compiled.py writes the C and computes each network's key; this module turns that C into a loaded
library, once per key and machine.

find_compiler() reads $CC as autotools does, a command split into words like a shell's ("gcc -m64",
"ccache gcc"): its first word must name a program on the PATH (or be a path to one), else CC is
refused (the user asked for that compiler); the other words go before FLAGS on the command line.
Without CC it takes the first of cc, gcc and clang. A compiler is that command as a tuple of words,
the program resolved: ("/usr/bin/gcc", "-m64"). Libraries are built with FLAGS (-O3 -march=native
-pthread; PORTABLE_FLAGS when the compiler knows no -march=native) and cached as
<cache_dir()>/<key>.so, the C source beside it; identity(compiler) is what the key takes from here
(the whole command, each program in it by resolved path, size and mtime, FLAGS and the CPU's
feature flags). A library exports `const char *dwn_key(void)`, the key it was built for, checked on
load. A cache folder that cannot be written (or whose library does not load) gives way to a private
temporary folder for this process, after one warning naming DWN_CACHE_DIR; RunError when no folder
can hold the library or the build fails, and a failed build is not retried in this process.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from .. import console
from ..errors import DWNError, RunError, os_reason

FLAGS = ("-std=gnu11", "-O3", "-march=native", "-pthread", "-shared", "-fPIC")
PORTABLE_FLAGS = tuple(f for f in FLAGS if f != "-march=native")  # when the compiler knows no -march=native
_LIBRARIES: dict = {}  # key -> ctypes library, loaded once per process
_FAILED: dict = {}  # key -> the RunError of its failed build
_WARNED: set = set()
_TEMPORARY: dict = {}  # "folder" -> this process's private fallback folder, made on first need


def warn_once(message: str) -> None:
    """One warning line per message and process (the engine's fallbacks are noticed, not repeated)."""
    if message not in _WARNED:
        _WARNED.add(message)
        console.log.warning(message)


def find_compiler() -> tuple[str, ...] | None:
    """The C compiler command: $CC's words, the first resolved on the PATH (DWNError when it names no
    program), else the first of cc, gcc, clang on the PATH, else None."""
    wanted = os.environ.get("CC", "").strip()
    if wanted:
        try:
            words = shlex.split(wanted)
        except ValueError as exc:  # an unclosed quote
            raise DWNError(f"CC={wanted} cannot be split into words ({exc}); quote it as a shell would, or "
                           "unset CC to let the packed engine use cc, gcc or clang.") from None
        path = shutil.which(words[0]) if words else None
        if path is None:
            first = f" (its first word, {words[0]}, is the program)" if len(words) > 1 else ""
            raise DWNError(f"CC={shlex.quote(wanted)} names no compiler on the PATH{first}; install it, or unset "
                           "CC to let the packed engine use cc, gcc or clang.")
        return (path, *words[1:])
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return (path,)
    return None


def cache_dir() -> Path:
    """$DWN_CACHE_DIR, else $XDG_CACHE_HOME/dwn-train, else ~/.cache/dwn-train; compiled/ inside."""
    if os.environ.get("DWN_CACHE_DIR"):
        return Path(os.environ["DWN_CACHE_DIR"]) / "compiled"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dwn-train" / "compiled"


@cache
def _machine() -> str:
    """What -march=native depends on: the architecture and, on Linux, the CPU's feature flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + " " + flags.strip()


def identity(compiler: tuple[str, ...]) -> bytes:
    """What a library depends on besides its C: the compiler command, word for word; each program in
    it (the first word, and a word a wrapper such as ccache runs) by resolved path, size and mtime;
    FLAGS; the CPU."""
    programs = [compiler[0]] + [shutil.which(word) for word in compiler[1:] if not word.startswith("-")]
    found = []
    for real in (os.path.realpath(program) for program in programs if program):
        info = os.stat(real)
        found.append(f"{real} {info.st_size} {info.st_mtime_ns}")
    return repr((compiler, found, FLAGS, _machine())).encode()


def shown(compiler: tuple[str, ...]) -> str:
    """The compiler command as one would type it."""
    return shlex.join(compiler)


class _Unusable(Exception):
    """A folder that cannot hold or load the engine; the message says why, in a few words."""


def _compile(text: str, compiler: tuple[str, ...], target: Path) -> None:
    """Build `text` into the shared library `target` (written under a temporary name, then renamed,
    so that concurrent processes never load half a file). Raises RunError with the compiler's words,
    _Unusable when target's folder cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, lib = Path(tmp) / "dwn_engine.c", Path(tmp) / "engine.so"
            src.write_text(text)
            for flags in (FLAGS, PORTABLE_FLAGS):  # not every compiler knows -march=native
                try:
                    result = subprocess.run([*compiler, *flags, "-o", str(lib), str(src)], capture_output=True,
                                            text=True, check=False)
                except OSError as exc:
                    raise RunError(f"{shown(compiler)} does not run ({exc})") from exc
                if result.returncode == 0:
                    os.replace(src, target.with_suffix(".c"))  # kept beside the library, for reading
                    os.replace(lib, target)
                    return
    except OSError as exc:
        raise _Unusable(f"{os_reason(exc)}: {exc.filename or target.parent}") from exc
    first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()[:200])
    raise RunError(f"{shown(compiler)} could not build the compiled engine ({first})")


def _load(key: str, compiler: tuple[str, ...], source: Callable[[], str], folder: Path):
    """The library <folder>/<key>.so, built there from source() first when absent. Raises _Unusable
    when the folder cannot be written or its library does not load, RunError when the build fails."""
    path = folder / f"{key}.so"
    try:
        present = path.is_file()
    except OSError as exc:
        raise _Unusable(f"{os_reason(exc)}: {path}") from exc
    if not present:
        _compile(source(), compiler, path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise _Unusable(f"{path} does not load: {os_reason(exc)}; delete it to rebuild") from exc
    lib.dwn_key.restype = ctypes.c_char_p
    if lib.dwn_key().decode() != key:
        raise _Unusable(f"{path} was built for another network; delete it to rebuild")
    return lib


def _temporary_folder() -> Path:
    """This process's private folder (mode 0700, removed at exit) for when the cache cannot be used;
    _Unusable when none can be made."""
    if "folder" not in _TEMPORARY:
        try:
            folder = tempfile.mkdtemp(prefix="dwn-engine-")
        except OSError as exc:
            raise _Unusable(f"{os_reason(exc)}: {exc.filename or tempfile.gettempdir()}") from exc
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _TEMPORARY["folder"] = Path(folder)
    return _TEMPORARY["folder"]


def _cached_or_temporary(key: str, compiler: tuple[str, ...], source: Callable[[], str]):
    """The library from the cache folder, else (after one warning naming DWN_CACHE_DIR) from a
    temporary folder; RunError when neither can hold it or the build fails."""
    folder = cache_dir()
    try:
        return _load(key, compiler, source, folder)
    except _Unusable as exc:
        problem = str(exc)
    try:
        lib = _load(key, compiler, source, _temporary_folder())
    except _Unusable as exc:
        raise RunError(f"the compiled engine can be built in neither its cache folder {folder} ({problem}) nor a "
                       f"temporary folder ({exc}); set DWN_CACHE_DIR to a writable folder") from None
    warn_once(f"The compiled engine's cache folder {folder} cannot be used ({problem}), so it was built in a "
              "temporary folder that this process removes at exit; set DWN_CACHE_DIR to a writable folder to "
              "keep it between runs.")
    return lib


def load(key: str, compiler: tuple[str, ...], source: Callable[[], str]):
    """The library for `key` as a loaded ctypes library: from this process's memo, the disk cache (or
    a temporary folder), or built now from source() (called only then). RunError when the build
    fails or no folder can hold it, again for the same key without retrying."""
    if key in _FAILED:
        raise _FAILED[key]
    if key not in _LIBRARIES:
        try:
            _LIBRARIES[key] = _cached_or_temporary(key, compiler, source)
        except RunError as exc:
            _FAILED[key] = exc
            raise
    return _LIBRARIES[key]
