"""The specification of caboose, as tests.

Run:  python test_caboose.py            (the whole suite, standard library only)
      python test_caboose.py --bench    (the benchmark; see the README)

Every test copies caboose.py into a temporary folder and runs real scripts beside
it in subprocesses, so the repository's own files are never touched.
"""

import importlib.util
import os
import platform
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.join(HERE, "caboose.py")


class ScriptCase(unittest.TestCase):
    """A temporary folder holding a copy of caboose.py and the scripts under test."""

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="caboose-test-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        shutil.copy(MODULE, self.folder)

    def path(self, name):
        return os.path.join(self.folder, name)

    def write(self, name, text, dedent=True):
        """Write a script (str is dedented and written as UTF-8; bytes as given)."""
        data = textwrap.dedent(text).encode() if isinstance(text, str) and dedent else text
        data = data.encode() if isinstance(data, str) else data
        with open(self.path(name), "wb") as file:
            file.write(data)
        return self.path(name)

    def read(self, name):
        with open(self.path(name), "rb") as file:
            return file.read()

    def run_script(self, name, *args, check=True, env=None, timeout=60):
        """Run python NAME ARGS in the folder; return the CompletedProcess (text)."""
        environment = dict(os.environ, **(env or {}))
        environment.pop("CABOOSE_SYNC", None) if env is None else None
        result = subprocess.run(
            [sys.executable, name, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            self.fail(f"{name} exited {result.returncode}:\n{result.stderr}")
        return result

    def output(self, name, *args, **kwargs):
        return self.run_script(name, *args, **kwargs).stdout.split()

    def assertCompiles(self, name):
        compiled = os.path.join(self.folder, "compiled.pyc")
        py_compile.compile(self.path(name), cfile=compiled, doraise=True)

    def temp_files(self):
        return [entry for entry in os.listdir(self.folder) if ".caboose-" in entry]



COUNTER = """\
from caboose import Value
a = Value(0)
print(a.value)
a.value += 1
"""


class TheSeedExample(ScriptCase):
    def test_prints_0_1_2_on_three_runs(self):
        self.write("s.py", COUNTER)
        self.assertEqual([self.output("s.py")[0] for _ in range(3)], ["0", "1", "2"])

    def test_trailer_is_a_pep723_style_block(self):
        self.write("s.py", COUNTER)
        self.run_script("s.py")
        tail = self.read("s.py").decode().splitlines()[-3:]
        self.assertEqual(tail, ["# /// caboose", "# a = 1", "# ///"])

    def test_reading_only_leaves_file_unchanged(self):
        self.write("s.py", COUNTER)
        self.run_script("s.py")
        self.write("r.py", "from caboose import Value\nx = Value([1])\nprint(x.value)\n")
        before = self.read("r.py")
        self.assertEqual(self.output("r.py"), ["[1]"])
        self.assertEqual(self.read("r.py"), before)

    def test_after_normal_exit_each_key_has_one_line(self):
        self.write("s.py", COUNTER.replace("a.value += 1", "for i in range(50):\n    a.value += 1"))
        self.run_script("s.py")
        self.run_script("s.py")
        self.assertEqual(self.read("s.py").count(b"# a = "), 1)
        self.assertIn(b"# a = 100\n", self.read("s.py"))


class StoredValuesWin(ScriptCase):
    def test_falsy_stored_values_win_over_default(self):
        for stored in ["0", "''", "None", "False", "[]", "{}", "0.0", "b''", "set()"]:
            with self.subTest(stored=stored):
                self.write("s.py", f"""\
                    from caboose import Value
                    x = Value("default")
                    print(repr(x.value))
                    # /// caboose
                    # x = {stored}
                    # ///
                """)
                self.assertEqual(self.run_script("s.py").stdout.strip(), stored)

    def test_writing_a_falsy_value_persists_it(self):
        self.write("s.py", """\
            import sys
            from caboose import Value
            x = Value(5)
            print(x.value)
            x.value = 0 if x.value == 5 else x.value
        """)
        self.assertEqual(self.output("s.py") + self.output("s.py"), ["5", "0"])


class Keys(ScriptCase):
    def test_lines_inserted_above_do_not_move_values(self):
        self.write("s.py", COUNTER)
        self.run_script("s.py")
        code = self.read("s.py").replace(b"a = Value(0)", b"b = Value(7)\n\n\na = Value(0)")
        self.write("s.py", code)
        self.assertEqual(self.output("s.py"), ["1"])

    def test_two_values_on_one_line(self):
        self.write("s.py", """\
            from caboose import Value
            a = Value(1); b = Value(2)
            print(a.value, b.value)
            a.value += 10; b.value += 20
        """)
        self.run_script("s.py")
        self.assertEqual(self.output("s.py"), ["11", "22"])

    def test_multi_line_call(self):
        self.write("s.py", """\
            from caboose import Value
            total = Value(
                0,
            )
            total.value += 3
            print(total.value)
        """)
        self.run_script("s.py")
        self.assertEqual(self.output("s.py"), ["6"])
        self.assertIn(b"# total = 6\n", self.read("s.py"))

    def test_targets_give_keys(self):
        self.write("s.py", """\
            from caboose import Value
            count: int = Value(0)
            a = b = Value(0)
            class Box:
                def __init__(self):
                    self.hits = Value(0)
            def f():
                local = Value(0)
                local.value += 1
            box = Box()
            count.value, a.value, box.hits.value = 1, 2, 3
            f()
        """)
        self.run_script("s.py")
        block = self.read("s.py").split(b"# /// caboose\n")[1]
        for line in [b"# count = 1\n", b"# a = 2\n", b"# self.hits = 3\n", b"# local = 1\n"]:
            self.assertIn(line, block)

    def test_explicit_key(self):
        self.write("s.py", """\
            from caboose import Value
            print(Value(0, key="hits").value)
            Value(0, key="hits").value = 9
        """)
        self.run_script("s.py")
        self.assertEqual(self.output("s.py"), ["9"])

    def test_same_call_site_again_sees_the_stored_value(self):
        self.write("s.py", """\
            from caboose import Value
            def bump():
                n = Value(0)
                n.value += 1
                return n.value
            print([bump() for _ in range(3)])
        """)
        self.assertEqual(self.run_script("s.py").stdout.strip(), "[1, 2, 3]")

    def test_underivable_key_asks_for_key(self):
        for line in ["print(Value(0))", "a, b = Value(0)", "d = {}; d['x'] = Value(0)"]:
            with self.subTest(line=line):
                self.write("s.py", f"from caboose import Value\n{line}\n")
                result = self.run_script("s.py", check=False)
                self.assertRegex(result.stderr, r"CabooseError: caboose: .*s\.py:2: .*key=")

    def test_same_derived_key_at_two_sites_is_an_error(self):
        self.write("s.py", """\
            from caboose import Value
            count = Value(0)
            def f():
                count = Value(1)
            f()
        """)
        result = self.run_script("s.py", check=False)
        self.assertRegex(result.stderr, r"caboose: .*s\.py:4: .*'count'.* line 2.*key=")

    def test_explicit_keys_may_be_shared(self):
        self.write("s.py", """\
            from caboose import Value
            a = Value(0, key="shared")
            b = Value(0, key="shared")
            a.value = 4
            print(b.value)
        """)
        self.assertEqual(self.output("s.py"), ["4"])

    def test_bad_explicit_key_is_an_error(self):
        for key in ["1x", "a-b", "class", "a..b", "", "caf\\u00e9"]:
            with self.subTest(key=key):
                self.write("s.py", f"from caboose import Value\nValue(0, key='{key}')\n")
                result = self.run_script("s.py", check=False)
                self.assertRegex(result.stderr, r"CabooseError: caboose: .*s\.py:2: ")

    def test_value_in_imported_module_lives_in_that_module(self):
        self.write("helper.py", """\
            from caboose import Value
            hits = Value(0)
            hits.value += 1
        """)
        self.write("main.py", "import helper\nprint(helper.hits.value)\n")
        main = self.read("main.py")
        self.assertEqual(self.output("main.py") + self.output("main.py"), ["1", "2"])
        self.assertEqual(self.read("main.py"), main)
        self.assertIn(b"# hits = 2\n", self.read("helper.py"))

    def test_chdir_after_import_does_not_matter(self):
        self.write("s.py", """\
            import os
            from caboose import Value
            os.chdir("/")
            a = Value(0)
            a.value += 1
        """)
        self.run_script("s.py")
        self.assertIn(b"# a = 1\n", self.read("s.py"))

    def test_no_source_file_is_an_error(self):
        result = subprocess.run(
            [sys.executable, "-c", "from caboose import Value\nValue(0, key='x')"],
            cwd=self.folder, capture_output=True, text=True,
        )
        self.assertIn("caboose: <string>: a Value needs a source file", result.stderr)


class ScriptBytesAreKept(ScriptCase):
    def assertCodeKept(self, original, name="s.py"):
        data = self.read(name)
        self.assertTrue(data.startswith(original), data[: len(original) + 40])
        self.assertCompiles(name)

    def test_no_final_newline_gets_one_and_nothing_else(self):
        original = b"from caboose import Value\na = Value(0)\na.value = 1"
        self.write("s.py", original)
        self.run_script("s.py")
        self.assertEqual(self.read("s.py"), original + b"\n# /// caboose\n# a = 1\n# ///\n")

    def test_crlf_file_keeps_crlf(self):
        original = b"from caboose import Value\r\na = Value(0)\r\na.value += 1\r\n"
        self.write("s.py", original)
        self.run_script("s.py")
        self.run_script("s.py")
        self.assertEqual(self.read("s.py"), original + b"# /// caboose\r\n# a = 2\r\n# ///\r\n")

    def test_shebang_encoding_and_mode_are_kept(self):
        original = (
            "#!/usr/bin/env python3\n# -*- coding: latin-1 -*-\n"
            "from caboose import Value\nname = Value('caf\xe9')\nname.value += '!'\n"
            "print(name.value)\n"
        ).encode("latin-1")
        self.write("s.py", original)
        os.chmod(self.path("s.py"), 0o751)
        self.assertEqual(self.run_script("s.py").stdout, "caf\xe9!\n")
        self.assertEqual(self.run_script("s.py").stdout, "caf\xe9!!\n")
        self.assertCodeKept(original)
        self.assertEqual(os.stat(self.path("s.py")).st_mode & 0o777, 0o751)

    def test_bom_is_kept(self):
        original = b"\xef\xbb\xbffrom caboose import Value\na = Value(0)\na.value += 1\n"
        self.write("s.py", original)
        self.run_script("s.py")
        self.run_script("s.py")
        self.assertCodeKept(original)
        self.assertTrue(self.read("s.py").endswith(b"# a = 2\n# ///\n"))

    def test_code_after_the_block_is_kept_and_runs(self):
        self.write("s.py", COUNTER)
        self.run_script("s.py")
        with open(self.path("s.py"), "a") as file:
            file.write("print('after', a.value)\n")
        self.assertEqual(self.output("s.py"), ["1", "after", "2"])
        self.assertEqual(self.output("s.py"), ["2", "after", "3"])
        self.assertCompiles("s.py")
        self.assertEqual(self.read("s.py").count(b"# /// caboose"), 1)

    def test_block_text_inside_a_string_is_not_the_block(self):
        decoy = 'DOC = """\n# /// caboose\n# a = 99\n# ///\n"""\n'
        original = (decoy + textwrap.dedent(COUNTER) + decoy.replace("DOC", "END")).encode()
        self.write("s.py", original)
        self.assertEqual(self.output("s.py") + self.output("s.py"), ["0", "1"])
        self.assertCodeKept(original)

    def test_pep723_script_block_is_untouched(self):
        header = '# /// script\n# requires-python = ">=3.9"\n# dependencies = []\n# ///\n'
        original = (header + textwrap.dedent(COUNTER)).encode()
        self.write("s.py", original)
        self.assertEqual(self.output("s.py") + self.output("s.py"), ["0", "1"])
        self.assertCodeKept(original)

    def test_symlink_writes_to_the_target(self):
        self.write("real.py", COUNTER)
        os.symlink("real.py", self.path("link.py"))
        self.assertEqual(self.output("link.py") + self.output("link.py"), ["0", "1"])
        self.assertTrue(os.path.islink(self.path("link.py")))
        self.assertIn(b"# a = 2\n", self.read("real.py"))


class TheTrailerFormat(ScriptCase):
    def roundtrip(self, expression):
        self.write("s.py", f"""\
            import datetime, sys
            from caboose import Value
            x = Value(None)
            if sys.argv[1:] == ["set"]:
                x.value = {expression}
            else:
                print(repr(x.value == ({expression}) or x.value))
        """)
        self.run_script("s.py", "set")
        return self.run_script("s.py").stdout.strip()

    def test_literals_round_trip_and_are_readable(self):
        cases = {
            "-12345678901234567890": "# x = -12345678901234567890",
            "0.1": "# x = 0.1",
            "-0.5j + 2": "# x = (2-0.5j)",
            "'caf\u00e9\\n'": "# x = 'caf\\xe9\\n'",
            "b'\\x00\\xff'": "# x = b'\\x00\\xff'",
            "(1, [True, None], {'k': {2, 1}})": "# x = (1, [True, None], {'k': {1, 2}})",
            "(1,)": "# x = (1,)",
            "set()": "# x = set()",
        }
        for expression, line in cases.items():
            with self.subTest(expression=expression):
                self.assertEqual(self.roundtrip(expression), "True")
                self.assertIn(line.encode() + b"\n", self.read("s.py"))
                self.assertTrue(self.read("s.py").split(b"# /// caboose")[1].isascii())

    def test_nan_and_infinities_round_trip(self):
        self.write("s.py", """\
            import math, sys
            from caboose import Value
            x = Value(None)
            if sys.argv[1:]:
                x.value = [float("nan"), float("inf"), -float("inf"), complex(1, float("inf"))]
            else:
                nan, inf, minus, c = x.value
                print(math.isnan(nan), inf == math.inf, minus == -math.inf, c.imag == math.inf)
        """)
        self.run_script("s.py", "set")
        self.assertEqual(self.output("s.py"), ["True"] * 4)

    def test_other_objects_are_pickled_and_marked(self):
        self.write("s.py", """\
            import sys
            from collections import OrderedDict
            from caboose import Value
            x = Value(None)
            if sys.argv[1:]:
                x.value = OrderedDict(a=1)
            print(type(x.value).__name__, dict(x.value or {}))
        """)
        self.run_script("s.py", "set")
        self.assertEqual(self.run_script("s.py").stdout, "OrderedDict {'a': 1}\n")
        self.assertRegex(self.read("s.py").decode(), r"\n# x = pickle\('[A-Za-z0-9+/=]+'\)\n")

    def test_hand_edit_is_read(self):
        self.write("s.py", COUNTER)
        self.run_script("s.py")
        self.write("s.py", self.read("s.py").replace(b"# a = 1", b"# a = 41  # edited"))
        self.assertEqual(self.output("s.py"), ["41"])

    def test_later_assignment_wins(self):
        self.write("s.py", COUNTER + "# /// caboose\n# a = 1\n# b = 0\n# a = 7\n# ///\n")
        self.assertEqual(self.output("s.py"), ["7"])

    def test_broken_hand_edit_names_the_line_and_writes_nothing(self):
        for bad in ["a = [1,", "a = os.system('x')", "1a = 2", "a == 2", "a = 1; b = 2"]:
            with self.subTest(bad=bad):
                self.write("s.py", COUNTER + f"# /// caboose\n# b = 1\n# {bad}\n# ///\n")
                before = self.read("s.py")
                result = self.run_script("s.py", check=False)
                self.assertRegex(result.stderr, r"CabooseError: caboose: .*s\.py:7: ")
                self.assertEqual(self.read("s.py"), before)

    def test_block_cut_short_keeps_complete_assignments(self):
        self.write("s.py", COUNTER + "# /// caboose\n# a = 5\n# a = 6")
        self.assertEqual(self.output("s.py"), ["5"])
        self.assertTrue(self.read("s.py").endswith(b"# a = 6\n# ///\n"))
        self.assertCompiles("s.py")


class InPlaceChanges(ScriptCase):
    def test_in_place_mutation_is_persisted_at_exit(self):
        self.write("s.py", """\
            from caboose import Value
            seen = Value(set())
            seen.value.add(len(seen.value))
            print(sorted(seen.value))
        """)
        self.run_script("s.py")
        self.assertEqual(self.run_script("s.py").stdout, "[0, 1]\n")

    def test_save_writes_at_once(self):
        self.write("s.py", """\
            import os
            from caboose import Value
            items = Value([])
            items.value.append(1)
            items.save()
            os._exit(0)
        """)
        self.run_script("s.py")
        self.assertIn(b"# items = [1]\n", self.read("s.py"))


class TheApi(ScriptCase):
    def test_operators_and_call(self):
        self.write("s.py", """\
            from caboose import Value
            a = Value(3)
            print(a + 1, 1 + a, a * 2, a < 4, a == 3, -a, a(), a(0), a(), a >= 1)
            a += 5
            a -= 1
            print(a.value)
        """)
        out = self.output("s.py")
        self.assertEqual(out, "4 4 6 True True -3 3 0 0 False 4".split())
        self.assertIn(b"# a = 4\n", self.read("s.py"))

    def test_update_returns_the_new_value(self):
        self.write("s.py", """\
            from caboose import Value
            n = Value(1)
            print(n.update(lambda v: v * 10))
        """)
        self.assertEqual(self.output("s.py") + self.output("s.py"), ["10", "100"])

    def test_generic_alias_works_at_run_time(self):
        self.write("s.py", """\
            from caboose import Value
            names: Value[list[str]] = Value([])
            print(Value[int] is Value, names.value)
        """.replace("list[str]", "list"))
        self.assertEqual(self.output("s.py"), ["True", "[]"])


class Concurrency(ScriptCase):
    def test_update_from_several_processes_loses_nothing(self):
        self.write("s.py", """\
            from caboose import Value
            n = Value(0)
            for _ in range(200):
                n.update(lambda v: v + 1)
        """)
        self.write("r.py", "from caboose import Value\nprint(Value(0, key='n').value)\n")
        procs = [
            subprocess.Popen([sys.executable, "s.py"], cwd=self.folder) for _ in range(4)
        ]
        for proc in procs:
            self.assertEqual(proc.wait(timeout=120), 0)
        self.run_script("s.py")
        self.assertIn(b"# n = 1000\n", self.read("s.py"))

    def test_sigkill_loop_never_loses_or_mangles(self):
        import random
        import signal

        self.write("s.py", """\
            from caboose import Value
            n = Value(0)
            print(n.value, flush=True)
            while True:
                n.value += 1
        """)
        rng, last = random.Random(7), 0
        for _ in range(10):
            proc = subprocess.Popen(
                [sys.executable, "s.py"], cwd=self.folder, stdout=subprocess.PIPE, text=True
            )
            start = int(proc.stdout.readline())
            self.assertGreaterEqual(start, last)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.05))
            except subprocess.TimeoutExpired:
                pass
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            self.assertCompiles("s.py")
            last = start


    def test_forked_processes_lock_their_own_file(self):
        self.write("s.py", """\
            import multiprocessing
            from caboose import Value
            n = Value(0)
            n.value = 0
            n.value = 0  # the parent has appended, so it holds the file open

            def work(_):
                for _ in range(100):
                    n.update(lambda v: v + 1)

            if __name__ == "__main__":
                with multiprocessing.get_context("fork").Pool(4) as pool:
                    pool.map(work, range(4))
        """)
        self.run_script("s.py")
        self.assertIn(b"# n = 400\n", self.read("s.py"))

    def test_threads_updating_one_value_lose_nothing(self):
        self.write("s.py", """\
            import threading
            from caboose import Value
            n = Value(0)
            def work():
                for _ in range(200):
                    n.update(lambda v: v + 1)
            threads = [threading.Thread(target=work) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            print(n.value)
        """)
        self.assertEqual(self.output("s.py"), ["800"])

    def test_sync_fsyncs_every_write(self):
        self.write("s.py", """\
            import os
            calls, real = [], os.fsync
            os.fsync = lambda fd: calls.append(fd) or real(fd)
            from caboose import Value
            n = Value(0)
            n.value = 1  # the first write creates the block, by compaction
            before = len(calls)
            for i in range(5):
                n.value = i
            print(len(calls) - before)
        """)
        self.assertEqual(self.output("s.py", env={"CABOOSE_SYNC": "1"}), ["5"])
        self.assertEqual(self.output("s.py", env={"CABOOSE_SYNC": "0"}), ["0"])

    def test_long_run_compacts_dead_lines_past_a_bound(self):
        self.write("s.py", """\
            import os
            from caboose import Value
            blob = Value("")
            largest = 0
            for i in range(400):
                blob.value = str(i) * 2000
                largest = max(largest, os.path.getsize(__file__))
            print(largest)
        """)
        largest = int(self.output("s.py")[0])
        self.assertLess(largest, 700_000)  # 400 writes of ~2-6 KB would be over 1.5 MB
        self.assertEqual(self.read("s.py").count(b"# blob = "), 1)

