/*
 * hist_check.c - checks of src/fa_hist.h, run by tests/test_stats.py.
 *
 *  1. Every value from 0 to 2^27 us, the top of the last bucket (all of them
 *     below 2^16, then a dense walk), lands in a bucket whose [low, low + width) holds it, and bucket
 *     indexes never decrease as values grow.
 *  2. A bucket is at most 1/16 of its lower bound wide (6.25% resolution).
 *  3. Values past the last bucket are clamped into it.
 *  4. Quantiles of known samples come out within half a bucket.
 *  5. Four threads recording at once lose no sample (relaxed atomics).
 * Prints "hist_check ok" and exits 0, or names the first failure and exits 1.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "fa_hist.h"

#define THREADS 4
#define PER_THREAD 200000u

static int failures;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            if (++failures > 10)                                          \
                exit(1);                                                  \
        }                                                                 \
    } while (0)

static void check_value(uint64_t v, unsigned *last_idx)
{
    unsigned idx = fa_hist_index(v);
    uint64_t low = fa_hist_bucket_low(idx), width = fa_hist_bucket_width(idx);
    CHECK(idx < FA_HIST_BUCKETS, "index %u of %" PRIu64 " out of range", idx, v);
    CHECK(low <= v && v < low + width, "%" PRIu64 " outside bucket %u [%" PRIu64 ", +%" PRIu64 ")",
          v, idx, low, width);
    CHECK(idx >= *last_idx, "index went down at %" PRIu64, v);
    CHECK(width == 1 || width * 16 <= low, "bucket %u too wide: %" PRIu64 " at %" PRIu64,
          idx, width, low);
    *last_idx = idx;
}

static fa_hist shared;

static void *record_many(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        fa_hist_record_ns(&shared, (seed >> 33) % 5000000u);     /* 0-5 ms */
    }
    return NULL;
}

int main(void)
{
    unsigned last = 0;
    for (uint64_t v = 0; v < (1u << 16); v++)
        check_value(v, &last);
    for (uint64_t v = 1u << 16; v < ((uint64_t)1 << 27); v += v / 97 + 1)
        check_value(v, &last);
    check_value(((uint64_t)1 << 27) - 1, &last);
    CHECK(last == FA_HIST_BUCKETS - 1, "2^27 - 1 us is not in the last bucket");

    CHECK(fa_hist_index((uint64_t)1 << 40) == FA_HIST_BUCKETS - 1, "no clamp at 2^40");
    CHECK(fa_hist_index(UINT64_MAX) == FA_HIST_BUCKETS - 1, "no clamp at UINT64_MAX");

    /* 4. 100 samples of 10 us, 98 of 1000 us, 2 of 50000 us */
    static fa_hist h;
    uint64_t counts[FA_HIST_BUCKETS];
    fa_hist_init(&h);
    CHECK(fa_hist_quantile_us(counts, fa_hist_snapshot(&h, counts), 0.5) == 0, "empty p50");
    for (int i = 0; i < 100; i++)
        fa_hist_record_ns(&h, 10000);
    for (int i = 0; i < 98; i++)
        fa_hist_record_ns(&h, 1000000);
    for (int i = 0; i < 2; i++)
        fa_hist_record_ns(&h, 50000000);
    uint64_t total = fa_hist_snapshot(&h, counts);
    CHECK(total == 200, "total %" PRIu64, total);
    uint64_t p50 = fa_hist_quantile_us(counts, total, 0.50);
    uint64_t p99 = fa_hist_quantile_us(counts, total, 0.99);
    uint64_t p100 = fa_hist_quantile_us(counts, total, 1.0);
    CHECK(p50 == 10, "p50 %" PRIu64 " != 10", p50);
    CHECK(p99 >= 970 && p99 <= 1032, "p99 %" PRIu64 " not within 3.2%% of 1000", p99);
    CHECK(p100 >= 48400 && p100 <= 51600, "max %" PRIu64 " not within 3.2%% of 50000", p100);
    CHECK(fa_hist_sum_us(&h) == 100u * 10 + 98u * 1000 + 2u * 50000, "sum %" PRIu64,
          fa_hist_sum_us(&h));

    /* 5. */
    pthread_t t[THREADS];
    fa_hist_init(&shared);
    for (uintptr_t i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, record_many, (void *)(i + 1)) == 0, "pthread_create");
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    total = fa_hist_snapshot(&shared, counts);
    CHECK(total == (uint64_t)THREADS * PER_THREAD, "lost samples: %" PRIu64, total);

    if (failures)
        return 1;
    puts("hist_check ok");
    return 0;
}
