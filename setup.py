"""Build the fastaccept._core and fastaccept._loadgen extensions from fastaccept/*.pyx and src/."""
import sys

from setuptools import Extension, setup

if not sys.platform.startswith("linux"):
    raise SystemExit("fastaccept needs Linux (accept4, epoll, eventfd, futex)")

from Cython.Build import cythonize  # noqa: E402  (after the platform check)

C_FLAGS = ["-O2", "-Wall", "-Wextra", "-std=c11"]
HEADERS = ["src/fa_ring.h", "src/fa_park.h", "src/fa_accept.h", "src/fa_accept_errno.h",
           "src/fa_fdtable.h", "src/fa_hist.h", "src/fa_http.h"]
LOADGEN_HEADERS = ["src/fa_loadgen.h", "src/fa_inline.h", "src/fa_accept_errno.h",
                   "src/fa_fdtable.h"]

extensions = [
    Extension(
        "fastaccept._core",
        sources=["fastaccept/_core.pyx", "src/fa_accept.c", "src/fa_http.c"],
        include_dirs=["src"],
        depends=HEADERS,
        extra_compile_args=C_FLAGS,
        define_macros=[("_GNU_SOURCE", "1")],
    ),
    # the benchmark instruments: load generator and c-inline reference server
    Extension(
        "fastaccept._loadgen",
        sources=["fastaccept/_loadgen.pyx", "src/fa_loadgen.c", "src/fa_inline.c"],
        include_dirs=["src"],
        depends=LOADGEN_HEADERS,
        extra_compile_args=C_FLAGS,
        define_macros=[("_GNU_SOURCE", "1")],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