class CommandLine(ScriptCase):
    def caboose(self, *args):
        return self.run_script("caboose.py", *args, check=False)

    def test_show_prints_each_stored_value(self):
        self.write("s.py", COUNTER + "# /// caboose\n# a = 3\n# b = 'x'\n# a = 4\n# ///\n")
        before = self.read("s.py")
        result = self.caboose("show", "s.py")
        self.assertEqual((result.returncode, result.stdout), (0, "a = 4\nb = 'x'\n"))
        self.assertEqual(self.read("s.py"), before)

    def test_show_missing_file_or_bad_block_is_one_line_exit_2(self):
        self.write("bad.py", "# /// caboose\n# a = (\n# ///\n")
        for name in ["missing.py", "bad.py"]:
            with self.subTest(name=name):
                result = self.caboose("show", name)
                self.assertEqual(result.returncode, 2)
                self.assertRegex(result.stderr, rf"^caboose: .*{name}.*\n$")
                self.assertNotIn("Traceback", result.stderr)

    def test_help_names_the_commands(self):
        result = self.caboose("--help")
        self.assertEqual(result.returncode, 0)
        for word in ["--selftest", "show SCRIPT", "# /// caboose"]:
            self.assertIn(word, result.stdout)

    def test_selftest_counts_its_runs_in_its_own_trailer(self):
        first = self.caboose("--selftest")
        second = self.caboose("--selftest")
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        run = int(first.stdout.split("(run ")[1].rstrip(")\n"))
        self.assertEqual(second.stdout, f"caboose selftest: ok (run {run + 1})\n")
        self.assertIn(f"# runs = {run + 1}\n".encode(), self.read("caboose.py"))
        self.assertCompiles("caboose.py")


