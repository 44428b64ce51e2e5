"""caboose: a script's state, kept in a comment block at the end of the script itself.

The block is the last line "# /// caboose", then lines "# KEY = VALUE" in ASCII (a later one
wins; VALUE is ascii(value) where that reads back the same, else pickle('BASE64')) or comments,
then "# ///". An update is one write under flock that crosses that "# ///" out as "# ###" and
adds its line and a new "# ///": killed at any instant, it leaves a script that compiles.
"""

import _operator
import atexit
import os
import sys
from _thread import RLock
from fcntl import LOCK_EX, LOCK_UN, flock
from opcode import opname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

SYNC = False  # True: fsync each update, not only each compaction
MARK, CLOSE = "# /// caboose", "# ///"
COMPACT_AFTER = 1 << 18  # dead bytes in the block (and half the file) that start a compaction
_forked = RLock()  # held while a forked child makes its own locks for a file


class CabooseError(Exception):
    """Any caboose failure; the message names the file and, where known, the line."""

    def __init__(self, where: "str | Any", what: object) -> None:
        if not isinstance(where, str):  # a frame: its line is looked up only for a message
            where = f"{where.f_code.co_filename}:{where.f_lineno}"
        super().__init__(f"caboose: {where}: {what}")


# -- values: ascii() where it reads back the same, else pickle --------------------------------
def _unpickle(text: str) -> "Any":
    import binascii
    import pickle

    return pickle.loads(binascii.a2b_base64(text))


_PLAIN = {int, float, str, bytes, bool, type(None)}  # their ascii() reads back exactly
_NAMES = {"nan": float("nan"), "inf": float("inf"), "set": set, "frozenset": frozenset}
_NAMES.update(complex=complex, pickle=_unpickle)  # all a value may use: no builtins


def _read(text: str, where: str) -> "list[Any]":  # [value, its text as caboose writes it]
    try:
        value = eval(text, {"__builtins__": {}}, _NAMES)
    except Exception as error:
        raise CabooseError(where, f"cannot read {text[:40]!r}: {error!r}") from None
    return [value, _text(value, where)]


def _text(value: "Any", where: str) -> str:
    """ascii(value) if reading it gives back the same type and text (a set's items may come back
    in another order); else the value's pickle."""
    try:
        text = ascii(value)
        if type(value) in _PLAIN:
            return text
        back = eval(text, {"__builtins__": {}}, _NAMES)
        same = ascii(back) == text
        if type(value) in (set, frozenset):  # the same items, but maybe in another order
            same = sorted(map(ascii, back)) == sorted(map(ascii, value))
        if type(back) is type(value) and same:
            return text
    except Exception:  # too long for str(), too deep for the parser, a name it does not have
        pass
    import binascii
    import pickle

    try:
        return f"pickle({binascii.b2a_base64(pickle.dumps(value, 4), newline=False).decode()!r})"
    except Exception as error:
        raise CabooseError(where, f"cannot store a {type(value).__name__}: {error!r}") from None


def _is_key(key: object) -> bool:  # a dotted name in ASCII: "hits", "self.hits"
    return isinstance(key, str) and key.isascii() and all(map(str.isidentifier, key.split(".")))


