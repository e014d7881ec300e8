"""Build the PROXY protocol parser's fuzz target (tests/c/fuzz_proxy.c)
without libFuzzer, under gcc's AddressSanitizer and UndefinedBehaviorSanitizer,
and replay the whole saved corpus (tests/proxy/corpus/) through it.

The target's own checks (see the top of fuzz_proxy.c: every prefix agrees
with the whole input, a bound only adds ETOOLONG, a complete header's fields
are the bytes it came from, IPv6 text agrees with glibc's inet_pton, a
repaired checksum is accepted) abort on failure; any sanitizer report fails
the test too. The sources are compiled from the checkout, as
tests/test_c_stress.py does. `make fuzz` runs the same target under
libFuzzer (clang).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
FUZZ_C = ROOT / "tests" / "c" / "fuzz_proxy.c"
CORPUS = ROOT / "tests" / "proxy" / "corpus"
GCC = shutil.which("gcc")
CLANG = shutil.which("clang")

SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer"]
FLAGS = ["-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
         f"-I{SRC}", "-DFA_FUZZ_STANDALONE"]
ENV = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=66",
       "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=66"}
REPORT_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                  "check failed:")


def _run(cmd: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=dict(os.environ, **ENV), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


@pytest.mark.skipif(GCC is None, reason="gcc not found on PATH")
def test_corpus_replays_clean_under_asan_ubsan(tmp_path: Path) -> None:
    probe_c = tmp_path / "probe.c"
    probe_c.write_text("#include <stdlib.h>\nint main(void) { free(malloc(4)); return 0; }\n")
    probe = tmp_path / "probe"
    proc = _run([GCC, *SAN_FLAGS, str(probe_c), "-o", str(probe)])
    if proc.returncode != 0 or _run([str(probe)]).returncode != 0:
        pytest.skip(f"gcc cannot build and run with {' '.join(SAN_FLAGS)}: "
                    f"{proc.stderr.strip()[:300]}")

    binary = tmp_path / "fuzz_proxy_replay"
    proc = _run([GCC, *FLAGS, *SAN_FLAGS, str(FUZZ_C), str(SRC / "fa_proxy.c"),
                 "-o", str(binary)])
    assert proc.returncode == 0, f"compile failed:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr

    files = sorted(p for p in CORPUS.iterdir() if p.is_file())
    assert files, "the corpus is empty"
    proc = _run([str(binary), str(CORPUS)])
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
    reports = [m for m in REPORT_MARKERS if m in proc.stderr]
    assert not reports, f"report ({', '.join(reports)}):\n{output}"
    assert proc.returncode == 0, output
    assert f"replayed {len(files)} inputs" in proc.stdout, output


@pytest.mark.skipif(CLANG is None, reason="clang not found on PATH")
@pytest.mark.parametrize("source", ["src/fa_proxy.c", "tests/c/fuzz_proxy.c"])
def test_compiles_without_warnings_under_clang(source: str, tmp_path: Path) -> None:
    """gcc's -Wall -Wextra -Werror check of src/ is in tests/test_c_stress.py;
    the parser and its fuzz target are also clean under clang."""
    cmd = [CLANG, *FLAGS, "-O2", "-c", str(ROOT / source), "-o", str(tmp_path / "out.o")]
    proc = _run(cmd)
    assert proc.returncode == 0 and proc.stderr == "", f"{' '.join(cmd)}\n{proc.stderr}"
