"""Build the C tests of src/ and run them: the stress tests (tests/c/stress_ring.c:
the ring, the parking lot and the accept loop; tests/c/stress_http.c: the loop's
HTTP mode) and the queue-wait histogram's check (tests/c/hist_check.c).

Each stress program runs in three builds: plain -O2, ThreadSanitizer, and
AddressSanitizer with UndefinedBehaviorSanitizer. Each must exit 0 with no
sanitizer report. The programs' own checks (exactly-once delivery, order, no
lost wake-up, no fd leak; for HTTP every request answered once and in order,
every bad head answered from C with its status, the loop's counters equal to
what the clients did) are described at the top of each; a hang becomes a
failure through their watchdog (-T) and, as a last resort, the subprocess
timeout.

The sources are compiled from the checkout (src/), not taken from the
installed package: this tests the C core itself, under flags (-Werror,
sanitizers) that the extension build does not use.

A test is skipped only when gcc is missing or cannot build and run a trivial
program with the sanitizer (libtsan/libasan/libubsan not installed).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
STRESS_C = ROOT / "tests" / "c" / "stress_ring.c"
HTTP_STRESS_C = ROOT / "tests" / "c" / "stress_http.c"
HIST_C = ROOT / "tests" / "c" / "hist_check.c"
GCC = shutil.which("gcc")
SETARCH = shutil.which("setarch")

COMMON_FLAGS = ["-std=c11", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
                "-D_GNU_SOURCE", f"-I{SRC}"]

#: Bound on one run; the program's watchdog (-T) fires long before this.
RUN_TIMEOUT_S = 150
#: The program fails if any single wait, or the whole run, makes no progress
#: for this long (a lost wake-up shows up as a thread that never returns).
HANG_BOUND_S = "30"

#: Strings a sanitizer prints when it finds something, even if the exit code
#: were to come out 0 (e.g. a report from a thread racing with exit).
REPORT_MARKERS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer",
                  "ERROR: LeakSanitizer", "runtime error:")

#: TSan on some kernels (large mmap_rnd_bits) cannot place its shadow memory
#: in a randomised layout; the cure is to run without ASLR.
MAPPING_ERRORS = ("unexpected memory mapping", "FATAL: ThreadSanitizer: unsupported VMA range")


class Build(NamedTuple):
    flags: List[str]
    env: Dict[str, str]


BUILDS = {
    "plain": Build(["-O2"], {}),
    # GCC cannot instrument standalone fences for TSan and warns (-Wtsan):
    # TSan then treats them as no-ops. That loses nothing here: the fences
    # only order the Dekker handshakes (a store, then a load of another
    # word); every happens-before edge that data relies on comes from an
    # acquire/release pair or the mutex, which TSan does model.
    "tsan": Build(["-O1", "-fsanitize=thread", "-Wno-tsan"],
                  {"TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1:"
                                   "report_signal_unsafe=1:exitcode=66"}),
    "asan": Build(["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                   "-fno-omit-frame-pointer"],
                  {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0:"
                                   "detect_stack_use_after_return=1:exitcode=66",
                   "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=66"}),
}

#: Sizes of each program in each build: 2-core shared machine, every run well
#: under 30 s (stress_ring: all three builds well under a minute).
RING_ARGS = {
    "plain": ["-m", "2000000", "-r", "20000", "-k", "2000"],
    "tsan": ["-m", "300000", "-r", "5000", "-k", "500"],
    "asan": ["-m", "1000000", "-r", "10000", "-k", "1000"],
}
#: Connections per client thread (3 client threads). The deadlines (300 ms
#: for a head, 1 s idle) set a floor of about 1.5 s whatever the size; these
#: take 2-4 s each on 2 idle cores.
HTTP_ARGS = {
    "plain": ["-n", "400"],
    "tsan": ["-n", "150"],
    "asan": ["-n", "300"],
}

PROBE_C = r"""
#include <pthread.h>
#include <stdlib.h>
static void *run(void *arg) { return arg; }
int main(void)
{
    pthread_t t;
    void *p = malloc(16);
    if (pthread_create(&t, NULL, run, p) != 0 || pthread_join(t, NULL) != 0)
        return 1;
    free(p);
    return 0;
}
"""


def _run(cmd: List[str], env: Optional[Dict[str, str]] = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def _no_aslr(cmd: List[str]) -> List[str]:
    return [SETARCH, platform.machine(), "-R", *cmd]


def _runner(binary: Path, env: Dict[str, str]) -> List[str]:
    """Return the command prefix that runs a binary of this build here:
    the binary itself, or under `setarch -R` when the sanitizer cannot cope
    with the kernel's randomised memory layout."""
    proc = _run([str(binary)], env)
    if proc.returncode == 0:
        return []
    if any(m in proc.stderr for m in MAPPING_ERRORS) and SETARCH is not None:
        if _run(_no_aslr([str(binary)]), env).returncode == 0:
            return _no_aslr([])
    pytest.skip(f"a trivial program built with this sanitizer does not run here: "
                f"{proc.stderr.strip()[:300]}")