# -- the trailer parser ------------------------------------------------------------------------
def _parse(data: bytes, path: str) -> "tuple[int, int, bool, dict[str, tuple[int, str]]]":
    """The real block: where it starts and ends, its closing line's offset (or -1), and its
    records (key -> its line, its value's text). No block starts and ends at the end of data."""
    start, mark = len(data), MARK.encode()
    while True:  # the last mark on a line of its own that Python reads as a comment
        start = data.rfind(mark, 0, start)
        if start < 0:
            return len(data), len(data), -1, {}
        lines = data[start:].splitlines(True)
        count = next((n for n, line in enumerate(lines) if line[:1] != b"#"), len(lines))
        closed = next((n for n in range(1, count) if lines[n].rstrip() == CLOSE.encode()), 0)
        end = start + sum(map(len, lines[: closed + 1 if closed else count]))
        quoted = any(q in data[max(start - 2, 0) : end] for q in (b"'''", b'"""', b"\\\n"))
        if lines[0].rstrip() != mark or data[start - 1 : start] not in (b"", b"\n", b"\r"):
            continue
        try:  # comments that end the file are no string; else the code before them compiles
            if closed and end == len(data) and not quoted or compile(data[:start], path, "exec"):
                break
        except Exception:
            pass
    first = data.count(b"\n", 0, start) + 1  # the mark's line
    if not closed and end < len(data):
        raise CabooseError(f"{path}:{first + count}", "expected '# ' lines up to '# ///'")
    body = lines[1 : closed or count]
    if body and not closed and not body[-1].endswith((b"\n", b"\r")):
        body.pop()  # an open block's last line, cut short by a crash
    records = {}
    for number, line in enumerate(body, first + 1):
        key, equals, text = (part.strip() for part in line[1:].decode("latin-1").partition("="))
        if (key[:1] == "#" or not key + equals) and line.isascii() and b"\0" not in line:
            continue  # a note, or a closing line crossed out
        if not equals or not _is_key(key) or line[:2] != b"# " or not line.isascii():
            raise CabooseError(f"{path}:{number}", "expected '# KEY = VALUE' in ASCII")
        records[key] = (number, text)
    for key, (number, text) in records.items():  # a value is read when a Value uses it; the
        try:  # syntax of each line that counts is checked now, so that a bad edit stops writes
            compile(text, f"{path}:{number}", "eval")
        except Exception as error:
            raise CabooseError(f"{path}:{number}", f"cannot read {key}: {error!r}") from None
    return start, end, start + sum(map(len, lines[:closed])) if closed else -1, records


# -- the script file: read, lock, append, compact --------------------------------------------
class _Script:
    """One script file: its block as last read, the values in use, and the locks on it."""

    def __init__(self, path: str) -> None:
        self.path, self.fd, self.links = path, -1, 1  # (no file open to write yet)
        self.pid, self.mutex = os.getpid(), RLock()  # this process's lock among its threads
        self.records: dict[str, tuple[int, str]] = {}  # key -> (its line, its value's text)
        self.values: dict[str, list[Any]] = {}  # key -> [value, its text when read or written]
        self.sites: dict[str, tuple[Any, int]] = {}  # derived key -> (code, offset) of its call
        with open(path, "rb") as file:
            self.load(file.fileno())

    def load(self, fd: int) -> None:
        """Read the file: its code, its records, and the values in use that another changed."""
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        if not data:
            raise CabooseError(self.path, "the script is empty (an editor saving it?)")
        start, end, closing, records = _parse(data, self.path)
        for key, (number, text) in records.items():
            if key in self.values and text != self.records.get(key, (0, None))[1]:
                self.values[key] = _read(text, f"{self.path}:{number}")
        nl = self.nl = "\r\n" if b"\r\n" in data[: data.find(b"\n") + 1] else "\n"
        self.code, self.records = data[:start] + data[end:], records
        lines = "".join(f"# {key} = {text}{nl}" for key, (_, text) in records.items())
        self.dead = end - start - len(f"{MARK}{nl}{lines}{CLOSE}{nl}")  # superseded lines
        self.joint = "" if self.code.endswith((b"\n", b"\r")) else nl  # a final newline, and a
        if (b"\n" + self.code + self.joint.encode()).endswith(f"\n# ///{nl}".encode()):  # blank
            self.joint += nl  # line after a PEP 723 block: a reader would run the two together
        self.cross = f"# ###{nl}"  # the closing line, crossed out
        self.head = self.cross if closing >= 0 else self.joint + MARK + nl  # before a record
        self.tail = closing if closing >= 0 else len(data)  # where the next record goes
        if end < len(data) or start < end and closing < 0:
            self.tail = -1  # code after the block, or a block cut short: a rewrite
        self.block = data[start : self.tail]  # as read, up to where this process appends
        self.size = len(data)  # (last: a load that an interrupt cut short is done again)

    def write(self, key: "str | None", change: "Callable | None", new: "Any" = None) -> "Any":
        """Under both locks, store change(the latest value) or new as key's value, or compact."""
        if self.pid != os.getpid():  # a forked child: its own thread lock and its own file
            with _forked:  # (only children take it: no fork finds it held)
                if self.pid != os.getpid():
                    self.mutex, self.fd, self.pid = RLock(), -1, os.getpid()
        if self.mutex._is_owned():  # a signal handler, or update()'s function, mid-write
            raise CabooseError(self.path, "a write began inside another write of the file")
        with self.mutex:  # (a with: no interrupt comes between taking it and the try)
            try:
                while True:  # flock the file that has the script's name now
                    if self.fd < 0:
                        self.fd, self.size = os.open(self.path, os.O_RDWR), -1
                    flock(self.fd, LOCK_EX)
                    stat = os.fstat(self.fd)  # renamed over, as by a compaction? (a hard link
                    linked = stat.st_nlink != 1 or self.links != 1  # keeps the old file alive)
                    if not linked or os.stat(self.path).st_ino == stat.st_ino:
                        break
                    fd, self.fd = self.fd, -1
                    flock(fd, LOCK_UN)
                    os.close(fd)
                self.links = stat.st_nlink
                if stat.st_size != self.size:  # another process wrote, or an editor saved
                    self.load(self.fd)
                if key is None:
                    return self.compact({})
                value = change(self.values[key][0]) if change else new
                text, nl = _text(value, self.path), self.nl
                if self.tail < 0 or self.dead > COMPACT_AFTER and self.dead > self.size // 2:
                    self.compact({key: (0, text)})  # the block rewritten, with this record
                    self.values[key] = [value, text]
                    return value
                data = f"{self.head}# {key} = {text}{nl}{CLOSE}{nl}".encode()
                self.dead += len(data) if self.head == self.cross else 0  # (a new block: 0)
                if os.pwrite(self.fd, data, self.tail) < len(data):  # one write: whatever
                    raise OSError(28, "No space left on device")  # lands of it is comments
                if SYNC:
                    os.fsync(self.fd)
                self.values[key] = [value, text]  # (then the state that says it is written)
                self.records[key], self.head = (0, text), self.cross
                self.tail += len(data) - len(CLOSE + nl)
                self.size = self.tail + len(CLOSE + nl)  # (last: if interrupted, reread)
                return value
            except OSError as error:
                raise CabooseError(self.path, f"cannot write: {error}") from None
            finally:
                if self.fd >= 0:
                    flock(self.fd, LOCK_UN)

    def compact(self, pending: "dict[str, tuple[int, str]]") -> None:
        """Write the code and the live records beside the script, fsync, and rename it over."""
        if os.pread(self.fd, len(self.code + self.block), 0) != self.code + self.block:
            self.load(self.fd)  # an editor saved it in place, keeping its size: read it again
        self.records.update(pending)
        block = "".join(f"# {key} = {text}{self.nl}" for key, (_, text) in self.records.items())
        data = self.code + f"{self.joint}{MARK}{self.nl}{block}{CLOSE}{self.nl}".encode()
        stat, temp = os.fstat(self.fd), f"{self.path}.caboose-tmp"
        try:
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                os.chmod(temp, stat.st_mode & 0o7777)
                os.fsync(file.fileno())  # on disk before its name replaces the script's
            if os.stat(self.path).st_ino != stat.st_ino:  # an editor saved by a rename
                raise CabooseError(self.path, "the script was replaced while it was compacted")
            os.replace(temp, self.path)  # writers waiting on the old file find it renamed
        except BaseException:
            self.size = -1  # the script is as it was: read it again before the next write
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        self.dead = 0


