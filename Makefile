# The few verbs a newcomer needs. Each calls the real tool; read the line to
# see what it does.
PYTHON ?= python3
CC = gcc
STRESS_CFLAGS = -std=c11 -O1 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -Isrc
CORE_SRC = src/fa_accept.c src/fa_park.c src/fa_conn.c src/fa_http.c src/fa_proxy.c
STRESS_SRC = tests/c/stress_ring.c $(CORE_SRC)
STRESS_DEPS = $(STRESS_SRC) $(wildcard src/*.h)
HTTP_STRESS_SRC = tests/c/stress_http.c $(CORE_SRC)
HTTP_STRESS_DEPS = $(HTTP_STRESS_SRC) $(wildcard src/*.h)
# GCC cannot instrument standalone fences for TSan (-Wtsan); see tests/test_c_stress.py.
TSAN = -fsanitize=thread -Wno-tsan
ASAN = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# Sizes for `make debug`; pass e.g. STRESS_ARGS="-s b -r 100000 -S 42" to replay or dig,
# HTTP_STRESS_ARGS="-s m -n 200 -S 42" for the HTTP one.
STRESS_ARGS = -m 300000 -r 5000 -k 500
HTTP_STRESS_ARGS = -n 60
TSAN_ENV = TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1 UBSAN_OPTIONS=print_stacktrace=1
# What `make test` runs and how `make bench` runs, e.g. TESTS=tests/test_server.py,
# BENCH_ARGS="--quick --scenario burst".
TESTS = tests
BENCH_ARGS =

# `make fuzz`: libFuzzer on the HTTP parser (tests/c/fuzz_http.c) with ASan and
# UBSan, seeded from tests/http/corpus, then on the PROXY protocol parser
# (tests/c/fuzz_proxy.c), seeded from tests/proxy/corpus, FUZZ_TIME and
# FUZZ_PROXY_TIME seconds. New inputs go to build/fuzz/corpus and
# build/fuzz/proxy-corpus (the first corpus directory), never into the
# repository's; crashes to build/fuzz/.
CLANG ?= clang
FUZZ_TIME ?= 120
FUZZ_PROXY_TIME ?= $(FUZZ_TIME)
FUZZ_CFLAGS = -std=c11 -g -O1 -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_DEPS = tests/c/fuzz_http.c src/fa_http.c src/fa_http.h
FUZZ_ARGS = -max_total_time=$(FUZZ_TIME) -max_len=20480 -timeout=10 -rss_limit_mb=2048 \
	-dict=tests/c/fuzz_http.dict -artifact_prefix=build/fuzz/ -print_final_stats=1
FUZZ_PROXY_DEPS = tests/c/fuzz_proxy.c src/fa_proxy.c src/fa_proxy.h
FUZZ_PROXY_ARGS = -max_total_time=$(FUZZ_PROXY_TIME) -max_len=8192 -timeout=10 \
	-rss_limit_mb=2048 -dict=tests/c/fuzz_proxy.dict -artifact_prefix=build/fuzz/proxy- \
	-print_final_stats=1

.PHONY: build test bench debug fuzz clean

build:
	$(PYTHON) -m pip install .

test:
	$(PYTHON) -m pytest $(TESTS) -q

# -I: the checkout's unbuilt fastaccept/ must not shadow the installed package.
bench:
	$(PYTHON) -I -m fastaccept bench $(BENCH_ARGS)

# The C stress tests of src/ (the ring and the loop, then the loop's HTTP mode)
# under ThreadSanitizer, then ASan+UBSan.
debug: build/stress/stress_tsan build/stress/stress_asan \
		build/stress/stress_http_tsan build/stress/stress_http_asan
	$(TSAN_ENV) build/stress/stress_tsan $(STRESS_ARGS)
	$(ASAN_ENV) build/stress/stress_asan $(STRESS_ARGS)
	$(TSAN_ENV) build/stress/stress_http_tsan $(HTTP_STRESS_ARGS)
	$(ASAN_ENV) build/stress/stress_http_asan $(HTTP_STRESS_ARGS)

build/stress/stress_tsan: $(STRESS_DEPS)
	mkdir -p $(@D) && $(CC) $(STRESS_CFLAGS) $(TSAN) $(STRESS_SRC) -o $@

build/stress/stress_asan: $(STRESS_DEPS)
	mkdir -p $(@D) && $(CC) $(STRESS_CFLAGS) $(ASAN) $(STRESS_SRC) -o $@

build/stress/stress_http_tsan: $(HTTP_STRESS_DEPS)
	mkdir -p $(@D) && $(CC) $(STRESS_CFLAGS) $(TSAN) $(HTTP_STRESS_SRC) -o $@

build/stress/stress_http_asan: $(HTTP_STRESS_DEPS)
	mkdir -p $(@D) && $(CC) $(STRESS_CFLAGS) $(ASAN) $(HTTP_STRESS_SRC) -o $@

fuzz: build/fuzz/fuzz_http build/fuzz/fuzz_proxy
	mkdir -p build/fuzz/corpus build/fuzz/proxy-corpus
	build/fuzz/fuzz_http $(FUZZ_ARGS) build/fuzz/corpus tests/http/corpus
	build/fuzz/fuzz_proxy $(FUZZ_PROXY_ARGS) build/fuzz/proxy-corpus tests/proxy/corpus

build/fuzz/fuzz_http: $(FUZZ_DEPS)
	mkdir -p $(@D) && $(CLANG) $(FUZZ_CFLAGS) tests/c/fuzz_http.c src/fa_http.c -o $@

build/fuzz/fuzz_proxy: $(FUZZ_PROXY_DEPS)
	mkdir -p $(@D) && $(CLANG) $(FUZZ_CFLAGS) tests/c/fuzz_proxy.c src/fa_proxy.c -o $@

clean:
	rm -rf build dist *.egg-info fastaccept/_core.c fastaccept/*.so fastaccept/bench/_loadgen.c fastaccept/bench/*.so .pytest_cache .benchmarks
