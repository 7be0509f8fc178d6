// Grammar engine benchmark (a program that prints a table, not a test): per-token mask time
// (FillNextTokenMask) while walking random valid paths through a small and a 20-field JSON
// schema on a real vocabulary, the cold compile time, and the time of a cache hit
// (NewConstraint of a cached grammar: lookup plus a fresh matcher).
//
//   grammar_bench [--tokenizer models/phi-1_5-random-bf16/tokenizer.json] [--vocab-size 51200]
//                 [--eos 50256,50296] [--walks 40] [--compiles 3] [--seed 1]
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench/common/bench_args.h"
#include "bench/common/cpu_model_name.h"
#include "services/common/metrics/registry.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "services/worker/grammar/tokenizer_vocab.h"

namespace phi::bench {
namespace {

using worker::ConstraintCompiler;
using worker::ConstraintCompilerOptions;
using worker::ConstraintSpec;
using worker::TokenConstraint;

constexpr char kSmallSchema[] = R"({"type": "object", "properties": {
  "name": {"type": "string", "maxLength": 20},
  "age": {"type": "integer", "minimum": 0, "maximum": 150},
  "member": {"type": "boolean"}},
  "required": ["name", "age", "member"], "additionalProperties": false})";

// 20 fields: strings (free, enum, pattern, format), integers and numbers with ranges,
// booleans, arrays with min/max items, a nested object, nullable and optional fields.
constexpr char kLargeSchema[] = R"({"type": "object", "properties": {
  "id": {"type": "integer", "minimum": 1},
  "name": {"type": "string", "minLength": 1, "maxLength": 40},
  "email": {"type": "string", "pattern": "^[a-z0-9.]+@[a-z0-9]+\\.[a-z]{2,4}$"},
  "age": {"type": "integer", "minimum": 0, "maximum": 130},
  "height_m": {"type": "number", "minimum": 0.3, "maximum": 2.6},
  "active": {"type": "boolean"},
  "role": {"enum": ["admin", "editor", "viewer", "guest"]},
  "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
  "city": {"type": "string", "maxLength": 30},
  "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
  "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 4},
  "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "maxItems": 5},
  "created": {"type": "string", "format": "date"},
  "rating": {"type": "number"},
  "nickname": {"type": ["string", "null"]},
  "level": {"type": "integer", "enum": [1, 2, 3]},
  "address": {"type": "object", "properties": {
    "street": {"type": "string"}, "number": {"type": "integer"}},
    "required": ["street", "number"], "additionalProperties": false},
  "verified": {"type": "boolean"},
  "notes": {"type": "string", "maxLength": 80},
  "plan": {"const": "pro"}},
  "required": ["id", "name", "email", "age", "active", "role", "country", "tags", "address", "plan"],
  "additionalProperties": false})";

struct Stats {
  double p50 = 0, p99 = 0, mean = 0;
  size_t n = 0;
};

Stats Summarize(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.p50 = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  for (double x : v) s.mean += x / v.size();
  return s;
}

// Bytes of each id by inverting the byte-level encoding (to recognize closing tokens).
std::vector<std::string> Decoded(const ConstraintCompilerOptions& o) {
  auto encoded = worker::LoadByteLevelVocab(o.tokenizer_json_path, o.eos_token_ids);
  if (!encoded.ok()) {
    std::fprintf(stderr, "%s\n", encoded.status().ToString().c_str());
    std::exit(1);
  }
  std::map<std::string, char> char_byte;
  for (int b = 0; b < 256; ++b) {
    char_byte[worker::ByteLevelEncode(std::string(1, static_cast<char>(b)))] = static_cast<char>(b);
  }
  std::vector<std::string> out(o.vocab_size);
  for (size_t id = 0; id < encoded->size() && id < out.size(); ++id) {
    const std::string& s = (*encoded)[id];
    for (size_t i = 0; i < s.size();) {
      auto lead = static_cast<unsigned char>(s[i]);
      size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
      auto it = char_byte.find(s.substr(i, len));
      out[id] += it == char_byte.end() ? '?' : it->second;
      i += len;
    }
  }
  return out;
}

