/*
 * fa_hist.h - a fixed log-linear histogram of durations, for percentiles.
 *
 * Workers record how long each connection waited between accept4() and the
 * moment a worker took it from the ring (the queue wait). Recording must cost
 * next to nothing on the hot path and stay safe from many threads at once, so
 * the histogram is a fixed array of relaxed atomic counters: no lock, no
 * allocation, O(1) per sample. Percentiles are derived only when read.
 *
 * Buckets (values in whole microseconds, FA_HIST_SUB_BITS = 4):
 *  1. values below 16 us get one bucket each (exact);
 *  2. above, every power of two [2^k, 2^(k+1)) is cut into 16 equal buckets,
 *     so a bucket is at most 1/16 = 6.25% of its lower bound wide;
 *  3. the last bucket also holds everything above 2^27 us (about 134 s).
 * Index of v >= 16: with msb the top set bit and shift = msb - 4,
 * (shift + 1) * 16 + (v >> shift) - 16, which continues step 1 at v = 16.
 *
 * Readers take a relaxed snapshot: while workers record, counts taken a few
 * nanoseconds apart may disagree by the samples in flight; a percentile is
 * an estimate anyway.
 */
#ifndef FA_HIST_H
#define FA_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define FA_HIST_SUB_BITS 4u
#define FA_HIST_SUB (1u << FA_HIST_SUB_BITS)
/* Powers of two above the exact range: 2^4 .. 2^27 us. */
#define FA_HIST_OCTAVES 23u
#define FA_HIST_BUCKETS ((FA_HIST_OCTAVES + 1u) * FA_HIST_SUB)

typedef struct fa_hist {
    _Atomic uint64_t sum_us;                    /* for a mean or a Prometheus _sum */
    _Atomic uint64_t buckets[FA_HIST_BUCKETS];
} fa_hist;

_Static_assert(FA_HIST_BUCKETS == 384, "16 exact buckets plus 23 octaves of 16");

static inline void fa_hist_init(fa_hist *h)
{
    atomic_init(&h->sum_us, 0);
    for (unsigned i = 0; i < FA_HIST_BUCKETS; i++)
        atomic_init(&h->buckets[i], 0);
}

static inline unsigned fa_hist_index(uint64_t us)
{
    if (us < FA_HIST_SUB)
        return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us);
    unsigned shift = msb - FA_HIST_SUB_BITS;
    uint64_t idx = (uint64_t)(shift + 1u) * FA_HIST_SUB + ((us >> shift) - FA_HIST_SUB);
    return idx < FA_HIST_BUCKETS ? (unsigned)idx : FA_HIST_BUCKETS - 1u;
}

/* Smallest value (us) that lands in bucket idx. */
static inline uint64_t fa_hist_bucket_low(unsigned idx)
{
    if (idx < FA_HIST_SUB)
        return idx;
    unsigned shift = idx / FA_HIST_SUB - 1u;
    return (uint64_t)(FA_HIST_SUB + idx % FA_HIST_SUB) << shift;
}

/* Width (us) of bucket idx: 1 in the exact range, else 2^shift. */
static inline uint64_t fa_hist_bucket_width(unsigned idx)
{
    return idx < FA_HIST_SUB ? 1u : (uint64_t)1 << (idx / FA_HIST_SUB - 1u);
}

/* Records one duration. Safe from any number of threads. */
static inline void fa_hist_record_ns(fa_hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000u;
    atomic_fetch_add_explicit(&h->buckets[fa_hist_index(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

/* Copies the counts into counts[FA_HIST_BUCKETS]; returns their total. */
static inline uint64_t fa_hist_snapshot(fa_hist *h, uint64_t *counts)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < FA_HIST_BUCKETS; i++) {
        counts[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += counts[i];
    }
    return total;
}

static inline uint64_t fa_hist_sum_us(fa_hist *h)
{
    return atomic_load_explicit(&h->sum_us, memory_order_relaxed);
}

/* The q-quantile (0 < q <= 1) of a snapshot, in us: the middle of the
 * bucket holding the ceil(q * total)-th smallest sample, so within half a
 * bucket (3.2%) of the true value. 0 for an empty snapshot. */
static inline uint64_t fa_hist_quantile_us(const uint64_t *counts, uint64_t total, double q)
{
    if (total == 0)
        return 0;
    double want = q * (double)total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;                                 /* ceil without libm */
    if (rank < 1)
        rank = 1;
    if (rank > total)
        rank = total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < FA_HIST_BUCKETS; i++) {
        seen += counts[i];
        if (seen >= rank)
            return fa_hist_bucket_low(i) + fa_hist_bucket_width(i) / 2u;
    }
    return fa_hist_bucket_low(FA_HIST_BUCKETS - 1u);   /* unreachable: seen == total */
}

#endif /* FA_HIST_H */
