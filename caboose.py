"""caboose: a script's state, kept in a comment block at the end of the script itself.

The block starts at the last line of the file that is exactly "# /// caboose" and runs to the
end of the file, with no closing line. Every line after that mark is "# KEY = VALUE" in ASCII:
KEY a dotted name, VALUE ascii(value) of a literal that reads back as an equal value. A later
line for a key wins. A write appends one line under flock (the first, the mark too), so a kill
can only cut the last line short: such a line is ignored, and the next write truncates it.
Any other line after the mark is an error. A compaction writes the code and one line a key
beside the script, fsyncs it and renames it over the script. POSIX only: it needs fcntl.
"""

import atexit
import os
import sys
from _thread import RLock
from fcntl import LOCK_EX, LOCK_UN, flock
from opcode import opname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MARK = "# /// caboose"
COMPACT_AFTER = 1 << 16  # superseded bytes (and half the file) that start a compaction
_FLAG_BIT = {"LOAD_GLOBAL": sys.version_info >= (3, 11), "LOAD_ATTR": sys.version_info >= (3, 12)}


class CabooseError(Exception):
    """Any caboose failure; the message names the file and the line."""

    def __init__(self, where: "str | Any", what: object) -> None:
        if not isinstance(where, str):  # a frame: its line is looked up only for a message
            where = f"{where.f_code.co_filename}:{where.f_lineno}"
        super().__init__(f"caboose: {where}: {what}")


# -- values: literals whose ascii() reads back as an equal value ------------------------------
_PLAIN = {int, float, str, bytes, bool, type(None)}  # their ascii() reads back exactly
_NAMES = dict(nan=float("nan"), inf=float("inf"), set=set, frozenset=frozenset, complex=complex)


def _read(text: str, where: str) -> "Any":  # in a namespace of _NAMES only: no builtins
    try:
        return eval(text, {"__builtins__": {}, **_NAMES})  # (a fresh one: a := cannot change it)
    except Exception as error:
        raise CabooseError(where, f"cannot read {text[:40]!r}: {error!r}") from None


def _text(value: "Any", where: "str | Any") -> str:
    """ascii(value), if reading it gives back an equal value of the same type."""
    try:
        text = ascii(value)
        if type(value) in _PLAIN:
            return text
        back = _read(text, where)  # an equal value, or for a nan (never equal) the same text
        if type(back) is type(value) and (back == value or "nan" in text and ascii(back) == text):
            return text
    except Exception:  # too long for str(), too deep for the parser, a name it does not have
        pass
    what = f"cannot store this {type(value).__name__}: only literals that read back equal"
    raise CabooseError(where, f"{what} (a datetime as its isoformat(), a deque as a list)")


def _is_key(key: object) -> bool:  # a dotted name in ASCII: "hits", "self.hits"
    return isinstance(key, str) and key.isascii() and all(map(str.isidentifier, key.split(".")))


# -- the trailer parser ------------------------------------------------------------------------
def _parse(data: bytes, path: str) -> "tuple[int, int, int, dict[str, tuple[int, str]]]":
    """The block: its offset, its line, where the next line goes (before a last line a kill cut
    short), and its records: key -> (its line, its value's text). No block: (end, 0, end, {})."""
    start = max(data.rfind(f"\n{MARK}\n".encode()), data.rfind(f"\n{MARK}\r\n".encode())) + 1
    if not start:
        return len(data), 0, len(data), {}
    first = data.count(b"\n", 0, start) + 1
    lines = data[start:].split(b"\n")  # the mark, the records, and what follows the last "\n"
    records = {}
    for number, line in enumerate(lines[1:-1], first + 1):
        key, equals, text = line.rstrip(b"\r").decode("latin-1")[2:].partition(" = ")
        if line[:2] != b"# " or not (equals and _is_key(key) and text.strip() and line.isascii()):
            raise CabooseError(f"{path}:{number}", "expected '# KEY = VALUE' in ASCII")
        records[key] = (number, text)
    if lines[-1] and not _is_cut(lines[-1].decode("latin-1")):
        raise CabooseError(f"{path}:{first + len(lines) - 1}", "expected '# KEY = VALUE' in ASCII")
    if data.find(b"'''", start) >= 0 or data.find(b'"""', start) >= 0:  # a string's end?
        try:  # then the code above the mark must compile: else the mark is inside a string
            compile(data[:start], path, "exec", dont_inherit=True)
        except Exception:
            raise CabooseError(f"{path}:{first}", "this mark is inside a string") from None
    return start, first, len(data) - len(lines[-1]), records


def _is_cut(line: str) -> bool:
    """Could this last line, with no newline, be one a kill cut short ("# ke", "# key = 1")?"""
    key, _, rest = line[2:].partition(" ")
    start = line[:2] in ("#", "# ") and _is_key(key + "x") and rest[:1] in ("", "=")
    return start and line.isascii() and line.isprintable()  # a key or its start, then " = ..."


