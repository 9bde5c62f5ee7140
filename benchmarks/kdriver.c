/*
 * kdriver: runs a vmalab benchmark op program on the real kernel.
 *
 * Usage: kdriver OPS.bin BASE ARENA_PAGES [REPEATS]
 *        kdriver --fork NVMAS PAGES_PER_VMA
 *
 * OPS.bin is a flat array of little-endian int32 records (op, page_offset, npages, arg)
 * written by benchmarks/workload.py (op codes: 0 mmap, 1 munmap, 2 mprotect,
 * 3 MADV_GUARD_INSTALL, 4 MADV_GUARD_REMOVE, 5 one-byte write). Every op acts inside the
 * arena [BASE, BASE + ARENA_PAGES * 4096), which is reserved with MAP_FIXED_NOREPLACE and
 * unmapped before each run. The op loop is timed with clock_gettime(CLOCK_MONOTONIC);
 * the arena is unmapped between runs (not timed).
 *
 * Output: one JSON line {"ops":N,"errors":E,"seconds":[s1,...]}, then one line
 * "PAGEMAP <c...>" with one character per arena page from /proc/self/pagemap after the
 * last run ('G' guard marker, bit 58; 'P' present, bit 63; '.' neither), then the lines of
 * /proc/self/maps (the caller keeps the arena's VMAs).
 *
 * --fork: maps NVMAS separate private anonymous VMAs of PAGES_PER_VMA pages (1-page holes)
 * with MAP_POPULATE, writes one byte in each, then times fork() in the parent, the child's
 * _exit() as seen by waitpid(), and munmap of every VMA (the parent's share of exit).
 * Prints {"fork_s":...,"child_exit_s":...,"unmap_s":...}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

struct op { int32_t op, off, n, arg; };

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fork_case(long nvmas, long per)
{
	char *base = (char *)0x100000000000UL;
	size_t len = (size_t)per * 4096, stride = len + 4096;
	for (long i = 0; i < nvmas; i++) {
		char *a = mmap(base + i * stride, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_POPULATE, -1, 0);
		if (a == MAP_FAILED) { perror("mmap"); return 1; }
		*(volatile char *)a = 1;
	}
	double t0 = now();
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	double t1 = now();
	int st;
	waitpid(pid, &st, 0);
	double t2 = now();
	for (long i = 0; i < nvmas; i++)
		munmap(base + i * stride, len);
	double t3 = now();
	printf("{\"fork_s\":%.6f,\"child_exit_s\":%.6f,\"unmap_s\":%.6f}\n", t1 - t0, t2 - t1,
	       t3 - t2);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--fork"))
		return fork_case(atol(argv[2]), atol(argv[3]));
	if (argc < 4) {
		fprintf(stderr, "usage: %s OPS.bin BASE ARENA_PAGES [REPEATS]\n", argv[0]);
		return 2;
	}
	FILE *f = fopen(argv[1], "rb");
	if (!f) { perror(argv[1]); return 2; }
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	size_t n = sz / sizeof(struct op);
	struct op *ops = malloc(n * sizeof(*ops));
	if (!ops || fread(ops, sizeof(*ops), n, f) != n) { perror("read"); return 2; }
	fclose(f);
	char *base = (char *)strtoull(argv[2], NULL, 0);
	size_t arena = strtoull(argv[3], NULL, 0) * 4096;
	int repeats = argc > 4 ? atoi(argv[4]) : 1;
	long errors = 0;

	printf("{\"ops\":%zu,\"seconds\":[", n);
	for (int r = 0; r < repeats; r++) {
		void *got = mmap(base, arena, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (got != base) { perror("reserve arena"); return 1; }
		munmap(base, arena);
		errors = 0;
		double t0 = now();
		for (size_t i = 0; i < n; i++) {
			char *a = base + (size_t)ops[i].off * 4096;
			size_t len = (size_t)ops[i].n * 4096;
			int rc = 0;
			switch (ops[i].op) {
			case 0:
				rc = mmap(a, len, ops[i].arg, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
					  -1, 0) == a ? 0 : -1;
				break;
			case 1: rc = munmap(a, len); break;
			case 2: rc = mprotect(a, len, ops[i].arg); break;
			case 3: rc = madvise(a, len, MADV_GUARD_INSTALL); break;
			case 4: rc = madvise(a, len, MADV_GUARD_REMOVE); break;
			case 5: *(volatile char *)a = (char)ops[i].arg; break;
			}
			if (rc)
				errors++;
		}
		double t1 = now();
		printf("%s%.9f", r ? "," : "", t1 - t0);
		if (r + 1 < repeats)
			munmap(base, arena);
	}
	printf("],\"errors\":%ld}\n", errors);
	size_t npages = arena / 4096;
	uint64_t *pm = calloc(npages, sizeof(uint64_t));
	int pfd = open("/proc/self/pagemap", O_RDONLY);
	if (!pm || pfd < 0 ||
	    pread(pfd, pm, npages * 8, (off_t)((uintptr_t)base / 4096 * 8)) != (ssize_t)(npages * 8)) {
		perror("pagemap");
		return 1;
	}
	close(pfd);
	fputs("PAGEMAP ", stdout);
	for (size_t i = 0; i < npages; i++)
		putchar(pm[i] >> 58 & 1 ? 'G' : pm[i] >> 63 & 1 ? 'P' : '.');
	putchar('\n');
	fflush(stdout);
	FILE *m = fopen("/proc/self/maps", "r");
	char line[512];
	while (m && fgets(line, sizeof(line), m))
		fputs(line, stdout);
	return 0;
}
