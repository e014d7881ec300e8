"""Build the HTTP parser's fuzz target (tests/c/fuzz_http.c) without libFuzzer,
under gcc's AddressSanitizer and UndefinedBehaviorSanitizer, and replay the
whole saved corpus (tests/http/corpus/) through it.

The target's own checks (see the top of fuzz_http.c: incremental parsing
agrees with parsing at once, offsets stay inside the head, the chunked
decoder agrees with itself however it is fed and in place, unquote matches a
reference) abort on failure; any sanitizer report fails the test too. The
sources are compiled from the checkout, as tests/test_c_stress.py does.
`make fuzz` runs the same target under libFuzzer (clang).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fa_testutil import clang_compiles_clean, replay_fuzz_corpus


def test_corpus_replays_clean_under_asan_ubsan(tmp_path: Path) -> None:
    replay_fuzz_corpus("tests/c/fuzz_http.c", "src/fa_http.c", "tests/http/corpus", tmp_path)


@pytest.mark.parametrize("source", ["src/fa_http.c", "tests/c/fuzz_http.c"])
def test_compiles_without_warnings_under_clang(source: str, tmp_path: Path) -> None:
    """gcc's -Wall -Wextra -Werror check of src/ is in tests/test_c_stress.py;
    the parser and its fuzz target are also clean under clang."""
    clang_compiles_clean(source, tmp_path)
