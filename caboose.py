"""caboose: a script's state, kept in a comment block at the end of the script itself.

    from caboose import Value
    runs = Value(0)      # the key is the assignment target: "runs"
    runs.value += 1      # the script now ends "# /// caboose", "# runs = 1", "# ///"

The block runs from the last line that is exactly "# /// caboose" to the next that is exactly
"# ///"; each line between is "# " and ASCII Python, KEY = VALUE (KEY dotted, the last one wins),
VALUE a literal (nan and inf too) or pickle('BASE64'), read by a small evaluator, never eval.
Guarantees: the code above is never rewritten.  An update is one pwrite under flock that turns
the closing line into the comment "# ###" and adds "# KEY = VALUE" and a new closing line, so a
process killed at any instant, or a reader, sees a script that compiles, each value old or new.
Compaction (first write, exit, or past COMPACT_AFTER dead bytes) renames an fsynced copy over
the script.  SYNC = True (or CABOOSE_SYNC=1) fsyncs each update too.  Limits: a Value needs a
source file (not the REPL or -c); flock may not hold on network file systems; compaction splits
hard links; an editor that rewrites the script in place, unlocked, while it writes, can race it.
"""

from __future__ import annotations

import _operator
import atexit
import os
import sys
import time
from _ast import PyCF_ONLY_AST
from _thread import RLock
from keyword import iskeyword
from opcode import opname

try:  # POSIX; where there is no flock (Windows), only a process's own threads are kept apart
    from fcntl import LOCK_EX, LOCK_UN, flock
    from os import pwrite
except ImportError:
    LOCK_EX = LOCK_UN = 0

    def flock(fd: int, operation: int) -> None:
        pass

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable
SYNC = os.environ.get("CABOOSE_SYNC", "") not in ("", "0")
MARK, CLOSE, COMPACT_AFTER = "# /// caboose", "# ///", 1 << 18


class CabooseError(Exception):
    """Any caboose failure; the message names the file and, where known, the line."""

    def __init__(self, where: str, what: object) -> None:
        super().__init__(f"caboose: {where}: {what}")


# -- values: source text, a literal where Python has one, else pickle ------------------------
_PLAIN = {int, float, complex, str, bytes, bool, type(None)}
_NAMES = {"nan": float("nan"), "inf": float("inf"), "nanj": complex("nanj"), "infj": 1e999j}
_OPS = {"USub": _operator.neg, "UAdd": _operator.pos, "Add": _operator.add, "Sub": _operator.sub}
_EVALUATE = {
    "Constant": lambda node: node.value,
    "List": lambda node: list(map(_evaluate, node.elts)),
    "Tuple": lambda node: tuple(map(_evaluate, node.elts)),
    "Set": lambda node: set(map(_evaluate, node.elts)),
    "Dict": lambda node: dict(zip(map(_evaluate, node.keys), map(_evaluate, node.values))),
    "Name": lambda node: _NAMES[node.id],
    "UnaryOp": lambda node: _OPS[type(node.op).__name__](_evaluate(node.operand)),
    "BinOp": lambda node: _OPS[type(node.op).__name__](*map(_evaluate, (node.left, node.right))),
    "Call": lambda node: _CALLS[node.func.id](*map(_evaluate, node.args)),
}
_CALLS = {
    "set": set,
    "pickle": lambda text: _load("pickle").loads(_load("binascii").a2b_base64(text)),
}
_load = __import__  # pickle and binascii are imported only when a value needs them


def _evaluate(node: Any) -> Any:
    return _EVALUATE[type(node).__name__](node)


def _source(value: Any) -> str:  # a set's items are sorted, so that a set always reads the same
    kind = type(value)
    if kind in _PLAIN and (kind is not int or value.bit_length() < 10_000):
        return ascii(value)  # (str() of a longer int fails on Python 3.11 and newer)
    if kind is dict:
        return "{" + ", ".join(f"{_source(k)}: {_source(v)}" for k, v in value.items()) + "}"
    if kind not in (list, tuple, set):
        data = _load("binascii").b2a_base64(_load("pickle").dumps(value, 4), newline=False)
        return f"pickle({ascii(data.decode())})"
    items = [_source(item) for item in value]
    if kind is set:
        return "{" + ", ".join(sorted(items)) + "}" if items else "set()"
    inner = ", ".join(items) + "," * (kind is tuple and len(items) == 1)
    return f"[{inner}]" if kind is list else f"({inner})"


