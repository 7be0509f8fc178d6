// Tokenizer benchmark program (not a test).
//   tokenizer_bench encode MODEL_DIR CORPUS [DOC_BYTES]
//     single-thread encode of CORPUS split into documents of ~DOC_BYTES at line ends; prints
//     MB/s, tokens/s (first pass with a cold word cache, then the best of 3 warm passes) and
//     writes the ids' count and checksum so the driver can compare with Hugging Face.
//   tokenizer_bench grpc ADDRESS MODEL_DIR CORPUS [REQUESTS]
//     p50/p99 latency of Encode of a ~2,000-token ChatML prompt (segments, as the gateway sends
//     it) through a running phi-tokenizer, one request at a time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "phi/v1/tokenizer.grpc.pb.h"
#include "services/tokenizer/tokenizer_loader.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Same rule as bench_tokenizer.py: cut after the line that brings a document to >= doc_bytes.
std::vector<std::string_view> SplitDocs(const std::string& corpus, size_t doc_bytes) {
  std::vector<std::string_view> docs;
  size_t start = 0, pos = 0;
  while (pos < corpus.size()) {
    size_t nl = corpus.find('\n', pos);
    pos = nl == std::string::npos ? corpus.size() : nl + 1;
    if (pos - start >= doc_bytes || pos == corpus.size()) {
      docs.emplace_back(corpus.data() + start, pos - start);
      start = pos;
    }
  }
  return docs;
}

int Encode(const std::string& model, const std::string& corpus_path, size_t doc_bytes) {
  auto tok = phi::tokenizer::LoadTokenizerFolder(model);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  const std::string corpus = ReadAll(corpus_path);
  auto docs = SplitDocs(corpus, doc_bytes);
  phi::tokenizer::EncodeOptions opts{.parse_special = false};
  uint64_t tokens = 0, checksum = 0;
  double best = 1e30, cold = 0;
  for (int pass = 0; pass < 4; ++pass) {
    uint64_t n = 0, sum = 0;
    auto t0 = Clock::now();
    for (std::string_view d : docs) {
      auto e = (*tok)->Encode(d, opts);
      if (!e.ok()) {
        std::fprintf(stderr, "%s\n", e.status().ToString().c_str());
        return 1;
      }
      n += e->ids.size();
      for (uint32_t id : e->ids) sum = sum * 1000003u + id;
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (pass == 0) cold = s;
    else best = std::min(best, s);
    tokens = n;
    checksum = sum;
  }
  const double mb = corpus.size() / 1e6;
  std::printf("phi_tokenizer bytes=%zu docs=%zu tokens=%lu checksum=%lu cold_s=%.4f warm_s=%.4f "
              "cold_mb_s=%.2f warm_mb_s=%.2f warm_tok_s=%.0f\n",
              corpus.size(), docs.size(), static_cast<unsigned long>(tokens),
              static_cast<unsigned long>(checksum), cold, best, mb / cold, mb / best, tokens / best);
  return 0;
}

int Grpc(const std::string& address, const std::string& model, const std::string& corpus_path,
         int requests) {
  auto tok = phi::tokenizer::LoadTokenizerFolder(model);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  // A user message of ~2,000 tokens cut from the corpus, measured with the library.
  const std::string corpus = ReadAll(corpus_path);
  size_t len = 4000;
  std::string message;
  for (;;) {
    message = corpus.substr(0, len);
    while (!message.empty() && (static_cast<unsigned char>(message.back()) & 0xC0) == 0x80) message.pop_back();
    if (!message.empty() && static_cast<unsigned char>(message.back()) >= 0xC0) message.pop_back();
    auto e = (*tok)->Encode(message, {.parse_special = false});
    if (!e.ok() || e->ids.size() >= 1985 || len >= corpus.size()) break;
    len += 256;
  }
  phi::v1::EncodeRequest req;
  auto* segs = req.add_prompts()->mutable_segments();
  auto add_special = [&](const char* s) { segs->add_segments()->set_special_token(s); };
  auto add_text = [&](const std::string& s) { segs->add_segments()->set_text(s); };
  add_special("<|im_start|>");
  add_text("system\nYou are a helpful assistant.");
  add_special("<|im_end|>");
  add_text("\n");
  add_special("<|im_start|>");
  add_text("user\n" + message);
  add_special("<|im_end|>");
  add_text("\n");
  add_special("<|im_start|>");
  add_text("assistant\n");

  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = phi::v1::TokenizerService::NewStub(channel);
  std::vector<double> lat;
  int prompt_tokens = 0;
  for (int i = 0; i < requests + 50; ++i) {
    grpc::ClientContext ctx;
    phi::v1::EncodeResponse resp;
    auto t0 = Clock::now();
    grpc::Status s = stub->Encode(&ctx, req, &resp);
    double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!s.ok()) {
      std::fprintf(stderr, "Encode: %s\n", s.error_message().c_str());
      return 1;
    }
    prompt_tokens = resp.encodings(0).ids_size();
    if (i >= 50) lat.push_back(us);  // the first 50 warm the connection and the caches
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]; };
  double mean = 0;
  for (double v : lat) mean += v;
  mean /= lat.size();
  std::printf("grpc_encode prompt_tokens=%d requests=%zu p50_us=%.0f p99_us=%.0f mean_us=%.0f\n", prompt_tokens,
              lat.size(), pct(0.50), pct(0.99), mean);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "encode" && argc >= 4) return Encode(argv[2], argv[3], argc > 4 ? std::stoul(argv[4]) : 16384);
  if (mode == "grpc" && argc >= 5) return Grpc(argv[2], argv[3], argv[4], argc > 5 ? std::stoi(argv[5]) : 2000);
  std::fprintf(stderr,
               "usage: tokenizer_bench encode MODEL_DIR CORPUS [DOC_BYTES]\n"
               "       tokenizer_bench grpc ADDRESS MODEL_DIR CORPUS [REQUESTS]\n");
  return 2;
}
