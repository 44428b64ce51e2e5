"""caboose: a script's state, kept in a comment block at the end of the script itself.

    from caboose import Value
    runs = Value(0)      # the key is the assignment target: "runs"
    runs.value += 1      # the script now ends "# /// caboose", "# runs = 1", "# ///"

Format: the block runs from the last line "# /// caboose" to the next line "# ///"; each line
between is ASCII, "# KEY = VALUE" (or a comment: "# # note", "# ###"), KEY dotted (the last one
wins), VALUE on one line: a literal (nan, inf too), set(), complex(RE, IM) or pickle('BASE64').
Guarantees: the code above the block is never rewritten.  An update is one write under flock
that turns "# ///" into the comment "# ###" and adds "# KEY = VALUE" and a new "# ///", so a
process killed at any instant, or a reader, sees a script that compiles, each value old or new
(a line cut short is ignored).  Compaction (first write, exit, or past COMPACT_AFTER dead bytes)
renames an fsynced copy over the script.  SYNC = True (or CABOOSE_SYNC=1) fsyncs updates too.
Limits: a Value needs a source file (not the REPL or -c); flock may not hold on network file
systems; compaction splits hard links; an editor that rewrites the script in place, unlocked,
while it writes, can race it; Windows is untested.
"""

import _operator
import atexit
import os
import sys
import time
from _thread import RLock
from keyword import iskeyword
from opcode import opname

try:  # POSIX; where there is no flock (Windows), only a process's own threads are kept apart
    from fcntl import LOCK_EX, LOCK_UN, flock
    from os import pread, pwrite
except ImportError:
    LOCK_EX, LOCK_UN, flock = 0, 0, lambda fd, operation: None

    def pread(fd: int, size: int, at: int) -> bytes:
        os.lseek(fd, at, os.SEEK_SET)
        return os.read(fd, size)

    def pwrite(fd: int, data: bytes, at: int) -> int:
        os.lseek(fd, at, os.SEEK_SET)
        return os.write(fd, data)


TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable
SYNC = os.environ.get("CABOOSE_SYNC", "").lower() in ("1", "true", "yes", "on")
MARK, CLOSE, COMPACT_AFTER = "# /// caboose", "# ///", 1 << 18
_UNPARSABLE = (SyntaxError, ValueError, MemoryError, RecursionError)  # from compile()
_UNSET, PyCF_ONLY_AST = object(), 1024  # (importing _ast builds every syntax tree type)


class CabooseError(Exception):
    """Any caboose failure; the message names the file and, where known, the line."""

    def __init__(self, where: str, what: object) -> None:
        super().__init__(f"caboose: {where}: {what}")


# -- values: a literal where Python has one, else pickle -------------------------------------
_PLAIN = {int, float, str, bytes, bool, type(None)}
_OPS = {"USub": _operator.neg, "UAdd": _operator.pos, "Add": _operator.add, "Sub": _operator.sub}
_NAMES = {"nan": float("nan"), "inf": float("inf"), "nanj": complex("nanj"), "infj": 1e999j}
_load = __import__  # pickle and binascii are imported only when a value needs them
_CALLS = {
    "set": set,
    "complex": complex,
    "pickle": lambda s: _load("pickle").loads(_load("binascii").a2b_base64(s)),
}
_WORDS = {"None": None, "True": True, "False": False}
_READERS = (int, float, lambda text: text[1:-1].encode().decode("unicode_escape"))
_EVALUATE = {
    "Constant": lambda node: node.value,
    "List": lambda node: list(map(_evaluate, node.elts)),
    "Tuple": lambda node: tuple(map(_evaluate, node.elts)),
    "Set": lambda node: set(map(_evaluate, node.elts)),
    "Dict": lambda node: dict(zip(map(_evaluate, node.keys), map(_evaluate, node.values))),
    "Name": lambda node: _NAMES[node.id],
    "UnaryOp": lambda node: _OPS[type(node.op).__name__](_evaluate(node.operand)),
    "BinOp": lambda node: _OPS[type(node.op).__name__](*map(_evaluate, (node.left, node.right))),
    "Call": lambda node: _CALLS[node.func.id](*map(_evaluate, node.args + node.keywords)),
}