def _dotted(node: Any) -> str:
    name = getattr(node, "id", "?")
    return f"{_dotted(node.value)}.{node.attr}" if type(node).__name__ == "Attribute" else name


# -- trailer parser --------------------------------------------------------------------------
def _parse(data: bytes, path: str) -> tuple[bytes, int, dict[str, tuple[int, str]]]:
    """The real block: (the code around it, the offset to append at or -1, its records)."""
    start, mark = len(data), MARK.encode()
    while True:
        start = data.rfind(mark, 0, start)
        if start < 0:
            return data, -1, {}
        lines = data[start:].splitlines(True)
        count = next((n for n, line in enumerate(lines) if line[:1] != b"#"), len(lines))
        closed = next((n for n in range(1, count) if lines[n].rstrip() == b"# ///"), 0)
        end = start + sum(map(len, lines[: closed + 1 if closed else count]))
        quoted = b"'''" in data[start:end] or b'"""' in data[start:end]
        if data[start - 1 : start] in (b"", b"\n", b"\r") and lines[0].rstrip() == mark:
            try:  # block text in a string literal leaves the code above it unfinished
                if closed and end == len(data) and not quoted or _tree(data[:start]):
                    break
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                pass
    first, body = data.count(b"\n", 0, start) + 1, []
    for line in lines[1 : closed or count]:
        if not line.isascii() or b"\0" in line or line[:2].rstrip(b"\r\n") not in (b"# ", b"#"):
            raise CabooseError(f"{path}:{first + 1 + len(body)}", "not an ASCII '# ' block line")
        body.append(line[2:].rstrip(b"\r\n").decode())
    code, tail = data[:start] + data[end:], end - len(lines[closed])
    if not closed:  # cut short by a crash: an unfinished last line, or assignment, is dropped
        body = body[:-1] if body and not lines[count - 1].endswith(b"\n") else body
        try:
            return code, -1, _records(body, path, first)
        except CabooseError:
            body = body[: max([n for n, text in enumerate(body) if text[:1].strip()] or [0])]
    return code, tail if closed and end == len(data) else -1, _records(body, path, first)


def _records(body: list[str], path: str, first: int) -> dict[str, tuple[int, str]]:
    try:
        tree, records, last = _tree("\n".join(body)), {}, 0
    except (SyntaxError, ValueError, MemoryError, RecursionError) as error:
        deepest = max(range(len(body)), key=lambda n: len(body[n]), default=0)  # no lineno
        line = first + (getattr(error, "lineno", 0) or deepest + 1)
        raise CabooseError(f"{path}:{line}", getattr(error, "msg", repr(error))) from None
    for stmt in tree.body:
        targets, line = getattr(stmt, "targets", []), first + stmt.lineno
        key = _dotted(targets[0]) if len(targets) == 1 and stmt.lineno > last else "?"
        if type(stmt).__name__ != "Assign" or "?" in key:
            raise CabooseError(f"{path}:{line}", "expected KEY = VALUE, one to a line")
        records[key] = (line, "\n".join(body[stmt.lineno - 1 : stmt.end_lineno]))
        last = stmt.end_lineno
    return records


def _tree(source: str | bytes) -> Any:  # Python's own parser; importing ast costs milliseconds
    return compile(source, "<caboose>", "exec", PyCF_ONLY_AST)