# -- the script file: read, lock, append, compact --------------------------------------------
class _Script:
    """One script file: its block as last read, the values in use, and the locks on it."""

    def __init__(self, path: str) -> None:
        self.path, self.fd = path, -1  # (no file open to write yet)
        self.wrote = False  # (no line appended by this process yet: no compaction at exit)
        self.mutex = RLock()  # this process's lock among its threads
        self.records: dict[str, tuple[int, str]] = {}  # key -> (its line, its value's text)
        self.values: dict[str, Any] = {}  # key -> its value, as read, written or defaulted
        with open(path, "rb") as file:
            self.load(file.fileno())
        os.register_at_fork(after_in_child=self.forked)
        atexit.register(self.finish)

    def forked(self) -> None:  # in a forked child, before it can have other threads
        if self.fd >= 0:  # (its copy of the parent's open file would keep the parent's lock)
            os.close(self.fd)
        self.mutex, self.fd = RLock(), -1  # its own lock among its threads, and its own file

    def load(self, fd: int) -> bytes:
        """Read the file: its block, and each value whose line changed since the last read."""
        self.size = -1  # until this load is done: one that an error cut short is done again
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        if not data:
            raise CabooseError(f"{self.path}:1", "the script is empty (an editor saving it?)")
        self.start, self.line, self.end, records = _parse(data, self.path)
        for key, (number, text) in records.items():
            if text != self.records.get(key, (0, None))[1]:  # each read once: a bad one stops
                self.values[key] = _read(text, f"{self.path}:{number}")
        self.records = records
        live = sum(len(f"# {key} = {text}\n") for key, (_, text) in records.items())
        self.dead = self.end - self.start - len(MARK) - 1 - live if self.line else 0
        self.head = "" if self.line else ("" if data.endswith(b"\n") else "\n") + MARK + "\n"
        self.size = len(data) if self.end == len(data) else -1  # a cut line: always reread
        return data

    def write(self, where: "Any", key: "str | None", change: "Any", new: "Any" = None) -> "Any":
        """Under both locks, store change(the latest value) or new as key's value, or compact."""
        if self.mutex._is_owned():  # a signal handler, or update()'s function, mid-write
            raise CabooseError(where, "a write began inside another write of the file")
        with self.mutex:  # (a with: no interrupt comes between taking it and the try)
            try:
                while True:  # flock the file that has the script's name now
                    if self.fd < 0:
                        self.fd, self.size = os.open(self.path, os.O_RDWR), -1
                    flock(self.fd, LOCK_EX)
                    stat = os.fstat(self.fd)
                    if stat.st_nlink:  # 0: a compaction renamed another file over this one
                        break
                    fd, self.fd = self.fd, -1
                    os.close(fd)  # (which lets go of its lock: a forked child closed its copy)
                if stat.st_size != self.size:  # another process wrote, or an editor saved
                    self.load(self.fd)
                if key is None:
                    return self.compact()
                value = change(self.values[key]) if change else new
                text = _text(value, where)
                line = f"{self.head}# {key} = {text}\n".encode()
                if self.end < stat.st_size:
                    os.ftruncate(self.fd, self.end)  # a last line that a kill cut short
                if os.pwrite(self.fd, line, self.end) < len(line):
                    os.ftruncate(self.fd, self.end)  # a full disk: no part of it stays
                    raise OSError(28, "No space left on device")
                self.values[key] = value  # (then the state that says it is written)
                old = self.records.get(key)
                self.dead += len(f"# {key} = {old[1]}\n") if old else 0
                self.records[key], self.head = (0, text), ""
                self.wrote = True
                self.end = self.size = self.end + len(line)  # (last: if interrupted, reread)
                if self.dead > COMPACT_AFTER and self.dead > self.size // 2:
                    try:  # the value is stored: a compaction that fails waits for the exit
                        self.compact()
                    except (OSError, CabooseError):
                        pass
                return value
            except OSError as error:
                raise CabooseError(where, f"cannot write {self.path}: {error}") from None
            finally:
                if self.fd >= 0:
                    flock(self.fd, LOCK_UN)

    def compact(self) -> None:
        """Write the code and the live records beside the script, fsync, and rename it over."""
        data = self.load(self.fd)  # under the lock, so an editor's save is kept
        if self.dead <= 0:
            return
        block = "".join(f"# {key} = {text}\n" for key, (_, text) in self.records.items())
        data = data[: self.start] + f"{MARK}\n{block}".encode()
        stat, temp = os.fstat(self.fd), f"{self.path}.caboose-tmp"
        try:
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                os.chmod(temp, stat.st_mode & 0o7777)
                os.fsync(file.fileno())  # on disk before its name replaces the script's
            if os.stat(self.path).st_ino != stat.st_ino:  # an editor saved by a rename
                raise CabooseError(f"{self.path}:{self.line}", "the script was replaced")
            os.replace(temp, self.path)  # writers waiting on the old file find it renamed
        except BaseException:  # the script is as it was, and as this process last read it
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        fd, self.fd = self.fd, -1  # the next write opens the new file (a hard link may keep
        os.close(fd)  # the old one alive), and closing this one lets go of its lock
        self.dead = 0

    def finish(self) -> None:  # at exit: compact the block if this process wrote superseded lines
        try:
            if self.dead > 0 and self.wrote:
                self.write(f"{self.path}:{self.line}", None, None)
        except CabooseError as error:
            print(error, file=sys.stderr)