def _compile(out: Path, sources: List[Path], flags: List[str]) -> subprocess.CompletedProcess:
    return _run([GCC, *COMMON_FLAGS, *flags, *map(str, sources), "-o", str(out)], timeout=120)


needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc not found on PATH")


def _build_and_run(source: Path, args: List[str], name: str, tmp_path: Path) -> None:
    """Build stress program `source` in build `name` and run it with `args`:
    it must exit 0, say "all passed" and leave no sanitizer report. Skips
    when gcc cannot build or run a trivial program in that build."""
    build = BUILDS[name]

    probe_c = tmp_path / "probe.c"
    probe_c.write_text(PROBE_C)
    probe = tmp_path / "probe"
    proc = _compile(probe, [probe_c], build.flags)
    if proc.returncode != 0:
        pytest.skip(f"gcc cannot build with {' '.join(build.flags)}: "
                    f"{proc.stderr.strip()[:300]}")
    prefix = _runner(probe, build.env)

    binary = tmp_path / f"{source.stem}_{name}"
    proc = _compile(binary, [source, *CORE_C], build.flags)
    assert proc.returncode == 0, f"compile failed:\n{proc.stderr}"

    cmd = [*prefix, str(binary), *args, "-T", HANG_BOUND_S]
    t0 = time.monotonic()
    proc = _run(cmd, build.env, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    # Shown with -rA or on failure: the seed (to replay) and the counters.
    print(f"{' '.join(cmd)}\n({elapsed:.1f} s)\n{proc.stdout}")
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    reports = [m for m in REPORT_MARKERS if m in proc.stderr]
    assert not reports, f"sanitizer report ({', '.join(reports)}):\n{output}"
    assert proc.returncode == 0, output
    assert "all passed" in proc.stdout, output


@needs_gcc
@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDS))
def test_stress(name: str, tmp_path: Path) -> None:
    """The ring, parking and accept-loop stress program (stress_ring.c) exits
    0 and no sanitizer reports anything."""
    _build_and_run(STRESS_C, RING_ARGS[name], name, tmp_path)


@needs_gcc
@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDS))
def test_stress_http(name: str, tmp_path: Path) -> None:
    """The HTTP-mode stress program (stress_http.c: heads parsed in C, bad
    heads answered from C, kept connections given back with their leftover
    bytes, stop and abort with work waiting) exits 0 and no sanitizer
    reports anything."""
    _build_and_run(HTTP_STRESS_C, HTTP_ARGS[name], name, tmp_path)


#: The C the stress programs link with: the product's loop, parking and parsers.
CORE_C = [SRC / "fa_accept.c", SRC / "fa_park.c", SRC / "fa_conn.c", SRC / "fa_http.c",
          SRC / "fa_proxy.c"]
#: Every C file and header under src/, the bench's instruments included.
C_FILES = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.c"))
HEADERS = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.h"))
INCLUDES = [f"-I{SRC}", f"-I{SRC / 'bench'}"]


@needs_gcc
@pytest.mark.parametrize("defines", [[], ["-D_GNU_SOURCE=1"]], ids=["bare", "as-setup.py"])
@pytest.mark.parametrize("c_file", C_FILES)
def test_c_file_compiles_without_warnings(c_file: str, defines: List[str],
                                          tmp_path: Path) -> None:
    """Each src/*.c compiles with -Wall -Wextra -Werror, on its own and with
    the macros setup.py passes."""
    cmd = [GCC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", *defines, *INCLUDES,
           "-c", str(SRC / c_file), "-o", str(tmp_path / "out.o")]
    proc = _run(cmd)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr


@needs_gcc
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_alone(header: str, tmp_path: Path) -> None:
    """Each header includes what it uses, so any include order works."""
    tu = tmp_path / "tu.c"
    tu.write_text(f'#include "{header}"\n#include "{header}"\nint main(void) {{ return 0; }}\n')
    cmd = [GCC, *COMMON_FLAGS, *INCLUDES, "-O2", "-c", str(tu), "-o", str(tmp_path / "tu.o")]
    proc = _run(cmd)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"


@needs_gcc
def test_c_histogram_buckets_quantiles_and_concurrent_records(tmp_path: Path) -> None:
    """fa_hist.h: the buckets, the quantiles and records from several threads
    at once, as hist_check.c checks them (-Werror)."""
    exe = tmp_path / "hist_check"
    proc = _compile(exe, [HIST_C], ["-O1"])
    assert proc.returncode == 0, f"compile failed:\n{proc.stderr}"
    run = _run([str(exe)])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "hist_check ok"
