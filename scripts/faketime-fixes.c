/* Two fixes for libfaketime 0.9.10 (Debian bookworm), preloaded before it by
 * make test-dates (scripts/lib.sh fake_clock); never used in production.
 *
 * 1. glibc's allocator for Redis. Debian's redis-server uses jemalloc, which
 *    reads the clock while it starts; libfaketime allocates while it starts:
 *    each waits on the other and Redis hangs ("Unexpected recursive calls to
 *    clock_gettime()", a known clash: libfaketime issues #130 and #327).
 *    malloc and friends here answer from glibc, so neither waits.
 * 2. Sleeping until a time of a clock libfaketime does not shift. With
 *    FAKETIME_DONT_FAKE_MONOTONIC=1 it still moves the deadline of
 *    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) by the offset, and
 *    Python's time.sleep fails with EINVAL. Only CLOCK_REALTIME goes to
 *    libfaketime here; the other clocks sleep on glibc's own.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <time.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

void *malloc(size_t n) { return __libc_malloc(n); }
void *calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t align, size_t n) { return __libc_memalign(align, n); }
void *aligned_alloc(size_t align, size_t n) { return __libc_memalign(align, n); }
void *valloc(size_t n) { return __libc_memalign(4096, n); }

int posix_memalign(void **out, size_t align, size_t n) {
  void *p = __libc_memalign(align, n);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}

static void *libc_symbol(const char *name) {
  void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  return libc ? dlsym(libc, name) : NULL;
}

/* Redis sizes its blocks with malloc_usable_size: glibc's, not jemalloc's. */
size_t malloc_usable_size(void *p) {
  static size_t (*usable)(void *);
  if (usable == NULL && (usable = (size_t (*)(void *))libc_symbol("malloc_usable_size")) == NULL) return 0;
  return usable(p);
}

typedef int (*nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
  static nanosleep_fn faked, real;
  if (clock == CLOCK_REALTIME) {
    if (faked == NULL && (faked = (nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep")) == NULL) return ENOSYS;
    return faked(clock, flags, req, rem);
  }
  if (real == NULL && (real = (nanosleep_fn)libc_symbol("clock_nanosleep")) == NULL) return ENOSYS;
  return real(clock, flags, req, rem);
}
