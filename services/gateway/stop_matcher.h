// Stop strings on decoded text. Text arrives in deltas; a stop string may span
// several. The matcher emits only text that can no longer be the start of a stop
// string and holds back the rest, so the stop string itself is never returned.
#ifndef PHI_SERVICES_GATEWAY_STOP_MATCHER_H_
#define PHI_SERVICES_GATEWAY_STOP_MATCHER_H_

#include <string>
#include <vector>

namespace phi::gateway {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends `delta`; returns the text now safe to emit. After a match, returns
  // the text before the stop string and stopped() becomes true; later calls
  // return "".
  std::string Feed(const std::string& delta);
  // End of generation without a match: the held-back text.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_STOP_MATCHER_H_
