// Stop strings on decoded text. Text arrives in deltas; a stop string may span
// several. The matcher emits only text that can no longer be the start of a stop
// string and holds back the rest, so the stop string itself is never returned
// (unless asked for: include_stop_str_in_output).
#ifndef PHI_SERVICES_GATEWAY_STOP_MATCHER_H_
#define PHI_SERVICES_GATEWAY_STOP_MATCHER_H_

#include <cstddef>
#include <string>
#include <vector>

namespace phi::gateway {

class StopMatcher {
 public:
  // include_stop: a match returns the text through the end of the stop string.
  explicit StopMatcher(std::vector<std::string> stops, bool include_stop = false);

  // Appends `delta`; returns the text now safe to emit. After a match, returns
  // the text before the stop string (through it with include_stop) and
  // stopped() becomes true; later calls return "". With `can_stop` false no
  // match may end inside the text fed so far (min_new_tokens not reached yet);
  // a stop string may still begin there and end in later text.
  std::string Feed(const std::string& delta, bool can_stop = true);
  // End of generation without a match: the held-back text.
  std::string Flush();
  bool stopped() const { return stopped_; }
  bool has_stops() const { return !stops_.empty(); }
  // After a match: the byte offset, in all the text fed, just past the stop string.
  size_t match_end() const { return match_end_; }

 private:
  std::vector<std::string> stops_;
  bool include_stop_;
  std::string pending_;
  size_t pending_offset_ = 0;  // of pending_[0] in all the text fed
  size_t guard_ = 0;           // no match may end within pending_[0, guard_)
  size_t match_end_ = 0;
  bool stopped_ = false;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_STOP_MATCHER_H_