def _evaluate(node: "Any") -> "Any":
    return _EVALUATE[type(node).__name__](node)


def _source(value: "Any") -> str:  # a set's items are sorted, so that a set always reads the same
    kind = type(value)
    if kind in _PLAIN and (kind is not int or value.bit_length() < 10_000):
        return ascii(value)  # (str() of a longer int fails on Python 3.11 and newer)
    if kind is complex:  # (1-0j) reads back as (1+0j): the parts keep their signs
        return f"complex({_source(value.real)}, {_source(value.imag)})"
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


def _tree(source: "str | bytes", mode: str) -> "Any":  # Python's parser, without importing ast
    import warnings  # a script may turn them into errors: SyntaxErrors, from compile()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(source, "<caboose>", mode, PyCF_ONLY_AST)


def _constant(text: str) -> "Any":
    """The int, float, str, None, True or False that text is, as ascii() writes it, or _UNSET.
    Read without compile(), whose first call costs a millisecond: it builds the tree types."""
    if text in _WORDS:
        return _WORDS[text]
    for read in _READERS:
        try:
            value = read(text)
        except (ValueError, Warning):  # (UnicodeDecodeError is one; a bad escape warns)
            continue
        if ascii(value) == text:
            return value
    return _UNSET


def _is_key(key: str) -> bool:  # a dotted name, ASCII: "hits", "self.hits"
    return key.isascii() and all(n.isidentifier() and not iskeyword(n) for n in key.split("."))


# -- trailer parser --------------------------------------------------------------------------
def _parse(data: bytes, path: str) -> tuple[bytes, int, dict[str, tuple[int, str]]]:
    """The real block: the code around it, the offset of its "# ///" or -1, and its records."""
    start, mark = len(data), MARK.encode()
    while True:  # the last mark that is not text inside a string literal
        start = data.rfind(mark, 0, start)
        if start < 0:
            return data, -1, {}
        lines = data[start:].splitlines(True)
        count = next((n for n, line in enumerate(lines) if line[:1] != b"#"), len(lines))
        closed = next((n for n in range(1, count) if lines[n].rstrip() == CLOSE.encode()), 0)
        end = start + sum(map(len, lines[: closed + 1 if closed else count]))
        quoted = any(q in data[max(start - 2, 0) : end] for q in (b"'''", b'"""', b"\\\n"))
        if data[start - 1 : start] in (b"", b"\n", b"\r") and lines[0].rstrip() == mark:
            try:  # comments that end the file cannot be in a string: else the code must compile
                if closed and end == len(data) and not quoted or _tree(data[:start], "exec"):
                    break
            except _UNPARSABLE:
                pass
    body, records, first = lines[1 : closed or count], {}, data.count(b"\n", 0, start) + 1
    if not closed and end < len(data):  # a block that a crash cut short runs to the end
        raise CabooseError(f"{path}:{first + count}", "the block needs '# ' lines up to '# ///'")
    if body and not closed and not body[-1].endswith((b"\n", b"\r")):
        body.pop()  # the block is open, and its last line was cut short by a crash
    for number, line in enumerate(body, first + 1):
        where, text = f"{path}:{number}", line[2:].rstrip(b"\r\n").decode("latin-1")
        if not line.isascii() or b"\0" in line or line[:2].rstrip(b"\r\n") not in (b"# ", b"#"):
            raise CabooseError(where, "not an ASCII '# ' block line")
        key, equals, value = (part.strip() for part in text.partition("="))
        if text[:1] in ("", "#"):  # a blank line, a comment, or a "# ###" that was "# ///"
            continue
        if not equals or not _is_key(key):
            raise CabooseError(where, "expected KEY = VALUE, one to a line")
        try:
            if _constant(value) is _UNSET:  # the value is read when it is used, not here
                _tree(value, "eval")
        except _UNPARSABLE as error:
            raise CabooseError(where, f"cannot read: {error!r}") from None
        records[key] = (number, text)
    tail = end - len(lines[closed]) if closed and end == len(data) else -1
    return data[:start] + data[end:], tail, records


