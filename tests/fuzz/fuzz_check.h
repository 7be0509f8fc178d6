// The check the fuzz targets use beyond the sanitizers: a broken invariant aborts with its line,
// which libFuzzer reports as a crash and saves the input for.
#ifndef PHI_TESTS_FUZZ_FUZZ_CHECK_H_
#define PHI_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

#endif  // PHI_TESTS_FUZZ_FUZZ_CHECK_H_
