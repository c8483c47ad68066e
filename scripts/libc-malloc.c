/* glibc's allocator for redis-server under libfaketime (make test-dates only).
 *
 * Debian's redis-server uses jemalloc, which reads the clock while it starts;
 * libfaketime allocates while it starts: each waits on the other and Redis
 * hangs ("Unexpected recursive calls to clock_gettime()", a known clash:
 * libfaketime issues #130, #327). Preloaded with libfaketime, this library
 * answers Redis's allocations from glibc's malloc instead, so neither waits.
 * Built by scripts/lib.sh (fake_redis_malloc) into .stack/; never in production.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>

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

/* Redis sizes its blocks with malloc_usable_size: glibc's, not jemalloc's. */
size_t malloc_usable_size(void *p) {
  static size_t (*libc_usable)(void *);
  if (libc_usable == NULL) {
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    libc_usable = libc ? (size_t (*)(void *))dlsym(libc, "malloc_usable_size") : NULL;
    if (libc_usable == NULL) return 0;
  }
  return libc_usable(p);
}