# -- writer: append under the lock; compact through a renamed temporary file -----------------
class _Script:
    """One script file: its block as last read, the values in use, and the lock on it."""

    def __init__(self, path: str) -> None:
        self.path, self.mutex, self.fd, self.appended, self.busy = path, RLock(), -1, 0, False
        self.records: dict[str, tuple[int, str]] = {}  # key -> (its line, "KEY = VALUE")
        self.values: dict[str, list[Any]] = {}  # key -> [value, its text as last written]
        self.sites: dict[str, tuple[Any, ...]] = {}  # derived key -> where its Value was made
        with open(path, "rb") as file:
            self.load(file.fileno())

    def load(self, fd: int) -> None:
        stat, old = os.fstat(fd), {key: self.records.get(key) for key in self.values}
        data, self.ino = pread(fd, stat.st_size, 0), stat.st_ino
        self.code, self.tail, self.records = _parse(data, self.path)
        self.block = data[len(self.code) : self.tail] if self.tail >= 0 else b""  # as read
        self.nl = "\r\n" if b"\r\n" in data[: data.find(b"\n") + 1] else "\n"  # the file's own
        self.closing = len(f"{CLOSE}{self.nl}")  # (bytes of the closing line)
        live = sum(len(text) + 3 for _, text in self.records.values())
        self.size, self.dead = len(data), len(data) - len(self.code) - live  # whoever wrote it
        for key in self.values.keys() & self.records.keys():  # values another writer changed
            if self.records[key][1] != (old[key] or (0, ""))[1]:
                self.values[key] = self.pair(None, key)

    def pair(self, value: "Any", key: "str | None" = None) -> "list[Any]":
        """[value, its text]: key's stored value if the block holds one, else value."""
        number, text = self.records.get(key or "", (0, ""))
        where = f"{self.path}:{number}" if number else self.path
        try:
            source = text.partition("=")[2].strip()
            value = _constant(source) if text else value
            if value is _UNSET:  # more than a constant as caboose writes it
                value = _evaluate(_tree(source, "eval").body)
            return [value, _source(value)]
        except Exception as error:  # a KeyError: a name, call or node the evaluator does not read
            why = (
                f"{error.args[0]} is not in a literal" if type(error) is KeyError else repr(error)
            )
            raise CabooseError(where, f"cannot {'read' if text else 'store'}: {why}") from None

    def lock(self) -> None:
        """Hold flock on the file that has the script's name and code; read it if it changed."""
        tries = 0
        while True:
            if self.fd < 0:  # a file opened afresh: inode numbers are reused, so its bytes tell
                self.fd, self.ino = os.open(self.path, os.O_RDWR), -1
            flock(self.fd, LOCK_EX)
            stat = os.fstat(self.fd)
            if stat.st_nlink and stat.st_size and os.stat(self.path).st_ino == stat.st_ino:
                known = self.ino < 0 and stat.st_size == self.size  # (then compare the bytes)
                if known and pread(self.fd, self.size, 0).startswith(self.code + self.block):
                    self.ino = stat.st_ino  # the file as last read: no need to parse it again
                if stat.st_ino != self.ino or stat.st_size != self.size:
                    self.load(self.fd)
                return
            fd, self.fd, tries = self.fd, -1, tries + 1
            flock(fd, LOCK_UN)
            os.close(fd)  # renamed, or emptied by an editor that rewrites it
            if tries > 200:
                raise CabooseError(self.path, "the script stays empty, or keeps being replaced")
            time.sleep(0 if stat.st_size else 0.005)  # a rename needs no wait, an editor may

    def write(
        self, key: "str | None", change: "Callable[[Any], Any] | None", new: "Any" = None
    ) -> "Any":
        """Under the lock, store change(latest value), or new, as key's value; no key: compact."""
        self.mutex.acquire()
        if self.busy:  # this thread is in update()'s function, which holds the lock
            self.mutex.release()
            raise CabooseError(self.path, "update()'s function may read Values, not write them")
        try:
            fd = self.fd  # the usual case without a call: the file as this process left it
            if fd >= 0:
                flock(fd, LOCK_EX)
                stat = os.fstat(fd)
            if fd < 0 or stat.st_ino != self.ino or stat.st_size != self.size or not stat.st_nlink:
                self.lock()
            elif stat.st_ctime_ns != stat.st_mtime_ns:  # renamed (as to a backup) or chmod-ed
                self.lock()  # since this process wrote it: a write sets the two times alike
            if key is None:
                return self.compact({})
            value = new
            if change:
                self.busy = True
                try:
                    value = change(self.values[key][0])
                finally:
                    self.busy = False
            kind = type(value)  # (the first case of _source, repeated here for speed)
            plain = kind in _PLAIN and (kind is not int or value.bit_length() < 10_000)
            text = ascii(value) if plain else self.pair(value)[1]
            record = f"{key} = {text}"
            if self.tail < 0:  # no block at the very end to append to: rewrite the file
                self.compact({key: (0, record)})
            else:
                self.append(key, record)
            self.values[key] = [value, text]
            return value
        except OSError as error:
            raise CabooseError(self.path, f"cannot write: {error}") from None
        finally:
            if self.fd >= 0:
                flock(self.fd, LOCK_UN)
            self.mutex.release()

    def append(self, key: str, record: str) -> None:
        """Turn "# ///" into "# ###" in place, then add the record and a new "# ///": a reader
        that read up to the old end and on, as Python reads a script, sees only comments."""
        at, nl, self.records[key] = self.tail, self.nl, (0, record)  # (read again if it fails)
        data = f"# ###{nl}# {record}{nl}{CLOSE}{nl}".encode()
        try:
            if pwrite(self.fd, data, at) < len(data):
                raise OSError(28, "No space left on device")
            if SYNC:
                os.fsync(self.fd)
        except OSError:  # put the old end back, and read the file again before the next write
            self.ino = -1
            pwrite(self.fd, f"{CLOSE}{nl}".encode(), at)
            os.ftruncate(self.fd, at + len(CLOSE) + len(nl))
            raise
        size = self.size = at + len(data)
        self.tail = size - self.closing
        dead = self.dead = self.dead + len(data)
        self.appended = True
        if dead > COMPACT_AFTER and dead > size // 2:
            try:
                self.compact({})
            except OSError:
                pass  # a folder that takes no temporary file, say: the block is whole as it is

    def compact(self, pending: dict[str, tuple[int, str]]) -> None:
        known = self.code + self.block  # the file as last read, up to what this process added
        if self.tail < 0 or pread(self.fd, len(known), 0) != known:
            self.load(self.fd)  # an editor saved it in place: the file as it is now
        if not self.size:  # emptied by an editor that rewrites it in place: write nothing now
            raise CabooseError(self.path, "the script is empty; nothing was written")
        self.records.update(pending)
        nl, (folder, name) = self.nl, os.path.split(self.path)
        code = self.code + (nl.encode() if self.code[-1:] not in b"\r\n" else b"")
        if (b"\n" + code).endswith((b"\n# ///\n", b"\n# ///\r\n")):  # another PEP 723 block
            code += nl.encode()  # ends there: a blank line keeps a reader from joining the two
        lines = [f"# {text}{nl}" for _, text in self.records.values()]
        temp = os.path.join(folder, f".{name}.caboose-tmp")
        try:
            if os.path.exists(temp):  # left by a compaction that was killed, perhaps read-only
                os.unlink(temp)
            with open(temp, "wb") as file:
                file.write(code + f"{MARK}{nl}{''.join(lines)}{CLOSE}{nl}".encode())
                file.flush()
                stat, mine = os.fstat(self.fd), os.fstat(file.fileno())
                os.chmod(temp, stat.st_mode & 0o7777)
                try:  # the owner too, where the process may
                    if (stat.st_uid, stat.st_gid) != (mine.st_uid, mine.st_gid):
                        os.chown(temp, stat.st_uid, stat.st_gid)
                except PermissionError:
                    pass
                os.fsync(file.fileno())  # on disk before its name replaces the script
            if os.stat(self.path).st_ino != stat.st_ino:  # an editor saved by rename meanwhile
                raise InterruptedError("the script was replaced during compaction: try again")
            os.replace(temp, self.path)
        except BaseException:  # the script is as it was: read it again at the next write
            self.ino = -1
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        fd, self.fd, self.appended = self.fd, -1, 0  # (forgotten first: an interrupt between
        flock(fd, LOCK_UN)  # could leave a number that the next open reuses; and a forked
        os.close(fd)  # child may share it) waiters on the old file wake, and reopen