// Mask times (seconds) over `walks` random valid paths. Uniform sampling over 50k ids would
// almost never close a string or leave a pattern like [a-z]+, so the walk takes, when one is
// allowed, eos or a token made only of " } ] , half of the time, a one-byte punctuation token
// (@ . : - ...) a third of the time, else any allowed token.
std::vector<double> MaskTimes(ConstraintCompiler& compiler, const ConstraintSpec& spec,
                              const ConstraintCompilerOptions& o, const std::vector<std::string>& decoded,
                              int walks, uint32_t seed, size_t* tokens, int* completed) {
  std::vector<double> times;
  std::vector<uint32_t> words(worker::TokenMaskWords(o.vocab_size));
  std::mt19937 rng(seed);
  for (int w = 0; w < walks; ++w) {
    auto c = compiler.NewConstraint(spec);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
      std::exit(1);
    }
    for (int step = 0; step < 600 && !(*c)->IsTerminated(); ++step) {
      auto t0 = Clock::now();
      (*c)->FillNextTokenMask(words);
      times.push_back(Seconds(t0, Clock::now()));
      std::vector<int32_t> allowed, closers, punct;
      for (int32_t id = 0; id < o.vocab_size; ++id) {
        if (!worker::TokenAllowed(words, id)) continue;
        allowed.push_back(id);
        bool eos = std::count(o.eos_token_ids.begin(), o.eos_token_ids.end(), id) > 0;
        if (eos || (!decoded[id].empty() && decoded[id].find_first_not_of("\"}],") == std::string::npos)) {
          closers.push_back(id);
        }
        if (decoded[id].size() == 1 && std::ispunct(static_cast<unsigned char>(decoded[id][0]))) punct.push_back(id);
      }
      const uint32_t r = rng() % 6;
      const auto& pool = r < 3 && !closers.empty() ? closers : r < 5 && !punct.empty() ? punct : allowed;
      if (pool.empty() || !(*c)->Accept(pool[rng() % pool.size()]).ok()) {
        std::fprintf(stderr, "walk failed at step %d\n", step);
        std::exit(1);
      }
      ++*tokens;
    }
    *completed += (*c)->IsTerminated();
  }
  return times;
}

std::unique_ptr<ConstraintCompiler> MakeCompiler(const ConstraintCompilerOptions& o) {
  auto c = ConstraintCompiler::Create(o);
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*c);
}

int Main(int argc, char** argv) {
  metrics::Registry registry;
  ConstraintCompilerOptions o;
  o.tokenizer_json_path = Flag(argc, argv, "tokenizer", "models/phi-1_5-random-bf16/tokenizer.json");
  o.vocab_size = IntFlag(argc, argv, "vocab-size", 51200, 1);
  const std::vector<int> eos = PositiveIntList(argc, argv, "eos", "50256,50296");
  o.eos_token_ids.assign(eos.begin(), eos.end());
  o.compile_timeout_seconds = 600;
  o.registry = &registry;
  const int walks = IntFlag(argc, argv, "walks", 40, 1);
  const int compiles = IntFlag(argc, argv, "compiles", 3, 1);
  const auto seed = static_cast<uint32_t>(IntFlag(argc, argv, "seed", 1, 0));

  auto t0 = Clock::now();
  auto compiler = MakeCompiler(o);
  const double create_s = Seconds(t0, Clock::now());
  const std::vector<std::string> decoded = Decoded(o);
  std::printf("CPU: %s; tokenizer %s, %d rows; compiler created (vocabulary read) in %.0f ms\n\n",
              CpuModelName().c_str(), o.tokenizer_json_path.c_str(), o.vocab_size, create_s * 1e3);
  std::printf("| schema | mask p50 us | mask p99 us | mask mean us | masks (walks ended) | compile cold ms "
              "(median of %d) | cache hit p50 us | cache hit p99 us |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
              compiles);
  for (const auto& [label, text] : {std::pair<const char*, const char*>{"small (3 fields)", kSmallSchema},
                                    {"large (20 fields)", kLargeSchema}}) {
    ConstraintSpec spec;
    spec.kind = ConstraintSpec::Kind::kJsonSchema;
    spec.text = text;
    std::vector<double> cold;
    for (int i = 0; i < compiles; ++i) {  // a fresh compiler each time: nothing cached
      auto fresh = MakeCompiler(o);
      auto c0 = Clock::now();
      if (!fresh->NewConstraint(spec).ok()) return 1;
      cold.push_back(Seconds(c0, Clock::now()));
    }
    std::vector<double> hits;
    if (!compiler->NewConstraint(spec).ok()) return 1;
    for (int i = 0; i < 1000; ++i) {
      auto h0 = Clock::now();
      auto c = compiler->NewConstraint(spec);
      hits.push_back(Seconds(h0, Clock::now()));
    }
    size_t tokens = 0;
    int completed = 0;
    Stats mask = Summarize(MaskTimes(*compiler, spec, o, decoded, walks, seed, &tokens, &completed));
    Stats hit = Summarize(hits);
    std::printf("| %s | %.1f | %.1f | %.1f | %zu (%d/%d) | %.0f | %.1f | %.1f |\n", label, mask.p50 * 1e6,
                mask.p99 * 1e6, mask.mean * 1e6, mask.n, completed, walks, Summarize(cold).p50 * 1e3, hit.p50 * 1e6,
                hit.p99 * 1e6);
  }
  return 0;
}

}  // namespace
}  // namespace phi::bench

int main(int argc, char** argv) { return phi::bench::Main(argc, argv); }
