// The tokenizer the fuzz targets use: the folder in PHI_FUZZ_TOKENIZER_DIR (a trained 1k-vocab
// tokenizer from make_tokenizer.py, set up by ctest).
#ifndef PHI_TESTS_FUZZ_FUZZ_TOKENIZER_H_
#define PHI_TESTS_FUZZ_FUZZ_TOKENIZER_H_

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "services/tokenizer/tokenizer_loader.h"

namespace phi::tokenizer {

inline const Tokenizer& FuzzTokenizer() {
  static const Tokenizer* tok = [] {
    const char* dir = std::getenv("PHI_FUZZ_TOKENIZER_DIR");
    if (dir == nullptr) {
      std::fprintf(stderr, "set PHI_FUZZ_TOKENIZER_DIR to a tokenizer folder\n");
      std::abort();
    }
    auto t = LoadTokenizerFolder(dir);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      std::abort();
    }
    return t->release();
  }();
  return *tok;
}

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

}  // namespace phi::tokenizer

#endif  // PHI_TESTS_FUZZ_FUZZ_TOKENIZER_H_
