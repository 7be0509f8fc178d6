// The in-memory key-value map behind the rendezvous service: set, get, wait-for-keys with
// a timeout. Thread-safe; waiters wake on every Set and on Shutdown.
#ifndef PHI_SERVICES_WORKER_PARALLEL_KV_STORE_H_
#define PHI_SERVICES_WORKER_PARALLEL_KV_STORE_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace phi::worker::parallel {

class KvStore {
 public:
  void Set(const std::string& key, std::string value);
  std::optional<std::string> Get(const std::string& key) const;
  // Waits until every key exists; returns the keys still missing when `timeout` passed
  // (or Shutdown was called), empty when all exist.
  std::vector<std::string> Wait(const std::vector<std::string>& keys,
                                std::chrono::milliseconds timeout) const;
  // Keys starting with `prefix`, sorted.
  std::vector<std::string> List(const std::string& prefix) const;
  // Wakes every waiter; later Waits return at once.
  void Shutdown();

 private:
  std::vector<std::string> MissingLocked(const std::vector<std::string>& keys) const;

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::map<std::string, std::string> values_;
  bool shutdown_ = false;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_KV_STORE_H_