# -- the benchmark: python test_caboose.py --bench [--quick] --------------------------------
_BENCH_COUNT = 3000  # updates in one timed loop, at most
_BENCH_BUDGET = 0.25  # seconds one timed loop may run: the fsync rows stop early
_BENCH_BIG = 300_000  # bytes of padding in the big script
_BENCH_PAD = "# a comment line standing for the code of a long script: line %06d\n"
_BENCH_FLOOR = "floor: flock, fstat, pwrite, unlock"

# The timed loop every store shares: chunks of 100 updates between clock reads.
_BENCH_LOOP = """\
done, start = 0, time.perf_counter()
while done < {count}:
    for i in range(done, done + 100):
{update}
    done += 100
    if time.perf_counter() - start > {budget}:
        break
print("RESULT", (time.perf_counter() - start) / done * 1e6)
"""

# label: (fsync each update?, setup, untimed first write, update, after the loop)
_BENCH_STORES = {
    _BENCH_FLOOR: (
        "no",
        """\
        from fcntl import LOCK_EX, LOCK_UN, flock
        from os import fstat, pwrite
        fd = os.open(__file__, os.O_RDWR)
        at = fstat(fd).st_size
        """,
        """\
        pwrite(fd, b"# /// caboose\\n# ///\\n", at)
        at += len(b"# /// caboose\\n")
        """,
        """\
        flock(fd, LOCK_EX)
        fstat(fd)
        record = b"# v = %d\\n# ///\\n" % i
        pwrite(fd, record, at)
        at += len(record) - len(b"# ///\\n")
        flock(fd, LOCK_UN)
        """,
        "",
    ),
    "caboose": (
        "no",
        "from caboose import Value\nv = Value(0)\n",
        "v.value = -1\n",
        "v.value = i\n",
        "",
    ),
    "caboose, SYNC = True": (
        "yes",
        "import caboose\nfrom caboose import Value\ncaboose.SYNC = True\nv = Value(0)\n",
        "v.value = -1\n",
        "v.value = i\n",
        "",
    ),
    "pycaboose": (
        "no",
        "from pycaboose import Value\nv = Value(0)\n",
        "v.value = -1\n",
        "v.value = i\n",
        "",
    ),
    "shelve": (
        "no",
        'import dbm\nimport shelve\ndb = shelve.open(__file__ + ".shelf", "n")\n',
        'db["v"] = -1\n',
        'db["v"] = i\n',
        'db.close()\nprint("NOTE", dbm.whichdb(__file__ + ".shelf"))\n',
    ),
    "JSON file: write a temporary file, os.replace": (
        "no",
        'import json\npath, temp, state = __file__ + ".json", __file__ + ".tmp", {}\n',
        "",
        """\
        state["v"] = i
        with open(temp, "w") as file:
            file.write(json.dumps(state))
        os.replace(temp, path)
        """,
        "",
    ),
    "sqlite3, autocommit, INSERT OR REPLACE": (
        "yes",
        """\
        import sqlite3
        for stale in (__file__ + ".sqlite3", __file__ + ".sqlite3-journal"):
            if os.path.exists(stale):
                os.remove(stale)
        db = sqlite3.connect(__file__ + ".sqlite3", isolation_level=None)
        db.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value)")
        """,
        "",
        """db.execute("INSERT OR REPLACE INTO state VALUES ('v', ?)", (i,))\n""",
        "db.close()\n",
    ),
}