# -- writer: append under the lock; compact through a renamed temporary file -----------------
class _Script:
    """One script file: its block as last read, the values in use, and the lock on it."""

    def __init__(self, path: str) -> None:
        self.path, self.mutex, self.fd, self.appended = path, RLock(), -1, 0
        self.records: dict[str, tuple[int, str]] = {}  # key -> (line, "KEY = VALUE")
        self.values: dict[str, list[Any]] = {}  # key -> [value, its text when last written]
        self.sites: dict[str, tuple[Any, int]] = {}  # derived key -> (code, offset) of its call
        with open(path, "rb") as file:
            self.load(file.fileno())

    def load(self, fd: int) -> None:
        stat, old = os.fstat(fd), self.records
        os.lseek(fd, 0, os.SEEK_SET)
        self.data, self.ino = os.read(fd, stat.st_size), stat.st_ino
        self.code, self.tail, self.records = _parse(self.data, self.path)
        self.size, eol = len(self.data), self.data.find(b"\n")
        self.nl = "\r\n" if self.data[eol - 1 : eol] == b"\r" else "\n"  # the file's own
        self.closing = f"{CLOSE}{self.nl}".encode()
        live = sum(len(text) + 3 for _, text in self.records.values())
        self.dead = self.size - len(self.code) - live  # superseded lines, whoever wrote them
        self.crossed = f"# {'#' * (len(CLOSE) - 2)}{self.nl}".encode()  # the closing, crossed out
        for key in self.values.keys() & self.records.keys():  # values another writer changed
            if self.records[key][1] != old.get(key, (0, ""))[1]:
                self.values[key] = self.pair(self.read(key))

    def read(self, key: str) -> Any:
        line, text = self.records[key]
        try:
            return _evaluate(_tree(text).body[0].value)
        except Exception as error:
            raise CabooseError(f"{self.path}:{line}", f"cannot read it: {error!r}") from None

    def pair(self, value: Any) -> list[Any]:  # [value, text]: the text proves it can be stored
        try:
            return [value, _source(value)]
        except Exception as error:
            raise CabooseError(self.path, f"cannot store {type(value)}: {error}") from None

    def write(self, key: str | None, change: Callable[[Any], Any] | None, new: Any = None) -> Any:
        """Under the lock, store change(latest value), or new, as key's value; no key: compact."""
        with self.mutex:
            try:
                for _ in range(1000):  # lock the file that has the script's name, and code
                    if self.fd < 0:  # a file opened afresh is read afresh: its inode number
                        self.fd, self.ino = os.open(self.path, os.O_RDWR), -1  # may be reused
                    flock(self.fd, LOCK_EX)
                    stat = os.fstat(self.fd)
                    if stat.st_nlink and stat.st_size:
                        break
                    os.close(self.fd)  # renamed over, or emptied by an editor that rewrites it
                    self.fd = -1
                    time.sleep(0.001)
                else:
                    raise CabooseError(self.path, "the script stays empty; nothing was written")
                if stat.st_ino != self.ino or stat.st_size != self.size:
                    self.load(self.fd)
                if key is None:
                    return self.compact()
                value = change(self.values[key][0]) if change else new
                kind = type(value)
                plain = kind in _PLAIN and (kind is not int or value.bit_length() < 10_000)
                text = ascii(value) if plain else self.pair(value)[1]
                record, at = f"{key} = {text}", self.tail
                self.records[key] = (0, record)
                if at < 0:  # no block at the very end to append to: rewrite the file
                    self.compact({key: (0, record)})
                else:  # "# ///" becomes "# ###" byte by byte: a reader that read up to it and
                    # then on, as Python reads a script, sees only comments, however it is cut
                    self.append(self.crossed + f"# {record}{self.nl}".encode() + self.closing, at)
                self.values[key] = [value, text]
                return value
            except OSError as error:
                raise CabooseError(self.path, f"cannot write: {error}") from None
            finally:
                if self.fd >= 0:
                    flock(self.fd, LOCK_UN)

    def append(self, data: bytes, at: int) -> None:
        try:
            if pwrite(self.fd, data, at) < len(data):
                raise OSError(28, "No space left on device")
            if SYNC:
                os.fsync(self.fd)
        except OSError:  # put the old end back: no half-written line stays
            self.ino = -1  # and read the file again before the next write
            pwrite(self.fd, self.closing, at)
            os.ftruncate(self.fd, at + len(self.closing))
            raise
        self.tail, self.size = at + len(data) - len(self.closing), at + len(data)
        self.appended, self.dead = self.appended + len(data), self.dead + len(data)
        if self.dead > COMPACT_AFTER and self.dead > self.size // 2:
            try:
                self.compact()
            except OSError:
                pass  # a folder we may not write to, say: the block is whole as it is

    def compact(self, pending: dict[str, tuple[int, str]] | None = None) -> None:
        self.load(self.fd)  # the code as it is now: an editor may have saved it in place
        self.records.update(pending or {})
        if not self.data:
            raise CabooseError(self.path, "the script is empty; nothing was written")
        nl, (folder, name) = self.nl, os.path.split(self.path)
        code = self.code + (nl.encode() if self.code[-1:] not in b"\r\n" else b"")
        lines = [f"# {text}".replace("\n", nl + "# ") + nl for _, text in self.records.values()]
        temp = os.path.join(folder, f".{name}.caboose-{os.getpid()}.tmp")
        try:
            for entry in os.listdir(folder or "."):  # left behind by compactions that were killed
                if entry.startswith(f".{name}.caboose-"):
                    os.unlink(os.path.join(folder, entry))
            with open(temp, "wb") as file:
                file.write(code + f"{MARK}{nl}{''.join(lines)}{CLOSE}{nl}".encode())
                file.flush()
                stat = os.fstat(self.fd)
                os.chmod(temp, stat.st_mode & 0o7777)
                if (stat.st_uid, stat.st_gid) != (os.getuid(), os.getgid()):
                    os.chown(temp, stat.st_uid, stat.st_gid)  # where the process may
                os.fsync(file.fileno())  # on disk before its name replaces the script
            os.replace(temp, self.path)
            os.close(self.fd)  # waiters on the old file wake, find it unlinked, and reopen
            self.fd, self.appended = -1, 0
        finally:
            self.ino = -1  # read the file again at the next write
            if os.path.exists(temp):
                os.unlink(temp)


