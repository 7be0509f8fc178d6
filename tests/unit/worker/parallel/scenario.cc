#include "tests/unit/worker/parallel/scenario.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <span>
#include <thread>
#include <vector>

namespace phi::worker::parallel::testing {
namespace {

int32_t Argmax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

struct Seq {
  uint64_t id;
  std::vector<int32_t> tokens;  // prompt + generated
  int32_t cached = 0;           // positions in the KV cache
  std::vector<int32_t> blocks;
};

}  // namespace

int RunScenario(worker::ModelRunner& runner, const std::string& out_prefix) {
  constexpr int32_t kBlock = kScenarioBlockSize;
  std::vector<int32_t> free_blocks;
  for (int32_t b = kScenarioBlocks - 1; b >= 0; --b) free_blocks.push_back(b);
  std::ofstream logits_out(out_prefix + ".logits", std::ios::binary);
  std::ofstream tokens_out(out_prefix + ".tokens");
  std::map<uint64_t, Seq> seqs;
  seqs[1] = {1, {5, 17, 33, 2, 91, 60, 8}};
  seqs[2] = {2, {44, 3, 12}};
  for (int step = 0; step < kScenarioSteps; ++step) {
    if (step == 4) seqs[3] = {3, {7, 7, 80, 1, 64, 22, 19, 5, 50}};
    if (step == 7) {  // sequence 2 finishes: its blocks go back and get reused
      for (int32_t b : seqs[2].blocks) free_blocks.push_back(b);
      seqs.erase(2);
    }
    if (step == 6) std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // idle: heartbeats
    worker::StepBatch batch;
    std::vector<std::vector<int32_t>> step_tokens;
    step_tokens.reserve(seqs.size());
    for (auto& [id, s] : seqs) {
      // Sequence 1's prompt goes in two chunks (5 + 2); others whole.
      int32_t n = static_cast<int32_t>(s.tokens.size()) - s.cached;
      if (id == 1 && s.cached == 0) n = 5;
      while (static_cast<int32_t>(s.blocks.size()) * kBlock < s.cached + n) {
        s.blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      step_tokens.emplace_back(s.tokens.begin() + s.cached, s.tokens.begin() + s.cached + n);
      worker::SequenceStep ss;
      ss.seq_id = id;
      ss.tokens = step_tokens.back();
      ss.start_pos = s.cached;
      ss.block_table = s.blocks;
      ss.all_logits = (s.cached == 0 && id != 1);
      batch.seqs.push_back(ss);
    }
    worker::StepLogits logits;
    if (auto st = runner.Step(batch, &logits); !st.ok()) {
      std::fprintf(stderr, "step %d: %s\n", step, st.ToString().c_str());
      return 1;
    }
    logits_out.write(reinterpret_cast<const char*>(logits.data.data()), logits.data.size() * sizeof(float));
    size_t i = 0;
    for (auto& [id, s] : seqs) {
      s.cached += static_cast<int32_t>(batch.seqs[i].tokens.size());
      if (s.cached == static_cast<int32_t>(s.tokens.size())) {
        const int32_t next = Argmax(logits.LastRow(i));
        s.tokens.push_back(next);
        tokens_out << "step " << step << " seq " << id << " token " << next << "\n";
      }
      ++i;
    }
  }
  return 0;
}


}  // namespace phi::worker::parallel::testing