# Registered before caboose is imported, the handler runs after caboose's own.
_BENCH_EXIT = """\
import atexit
import time
atexit.register(lambda: print("RESULT", (time.perf_counter() - end) * 1e3))
from caboose import Value
k0 = Value(0)
"""

_BENCH_LOAD = """\
import time
from caboose import Value
start = time.perf_counter()
k0 = Value(0)
print("RESULT", (time.perf_counter() - start) * 1e3)
"""


def _bench_loop_script(padding, setup, first, update, after=""):
    """A script: padding, setup, one untimed first write, the timed loop, after."""
    update = textwrap.indent(textwrap.dedent(update), " " * 8)
    loop = _BENCH_LOOP.format(count=_BENCH_COUNT, budget=_BENCH_BUDGET, update=update)
    parts = [padding, "import os\nimport time\n", setup, first, loop, after]
    return "".join(textwrap.dedent(part) for part in parts)


def _bench_padding(size):
    """About size bytes of comment lines to put above a script's code."""
    return "".join(_BENCH_PAD % n for n in range(size // len(_BENCH_PAD % 0)))


def _bench_kb(size):
    """A script's size for a heading: 0.3 KB script, 300 KB script."""
    return f"{size / 1000:.{1 if size < 10_000 else 0}f} KB script"


def _bench_block(keys):
    """A caboose block of that many keys: k0 = 0, then ints, strings and lists."""
    values = ["{n}", "'text {n}'", "[{n}, {half}]"]
    lines = [f"# k{n} = {values[n % 3]}\n".format(n=n, half=n / 2) for n in range(keys)]
    return "# /// caboose\n" + "".join(lines) + "# ///\n"


def _bench_run(path, env):
    """Run python PATH in its folder; return (wall ms, RESULT float, NOTE text)."""
    command = [sys.executable, os.path.basename(path)]
    options = dict(cwd=os.path.dirname(path), env=env, capture_output=True)
    options.update(text=True, timeout=300)
    start = time.perf_counter()
    child = subprocess.run(command, **options)
    wall = (time.perf_counter() - start) * 1e3
    if child.returncode:
        raise RuntimeError(f"{path} exited {child.returncode}:\n{child.stderr}")
    lines = [line.split(" ", 1) for line in child.stdout.splitlines()]
    found = {line[0]: line[1] for line in lines if len(line) == 2}
    result = float(found["RESULT"]) if "RESULT" in found else None
    return wall, result, found.get("NOTE")


def _bench_medians(cases, rounds, env, wall=False, notes=None):
    """The median per case over alternating runs: A, B, C, A, B, C, ...

    cases maps a script's path to its text, written afresh before each run, or
    to None: run the file as it is.  The measure is the RESULT the child prints,
    or with wall=True the time from starting the process to its end.
    """
    samples = {path: [] for path in cases}
    for _ in range(rounds):
        for path, text in cases.items():
            if text is not None:
                with open(path, "w") as file:
                    file.write(text)
            elapsed, result, note = _bench_run(path, env)
            samples[path].append(elapsed if wall else result)
            if note and notes is not None:
                notes[path] = note
    return {path: statistics.median(values) for path, values in samples.items()}


def _bench_importtime(modules, folder, env, rounds):
    """Median cumulative µs of `python -X importtime -c "import MODULE"`, each."""
    times = {module: [] for module in modules}
    for _ in range(rounds):
        for module in modules:
            command = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
            options = dict(cwd=folder, env=env, capture_output=True, text=True)
            for line in subprocess.run(command, **options).stderr.splitlines():
                fields = [field.strip() for field in line.split("|")]
                if len(fields) == 3 and fields[2] == module:
                    times[module].append(int(fields[1]))
    return {module: statistics.median(values) for module, values in times.items()}


def _bench_filesystem(path):
    """The type of the file system path is on, where /proc/mounts tells it."""
    try:
        with open("/proc/mounts") as file:
            mounts = [line.split()[1:3] for line in file]
    except OSError:
        return "file system not known"
    path = os.path.realpath(path) + "/"
    inside = [(len(point), kind) for point, kind in mounts if path.startswith(point)]
    return max(inside)[1] if inside else "file system not known"


def _bench_table(header, rows):
    """A Markdown table with padded columns: the first aligned left, the rest right."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[n]) for row in cells) for n in range(len(header))]
    rule = ["-" * widths[0]] + ["-" * (width - 1) + ":" for width in widths[1:]]

    def line(row):
        padded = [row[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    return "\n".join(line(row) for row in [cells[0], rule] + cells[1:])


def _bench_ratio(label, numerator, denominator, target):
    """A row of the targets table: the ratio, its target, PASS or MISS."""
    if numerator is None or not denominator or denominator <= 0:
        return [label, "n/a", f"<= {target}", "n/a"]
    value = numerator / denominator
    verdict = "PASS" if value <= target else "MISS"
    return [label, f"{value:.2f}", f"<= {target}", verdict]


def _bench_update(folder, stores, rounds, env):
    """µs per update for each store, on a small and a 300 KB script."""
    cases, paths, notes, sizes = {}, {}, {}, {}
    for size, padding in (("small", ""), ("big", _bench_padding(_BENCH_BIG))):
        for number, (label, (_, *code)) in enumerate(stores.items()):
            path = paths[size, label] = os.path.join(folder, f"{size}_{number}.py")
            cases[path] = _bench_loop_script(padding, *code)
        sizes[size] = len(cases[paths[size, "caboose"]])
    times = _bench_medians(cases, rounds, env, notes=notes)
    small = {label: times[paths["small", label]] for label in stores}
    big = {label: times[paths["big", label]] for label in stores}
    header = ["store", "fsync"] + [_bench_kb(sizes[size]) for size in sizes]
    rows = []
    for label, (sync, *_) in stores.items():
        note = notes.get(paths["small", label])
        name = f"{label} ({note})" if note else label
        rows.append([name, sync, f"{small[label]:.1f}", f"{big[label]:.1f}"])
    print("\n## Update: µs per `v.value = i`\n")
    print(f"A loop of {_BENCH_COUNT} updates (fewer if it passes {_BENCH_BUDGET} s)")
    print("after one untimed first write; the exit is not timed.  The floor is the")
    print("system calls of a locked append alone.  sqlite3 has its defaults:")
    print("journal_mode=DELETE, synchronous=FULL.\n")
    print(_bench_table(header, rows))
    return small, big, sizes


def _bench_startup(folder, kinds, rounds, env):
    """Wall ms of a 200-line script with 10 Values whose block is written."""
    cases = {}
    for number, kind in enumerate(kinds):
        lines = [] if kind == "plain variables" else [f"from {kind} import Value"]
        for n in range(10):
            if kind == "plain variables":
                lines += [f"v{n} = 0", f"if v{n} == 0:", f"    v{n} = {n + 1}"]
            else:
                lines += [f"v{n} = Value(0)", f"if v{n}.value == 0:"]
                lines += [f"    v{n}.value = {n + 1}"]
        while len(lines) < 199:
            lines += [f"def f{len(lines)}(x):", f"    return x + {len(lines)}"]
        lines += ["done = True"] * (200 - len(lines))
        path = os.path.join(folder, f"startup_{number}.py")
        with open(path, "w") as file:
            file.write("\n".join(lines) + "\n")
        _bench_run(path, env)  # writes the block, and caches the imports' bytecode
        cases[path] = None
    walls = dict(zip(kinds, _bench_medians(cases, rounds, env, wall=True).values()))
    imports = _bench_importtime(kinds[1:], folder, env, rounds)
    rows = [
        [kind, f"{ms:.1f}", f"{ms - walls[kinds[0]]:+.1f}"]
        for kind, ms in walls.items()
    ]
    rows[0][2] = ""
    print("\n## Startup: a 200-line script with 10 Values, its block already written\n")
    print(f"The wall time of the whole process, median of {rounds} runs; the")
    print("baseline is the same script with plain variables.\n")
    print(_bench_table(["script", "ms", "added ms"], rows))
    print("\n`python -X importtime -c 'import MODULE'`, cumulative:\n")
    print(_bench_table(["module", "µs"], [[m, f"{us}"] for m, us in imports.items()]))
    return {kind: ms - walls[kinds[0]] for kind, ms in walls.items()}


def _bench_scale(folder, sizes, rounds, env):
    """Load and update with 10 to 10,000 keys; a compaction at exit."""
    counts = [10, 1000, 10_000]
    cases = {}
    setup = "from caboose import Value\nk0 = Value(0)\n"
    loop = _bench_loop_script("", setup, "k0.value = -1\n", "k0.value = i\n")
    for name, code in (("load", _BENCH_LOAD), ("keys", loop)):
        for count in counts:
            path = os.path.join(folder, f"{name}_{count}.py")
            cases[path] = code + _bench_block(count)
    times = list(_bench_medians(cases, rounds, env).values())
    load, update = times[: len(counts)], times[len(counts) :]
    shapes = {  # each with its block already written: the first write appends to it
        _bench_kb(sizes["small"]): ("", _bench_block(1)),
        _bench_kb(sizes["big"]): (_bench_padding(_BENCH_BIG), _bench_block(1)),
        "10,000 keys": ("", _bench_block(10_000)),
    }
    cases = {}
    for number, (padding, block) in enumerate(shapes.values()):
        for write in (0, 1):
            code = "k0.value += 1\n" * write + "end = time.perf_counter()\n"
            path = os.path.join(folder, f"exit_{number}_{write}.py")
            cases[path] = padding + _BENCH_EXIT + code + block
    ends = list(_bench_medians(cases, rounds, env).values())
    compactions = [f"{wrote - idle:.2f}" for idle, wrote in zip(ends[::2], ends[1::2])]
    header = ["keys in the block"] + [f"{count:,}" for count in counts]
    rows = [["load: the first `Value(0)`, ms"] + [f"{ms:.2f}" for ms in load]]
    rows += [["update: µs per `v.value = i`"] + [f"{us:.1f}" for us in update]]
    print("\n## Scale\n")
    print(_bench_table(header, rows) + "\n")
    print("A compaction at exit: the time from the script's last line to the end")
    print("of the exit handlers after one write, less the same with no write.\n")
    print(_bench_table(["script"] + list(shapes), [["ms"] + compactions]))
    return dict(zip(counts, load))


def bench(argv):
    """Time caboose against the floor, pycaboose and the standard library's stores."""
    if argv not in ([], ["--quick"]):
        print("usage: python test_caboose.py --bench [--quick]", file=sys.stderr)
        return 2
    rounds, startup_rounds = (3, 5) if argv else (7, 21)
    started = time.perf_counter()
    here = os.path.dirname(os.path.abspath(__file__))
    # A fresh bytecode cache and no CABOOSE_SYNC: as an installed module runs.
    unset = ("CABOOSE_SYNC", "PYTHONDONTWRITEBYTECODE")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    has_pycaboose = importlib.util.find_spec("pycaboose") is not None
    stores = dict(_BENCH_STORES)
    if not has_pycaboose:
        del stores["pycaboose"]
    if sys.platform == "win32":  # no flock, no pwrite
        del stores[_BENCH_FLOOR]
    print("# caboose benchmark\n")
    print(f"- machine: {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"- python: {sys.version.split()[0]}, {sys.executable}")
    where = tempfile.gettempdir()
    print(f"- temporary folder: {where} ({_bench_filesystem(where)})")
    if has_pycaboose:
        from importlib.metadata import version

        print(f"- pycaboose: {version('pycaboose')}")
    else:
        print("- pycaboose: not importable by this python; its rows are left out")
    print(f"- each figure: the median of {rounds} runs in turn (A, B, C, A, B, ...),")
    print("  each run a new python process running a script written for it")

    with tempfile.TemporaryDirectory(prefix="caboose-bench-") as folder:
        shutil.copy(os.path.join(here, "caboose.py"), folder)
        small, big, sizes = _bench_update(folder, stores, rounds, env)
        kinds = ["plain variables", "caboose"] + ["pycaboose"] * has_pycaboose
        added = _bench_startup(folder, kinds, startup_rounds, env)
        load = _bench_scale(folder, sizes, rounds, env)

    big_label = f"update, {_bench_kb(sizes['big'])} / small script"
    rows = [
        _bench_ratio(
            "update, small script / floor",
            small["caboose"],
            small.get(_BENCH_FLOOR),
            1.5,
        ),
        _bench_ratio(big_label, big["caboose"], small["caboose"], 1.2),
        _bench_ratio(
            "startup added, caboose / pycaboose",
            added["caboose"],
            added.get("pycaboose"),
            0.15,
        ),
        _bench_ratio("load, 10,000 keys / 1,000 keys", load[10_000], load[1000], 12),
    ]
    print("\n## Targets\n")
    print(_bench_table(["ratio", "value", "target", "result"], rows))
    print(f"\nThe benchmark took {time.perf_counter() - started:.0f} s.")
    return 0


def main():
    if sys.argv[1:2] == ["--bench"]:
        return bench(sys.argv[2:])
    program = unittest.main(exit=False)
    result = program.result
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"{passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