# -- frame inspection: the file a Value lives in, and its key --------------------------------
_bytecode: dict[int, tuple[Any, bytes]] = {}


def _target(code: Any, offset: int) -> str:
    """The name that the bytecode after the call at offset stores the new Value in, or "?"."""
    parts: list[str] = []
    if _bytecode.get(id(code), (None,))[0] is not code:  # hashing a code object costs its size
        _bytecode[id(code)] = (code, code.co_code)  # and co_code is a new copy each time on 3.11+
    raw, extend = _bytecode[id(code)][1], 0
    for at in range(offset + 2, len(raw), 2):
        op, arg, extend = opname[raw[at]], raw[at + 1] | extend, 0
        if op == "EXTENDED_ARG":
            extend = arg << 8
            continue
        if op in ("CACHE", "DUP_TOP", "COPY") and not parts:
            continue  # inline caches (3.11+), and the copy made for a = b = Value(0)
        if op == "LOAD_ATTR" and sys.version_info >= (3, 12):
            arg >>= 1
        names = code.co_varnames if "FAST" in op else code.co_names
        if op in ("LOAD_NAME", "LOAD_FAST", "LOAD_ATTR"):
            parts.append(names[arg])  # and then STORE_ATTR, as in self.hits = Value(0)
        elif op in ("STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_ATTR"):
            return ".".join(parts + [names[arg]]) if (op == "STORE_ATTR") == bool(parts) else "?"
        else:
            return "?"
    return "?"


def _line(code: Any, offset: int) -> int:
    """The line of the instruction at offset in code, for an error message."""
    from dis import findlinestarts  # dis costs milliseconds to import: only on this error

    lines = [line for start, line in findlinestarts(code) if start <= offset and line]
    return lines[-1] if lines else int(code.co_firstlineno)


_scripts: dict[str, _Script] = {}
_loading = RLock()


def _after_fork() -> None:  # a forked child shares the parent's open file, and so its flock
    for script in _scripts.values():
        script.fd, script.mutex = -1, RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# -- Value -----------------------------------------------------------------------------------
class Value:
    """A value kept in the trailer of the file whose code creates it.

    hits = Value(0)                  # key "hits": the assignment target
    hits.value += 1                  # in the file before the line returns
    hits.update(lambda n: n + 1)     # atomic across threads and processes
    """

    __class_getitem__ = classmethod(lambda cls, item: cls)  # Value[int] in annotations

    def __init__(self, default: Any, key: str | None = None) -> None:
        frame = sys._getframe(1)
        path, code, offset = frame.f_code.co_filename, frame.f_code, frame.f_lasti
        with _loading:
            if path not in _scripts:
                try:
                    real = os.path.realpath(path)
                    _scripts[path] = _scripts.get(real) or _scripts.setdefault(real, _Script(real))
                except OSError as error:
                    raise CabooseError(path, f"a Value needs a source file: {error}") from None
            self._script = script = _scripts[path]
            if key is None:  # (a frame's line costs time on 3.11+: read only for errors)
                key = _target(code, offset)
                first = script.sites.setdefault(key, (code, offset))
                place = (first[0].co_name, first[0].co_firstlineno, first[1])
                if place != (code.co_name, code.co_firstlineno, offset) and key != "?":
                    what = f"{key!r} is also the key of a Value on line {_line(*first)}"
                    raise CabooseError(f"{path}:{frame.f_lineno}", f"{what}; pass key='...'")
            if not key.isascii() or not all(
                p.isidentifier() and not iskeyword(p) for p in key.split(".")
            ):
                what = f"cannot name this Value {key!r}; pass key='name'"
                raise CabooseError(f"{path}:{frame.f_lineno}", what)
            self.key = key
            if key not in script.values:
                script.values[key] = script.pair(
                    script.read(key) if key in script.records else default
                )

    @property
    def value(self) -> Any:
        """The current value; assigning to it writes it to the file at once."""
        return self._script.values[self.key][0]  # type: ignore[no-any-return]

    @value.setter
    def value(self, new: Any) -> None:
        self._script.write(self.key, None, new)

    def __call__(self, *new: Any) -> Any:
        """a() returns the value; a(7) stores 7 and returns it."""
        return self._script.write(self.key, None, new[0]) if new else self.value

    def save(self) -> None:
        """Write the value after changing it in place: a.value.append(1); a.save()."""
        self._script.write(self.key, None, self.value)

    def update(self, change: Callable[[Any], Any]) -> Any:
        """Store change(latest stored value) under the lock, across processes; return it."""
        return self._script.write(self.key, change)  # type: ignore[no-any-return]

    def _assign(self, new: Any) -> Value:
        self.value = new
        return self