# -- frame inspection: the key is the name the Value is stored in ----------------------------
def _target(code: "Any", offset: int) -> str:
    """The name the bytecode after the call at offset stores the new Value in, or "?"."""
    raw, parts, extend = code.co_code, [], 0
    for at in range(offset + 2, len(raw), 2):
        op, arg, extend = opname[raw[at]], raw[at + 1] | extend, 0
        names = code.co_varnames if "FAST" in op else code.co_names
        if op in ("STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST"):  # (3.13: two in one)
            op, arg = "STORE_FAST", arg >> 4
        if op == "STORE_DEREF" and not parts:  # a variable that an inner function uses
            if hasattr(code, "_varname_from_oparg"):  # (3.11+: cells share the locals' slots)
                return str(code._varname_from_oparg(arg))
            return str((code.co_cellvars + code.co_freevars)[arg])
        if op == "EXTENDED_ARG":
            extend = arg << 8
        elif op in ("LOAD_NAME", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_ATTR"):  # self.hits
            parts.append(names[arg >> (op == "LOAD_ATTR" and sys.version_info >= (3, 12))])
        elif op in ("STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_ATTR"):
            return ".".join(parts + [names[arg]]) if (op == "STORE_ATTR") == bool(parts) else "?"
        elif op != "CACHE" and (op not in ("DUP_TOP", "COPY") or parts):  # inline caches
            return "?"  # (3.11+) are skipped, and the copy made for a = b = Value(0)
    return "?"


# -- Value -------------------------------------------------------------------------------------
_scripts: "dict[str, _Script]" = {}  # a code object's file name -> its _Script


class Value:
    """A value kept in the block at the end of the file whose code creates it."""

    __class_getitem__ = classmethod(lambda cls, item: cls)  # Value[int] in annotations

    def __init__(self, default: "Any", key: "str | None" = None) -> None:
        frame = sys._getframe(1)
        code, offset, path = frame.f_code, frame.f_lasti, frame.f_code.co_filename
        try:
            if path[:1] + path[-1:] == "<>":  # "<stdin>", "<string>": no file of that name
                raise FileNotFoundError(f"{path} is not a file")
            script = _scripts.get(path) or _Script(os.path.realpath(path))
        except OSError as error:
            raise CabooseError(frame, f"a Value needs a source file: {error}") from None
        self._script = script = _scripts.setdefault(path, script)  # (another thread may win)
        self.key = _target(code, offset) if key is None else key
        if not _is_key(self.key):
            raise CabooseError(frame, f"no key {self.key!r}: pass key='name'")
        if key is None and script.sites.setdefault(self.key, (code, offset)) != (code, offset):
            raise CabooseError(frame, f"{self.key!r} is the key of another Value here: pass key=")
        if self.key not in script.values:
            number, text = script.records.get(self.key, (0, ""))
            pair = _read(text, f"{path}:{number}") if text else [default, _text(default, path)]
            script.values.setdefault(self.key, pair)

    @property
    def value(self) -> "Any":
        """The current value; assigning to it writes it to the file at once."""
        return self._script.values[self.key][0]

    @value.setter
    def value(self, new: "Any") -> None:
        self._script.write(self.key, None, new)

    def save(self) -> None:
        """Write the value after changing it in place: a.value.append(1); a.save()."""
        self.value = self.value

    def update(self, change: "Callable[[Any], Any]") -> "Any":
        """Store change(the latest stored value) under the lock, across processes; return it."""
        return self._script.write(self.key, change)

    def __repr__(self) -> str:
        return f"Value({self.key!r}, {self.value!r})"

    def __bool__(self) -> bool:
        return bool(self.value)


def _in_place(op: "Callable[[Any, Any], Any]") -> "Callable[[Value, Any], Value]":
    def method(self: Value, other: "Any") -> Value:  # a += 1: one update(), so it is atomic
        self.update(lambda value: op(value, other))
        return self

    return method


for _name in "add sub mul truediv floordiv mod pow matmul and_ or_ xor lshift rshift".split():
    setattr(Value, f"__i{_name.strip('_')}__", _in_place(getattr(_operator, _name)))


@atexit.register
def _finish() -> None:
    """At exit, store the values changed in place, then compact the files this process wrote."""
    for script in set(_scripts.values()):
        for key, (value, text) in [*script.values.items(), (None, (None, None))]:
            try:  # each on its own: one value that cannot be stored keeps no other back
                if key is None and script.dead > 0 and script.fd >= 0:
                    script.write(None, None)  # a compaction
                elif key and _text(value, script.path) != text:
                    script.write(key, None, value)
            except CabooseError as error:
                print(error, file=sys.stderr)


# -- command line and self-test --------------------------------------------------------------
PROBE = "from caboose import Value\n\ncount = Value(0)\ncount += 1\nprint(count.value)\n"


def main(argv: "list[str]") -> int:
    """usage: python caboose.py --selftest | --help"""
    if argv != ["--selftest"]:
        print(f"{__doc__}\n{main.__doc__}", file=sys.stdout if argv == ["--help"] else sys.stderr)
        return 0 if argv == ["--help"] else 2
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # a counter beside a copy of this file
        shutil.copy(__file__, folder)
        with open(os.path.join(folder, "probe.py"), "w") as file:
            file.write(PROBE)
        probe = [sys.executable, "probe.py"]
        printed = [subprocess.run(probe, cwd=folder, stdout=-1).stdout for _ in range(3)]
    if printed != [b"1\n", b"2\n", b"3\n"]:
        print(f"caboose selftest: FAILED (the probe printed {printed})")
        return 1
    try:
        runs = Value(0)
        runs += 1
        print(f"caboose selftest: ok (run {runs.value})")
    except CabooseError as error:
        print(f"caboose selftest: ok (this run was not counted: {error})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
# /// caboose
# runs = 0
# ///