# -- frame inspection: the key is the name the Value is stored in ----------------------------
def _target(code: "Any", offset: int) -> str:
    """The name the bytecode after the call at offset stores the new Value in, or "?"."""
    raw, parts, extend = code.co_code, [], 0
    cells = code.co_cellvars + code.co_freevars  # (3.11+: cells are in the locals' slots)
    local = getattr(code, "_varname_from_oparg", code.co_varnames.__getitem__)
    shared = getattr(code, "_varname_from_oparg", cells.__getitem__)
    for at in range(offset + 2, len(raw), 2):
        op, arg, extend = opname[raw[at]], raw[at + 1] | extend, 0
        if op in ("STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST"):  # (3.13: two in one)
            op, arg = "STORE_FAST", arg >> 4
        name = shared if "DEREF" in op else local if "FAST" in op else code.co_names.__getitem__
        if op == "EXTENDED_ARG":
            extend = arg << 8
        elif op in "LOAD_NAME LOAD_GLOBAL LOAD_FAST LOAD_FAST_CHECK LOAD_DEREF LOAD_ATTR".split():
            parts.append(str(name(arg >> _FLAG_BIT.get(op, False))))  # self.hits, state.hits
        elif op in ("STORE_NAME", "STORE_FAST", "STORE_DEREF", "STORE_GLOBAL", "STORE_ATTR"):
            return (
                ".".join(parts + [str(name(arg))]) if (op == "STORE_ATTR") == bool(parts) else "?"
            )
        elif op != "CACHE" and (op not in ("DUP_TOP", "COPY") or parts):  # inline caches
            return "?"  # (3.11+) are skipped, and the copy made for a = b = Value(0)
    return "?"


# -- Value -------------------------------------------------------------------------------------
_scripts: "dict[str, _Script]" = {}  # a file's real path, and each name code gives it -> its own


class Value:
    """A value kept in the block at the end of the file whose code creates it."""

    def __init__(self, default: "Any", key: "str | None" = None) -> None:
        frame = sys._getframe(1)
        code, offset, path = frame.f_code, frame.f_lasti, frame.f_code.co_filename
        try:
            if path[:1] + path[-1:] == "<>":  # "<stdin>", "<string>": no file of that name
                raise FileNotFoundError(f"{path} is not a file")
            script = _scripts.get(path) or _Script(os.path.realpath(path))
        except OSError as error:
            raise CabooseError(frame, f"a Value needs a source file: {error}") from None
        self._script = script = _scripts.setdefault(path, _scripts.setdefault(script.path, script))
        self.key = _target(code, offset) if key is None else key
        if not _is_key(self.key):
            raise CabooseError(frame, f"no key {self.key!r}: pass key='name'")
        script.values.setdefault(self.key, default)  # a stored value was read with the block

    @property
    def value(self) -> "Any":
        """The current value; assigning to it writes it to the file at once."""
        return self._script.values[self.key]

    @value.setter
    def value(self, new: "Any") -> None:
        self._script.write(sys._getframe(1), self.key, None, new)

    def update(self, change: "Callable[[Any], Any]") -> "Any":
        """Store change(the latest stored value) under the lock, across processes; return it."""
        return self._script.write(sys._getframe(1), self.key, change)

    def __repr__(self) -> str:
        return f"Value({self.key!r}, {self.value!r})"

    def __bool__(self) -> bool:
        return bool(self.value)


# -- command line and self-test --------------------------------------------------------------
def main() -> int:
    """python caboose.py --selftest: count this run in this file's own block, read it back."""
    try:
        runs = Value(0)
        runs.value += 1
        counted = _Script(os.path.realpath(__file__)).values.get("runs") == runs.value
    except CabooseError as error:
        print(f"caboose selftest: ok (this run was not counted: {error})")
        return 0
    print(f"caboose selftest: {'ok' if counted else 'FAILED'} (run {runs.value})")
    return 0 if counted else 1


if __name__ == "__main__":
    sys.exit(main())
# /// caboose
# runs = 0