for _name in "add sub mul truediv floordiv mod pow matmul and_ or_ xor lshift rshift".split():
    _op, _iop = getattr(_operator, _name), getattr(_operator, "i" + _name.strip("_"))
    _name = _name.strip("_")
    setattr(Value, f"__{_name}__", lambda self, other, op=_op: op(self.value, other))
    setattr(Value, f"__r{_name}__", lambda self, other, op=_op: op(other, self.value))
    setattr(Value, f"__i{_name}__", lambda self, x, op=_iop: self._assign(op(self.value, x)))
for _name in "lt le gt ge eq ne neg pos abs invert".split():
    _op = getattr(_operator, _name)
    setattr(Value, f"__{_name}__", lambda self, *other, op=_op: op(self.value, *other))


@atexit.register
def _finish() -> None:  # at exit: store the values changed in place, then compact
    for script in set(_scripts.values()):
        try:
            for key, (value, text) in list(script.values.items()):
                if script.pair(value)[1] != text:
                    script.write(key, None, value)
            if script.appended:
                script.write(None, None)
        except CabooseError as error:
            print(error, file=sys.stderr)


# -- command line and self-test --------------------------------------------------------------
PROBE = "import sys\nfrom caboose import Value\ncount = Value(0)\n"
PROBE += "for _ in range(int(sys.argv[1])):\n    print(count.update(lambda n: n + 1))\n"


def main(argv: list[str]) -> int:
    """usage: python caboose.py --selftest | show SCRIPT | --help"""
    if argv == ["--selftest"]:
        return _selftest()
    if argv[:1] != ["show"] or len(argv) != 2:
        print(f"{__doc__}\n{main.__doc__}" if argv in (["-h"], ["--help"]) else main.__doc__)
        return 0 if argv in (["-h"], ["--help"]) else 2
    try:
        records = _Script(os.path.realpath(argv[1])).records
    except (OSError, CabooseError) as error:
        print(f"caboose: {error}" if isinstance(error, OSError) else error, file=sys.stderr)
        return 2
    print("".join(text + "\n" for _, text in records.values()), end="")
    return 0


def _selftest() -> int:
    """A counter script beside a copy of this file, run plain, killed, and two at a time."""
    import shutil
    import subprocess
    import tempfile

    def run(times: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "probe.py", str(times)]
        return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE)

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(__file__, folder)
        with open(os.path.join(folder, "probe.py"), "w") as file:
            file.write(PROBE)
        plain = [run(1).communicate()[0] for _ in range(3)]
        killed = run(10**6)
        first = killed.stdout.readline() if killed.stdout else b""  # it runs: now kill it
        killed.kill()
        killed.communicate()
        before = run(1).communicate()[0]
        for writer in [run(100), run(100)]:
            writer.communicate()
        after = run(1).communicate()[0]
    ok = plain == [b"1\n", b"2\n", b"3\n"] and first and before.strip().isdigit()
    if not ok or int(after or 0) != int(before) + 201:
        print(f"caboose selftest: FAILED (runs {plain}, killed then {before!r}, then {after!r})")
        return 1
    runs = Value(0)
    runs.value += 1
    print(f"caboose selftest: ok (run {runs.value})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
# /// caboose
# runs = 0
# ///