# -- frame inspection: the file a Value lives in, and its key --------------------------------
_scripts: dict[str, _Script] = {}
_loading, _bytecode = RLock(), {}  # id(code) -> (code, its bytes): see _target


def _target(code: "Any", offset: int) -> str:
    """The name that the bytecode after the call at offset stores the new Value in, or "?"."""
    if _bytecode.get(id(code), (None,))[0] is not code:  # hashing a code object costs its size
        _bytecode[id(code)] = (code, code.co_code)  # and co_code is a new copy each time on 3.11+
    raw, parts, extend = _bytecode[id(code)][1], [], 0
    for at in range(offset + 2, len(raw), 2):
        op, arg, extend = opname[raw[at]], raw[at + 1] | extend, 0
        names = code.co_varnames if "FAST" in op else code.co_names
        if op == "STORE_DEREF" and not parts:  # a variable that an inner function uses
            if hasattr(code, "_varname_from_oparg"):  # (3.11+: cells share the locals' slots)
                return str(code._varname_from_oparg(arg))
            return str((code.co_cellvars + code.co_freevars)[arg])
        if op == "EXTENDED_ARG":
            extend = arg << 8
        elif op in ("LOAD_NAME", "LOAD_FAST", "LOAD_ATTR"):  # then STORE_ATTR: self.hits
            parts.append(names[arg >> (op == "LOAD_ATTR" and sys.version_info >= (3, 12))])
        elif op in ("STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_ATTR"):
            return ".".join(parts + [names[arg]]) if (op == "STORE_ATTR") == bool(parts) else "?"
        elif op != "CACHE" and (op not in ("DUP_TOP", "COPY") or parts):  # inline caches
            return "?"  # (3.11+) are skipped, and the copy made for a = b = Value(0)
    return "?"


