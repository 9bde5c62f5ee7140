/*
 * kscaling: target e's op groups (benchmarks/cases.py:scaling) on the real kernel.
 *
 * Usage: kscaling NVMAS GROUPS SEED
 *
 * Maps NVMAS private anonymous 4-page VMAs with 1-page holes from 0x100000000000 (not
 * populated, as the model's _many_vmas), then on min(NVMAS, GROUPS) distinct random VMAs
 * runs the model's four-op group: mprotect of page 1 to PROT_READ (a split into 3),
 * mprotect back to read-write (a merge into 1), MADV_GUARD_INSTALL on page 3 and a
 * one-byte write to page 0 (an anonymous fault). Each op is timed alone with
 * clock_gettime(CLOCK_MONOTONIC), as the model's loop times each call with perf_counter.
 *
 * Output: one JSON line {"vmas":N,"groups":G,"errors":E,"setup_s":S,
 * "us_per_kind":{"split":..,"merge":..,"guard_install":..,"fault":..},"us_per_op":..}.
 * NVMAS above vm.max_map_count fails in mmap: the caller (kernel_scaling.py) raises it.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* xorshift64*: a seeded, portable generator for the picks */
static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: kscaling NVMAS GROUPS SEED\n");
		return 2;
	}
	long n = atol(argv[1]), groups = atol(argv[2]);
	rng_state = (uint64_t)atoll(argv[3]) * 0x9E3779B97F4A7C15ULL + 1;
	const long pg = 4096, len = 4 * pg, stride = 5 * pg;
	char *base = (char *)0x100000000000UL;
	double t0 = now();
	for (long i = 0; i < n; i++) {
		if (mmap(base + i * stride, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
	}
	double setup = now() - t0;
	if (groups > n)
		groups = n;
	/* distinct picks: a partial Fisher-Yates shuffle of 0..n-1 */
	long *idx = malloc(sizeof(long) * n);
	if (!idx)
		return 1;
	for (long i = 0; i < n; i++)
		idx[i] = i;
	for (long i = 0; i < groups; i++) {
		long j = i + (long)(rnd() % (uint64_t)(n - i));
		long t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
	double split = 0, merge = 0, guard = 0, fault = 0;
	long errors = 0;
	for (long g = 0; g < groups; g++) {
		char *a = base + idx[g] * stride;
		double a0 = now();
		errors += mprotect(a + pg, pg, PROT_READ) != 0;
		double a1 = now();
		errors += mprotect(a + pg, pg, PROT_READ | PROT_WRITE) != 0;
		double a2 = now();
		errors += madvise(a + 3 * pg, pg, MADV_GUARD_INSTALL) != 0;
		double a3 = now();
		*(volatile char *)a = 'x';
		double a4 = now();
		split += a1 - a0;
		merge += a2 - a1;
		guard += a3 - a2;
		fault += a4 - a3;
	}
	double k = 1e6 / (groups ? groups : 1);
	printf("{\"vmas\":%ld,\"groups\":%ld,\"errors\":%ld,\"setup_s\":%.6f,"
	       "\"us_per_kind\":{\"split\":%.4f,\"merge\":%.4f,\"guard_install\":%.4f,"
	       "\"fault\":%.4f},\"us_per_op\":%.4f}\n",
	       n, groups, errors, setup, split * k, merge * k, guard * k, fault * k,
	       (split + merge + guard + fault) * k / 4);
	return 0;
}
