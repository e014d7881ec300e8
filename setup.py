"""Build fastaccept's extensions from their .pyx files and the C in src/.

    fastaccept._core              the product: accept loop, ring, parking (src/)
    fastaccept.bench._loadgen     the bench's instruments: load generator and the
                                  c-inline reference server (src/bench/); the
                                  product never links or imports them
"""
import sys

from setuptools import Extension, setup

if not sys.platform.startswith("linux"):
    raise SystemExit("fastaccept needs Linux (accept4, epoll, eventfd, futex)")

from Cython.Build import cythonize  # noqa: E402  (after the platform check)

C_FLAGS = ["-O2", "-Wall", "-Wextra", "-std=c11"]
MACROS = [("_GNU_SOURCE", "1")]
CORE_HEADERS = ["src/fa_config.h", "src/fa_ring.h", "src/fa_park.h", "src/fa_accept.h",
                "src/fa_conn.h", "src/fa_accept_errno.h", "src/fa_fdtable.h", "src/fa_hist.h",
                "src/fa_http.h", "src/fa_proxy.h"]
LOADGEN_HEADERS = ["src/bench/fa_loadgen.h", "src/bench/fa_inline.h", "src/fa_config.h",
                   "src/fa_accept_errno.h", "src/fa_fdtable.h"]

extensions = [
    Extension(
        "fastaccept._core",
        sources=["fastaccept/_core.pyx", "src/fa_accept.c", "src/fa_park.c", "src/fa_conn.c",
                 "src/fa_http.c", "src/fa_proxy.c"],
        include_dirs=["src"],
        depends=CORE_HEADERS,
        extra_compile_args=C_FLAGS,
        define_macros=MACROS,
    ),
    Extension(
        "fastaccept.bench._loadgen",
        sources=["fastaccept/bench/_loadgen.pyx", "src/bench/fa_loadgen.c",
                 "src/bench/fa_inline.c"],
        include_dirs=["src", "src/bench"],
        depends=LOADGEN_HEADERS,
        extra_compile_args=C_FLAGS,
        define_macros=MACROS,
    ),
]

# No pickling (the objects hold C state and descriptors) and no doctest dict:
# neither is part of the typed surface the .pyi stubs describe.
DIRECTIVES = {"language_level": "3", "auto_pickle": False, "autotestdict": False}

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