def _after_fork() -> None:  # a forked child shares its parent's open file, and so its flock
    global _loading  # (and a lock that another thread held at the fork would stay held)
    _loading = RLock()
    for script in _scripts.values():
        if script.fd >= 0:
            os.close(script.fd)  # (the parent's lock stays the parent's)
        script.fd, script.mutex = -1, RLock()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_after_fork)


# -- Value -----------------------------------------------------------------------------------
class Value:
    """A value kept in the trailer of the file whose code creates it.

    hits = Value(0)                  # key "hits": the assignment target
    hits.value += 1                  # in the file before the line returns
    hits.update(lambda n: n + 1)     # atomic across threads and processes
    """

    __class_getitem__ = classmethod(lambda cls, item: cls)  # Value[int] in annotations

    def __init__(self, default: "Any", key: "str | None" = None) -> None:
        frame = sys._getframe(1)
        code, offset, path = frame.f_code, frame.f_lasti, frame.f_code.co_filename
        with _loading:  # (a frame's line costs time on 3.11+: it is read only for errors)
            if path not in _scripts:
                try:
                    if path[:1] + path[-1:] == "<>":  # <stdin>, <string>: not a file of that name
                        raise FileNotFoundError(f"{path} is not a file")
                    real = os.path.realpath(path)
                    _scripts[path] = _scripts.get(real) or _scripts.setdefault(real, _Script(real))
                except OSError as error:
                    raise CabooseError(path, f"a Value needs a source file: {error}") from None
            script, place = _scripts[path], (code.co_name, code.co_firstlineno, offset)
            derived, key = key is None, _target(code, offset) if key is None else key
            if not isinstance(key, str) or not _is_key(key):
                raise CabooseError(f"{path}:{frame.f_lineno}", f"no key {key!r}: pass key='name'")
            site = script.sites.setdefault(key, (place, code, offset)) if derived else [place]
            if site[0] != place:  # another call site derived the same key
                from dis import findlinestarts  # costs milliseconds: only for this error

                line = [n for at, n in findlinestarts(site[1]) if at <= site[2] and n][-1]
                what = f"{key!r} is also the key of the Value on line {line}; pass key='...'"
                raise CabooseError(f"{path}:{frame.f_lineno}", what)
            if key not in script.values:
                script.values[key] = script.pair(default, key)
            self._script, self.key = script, key

    @property
    def value(self) -> "Any":
        """The current value; assigning to it writes it to the file at once."""
        return self._script.values[self.key][0]  # type: ignore[no-any-return]

    @value.setter
    def value(self, new: "Any") -> None:
        self._script.write(self.key, None, new)

    def __call__(self, *new: "Any") -> "Any":
        """a() returns the value; a(7) stores 7 and returns it."""
        return self._script.write(self.key, None, new[0]) if new else self.value

    def save(self) -> None:
        """Write the value after changing it in place: a.value.append(1); a.save()."""
        self._script.write(self.key, None, self.value)

    def update(self, change: "Callable[[Any], Any]") -> "Any":
        """Store change(latest stored value) under the lock, across processes; return it."""
        return self._script.write(self.key, change)  # type: ignore[no-any-return]

    def _assign(self, new: "Any") -> "Value":
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
Value.__bool__ = lambda self: bool(self.value)  # type: ignore[method-assign]


@atexit.register
def _finish() -> None:  # at exit: store the values changed in place, then compact
    for script in set(_scripts.values()):
        for key, (value, text) in [*script.values.items(), (None, (None, None))]:
            try:  # each on its own: one value that cannot be stored keeps no other back
                if key is None and script.appended or key and script.pair(value)[1] != text:
                    script.write(key, None, value)
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
        if argv in (["-h"], ["--help"]):
            print(f"{__doc__}\n{main.__doc__}")
            return 0
        print(main.__doc__, file=sys.stderr)
        return 2
    try:
        records = _Script(os.path.realpath(argv[1])).records
    except (OSError, CabooseError) as error:
        print(error if isinstance(error, CabooseError) else f"caboose: {error}", file=sys.stderr)
        return 2
    print("".join(text + "\n" for _, text in records.values()), end="")
    return 0


def _selftest() -> int:
    """A counter script beside a copy of this file: run three times, killed, and two at once."""
    import shutil
    import subprocess
    import tempfile

    def run(*counts: int) -> list[bytes]:  # each probe's last line, the probes run side by side
        probes = [subprocess.Popen(probe + [str(n)], cwd=folder, stdout=-1) for n in counts]
        return [(each.communicate()[0].split() or [b"?"])[-1] for each in probes]

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(__file__, folder)
        with open(os.path.join(folder, "probe.py"), "w") as file:
            file.write(PROBE)
        probe = [sys.executable, "-u", "probe.py"]  # (unbuffered: its lines come at once)
        plain = run(1) + run(1) + run(1)
        killed = subprocess.Popen(probe + ["999999"], cwd=folder, stdout=-1)
        started = killed.stdout.readline() if killed.stdout else b""  # it writes: kill it now
        killed.kill()
        killed.communicate()
        before = run(1)[0]
        run(100, 100)
        after = run(1)[0]
    counted = before.isdigit() and after.isdigit() and int(after) == int(before) + 201
    if plain != [b"1", b"2", b"3"] or not started or not counted:
        print(f"caboose selftest: FAILED (runs {plain}, after a kill {before!r}, {after!r})")
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
