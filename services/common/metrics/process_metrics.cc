#include "services/common/metrics/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace phi::metrics {
namespace {

// Fields of /proc/self/stat after the command name (which may hold spaces).
std::vector<std::string> ReadStatFields() {
  std::ifstream f("/proc/self/stat");
  std::string line;
  std::getline(f, line);
  const size_t close = line.rfind(')');
  std::vector<std::string> fields;
  if (close == std::string::npos) return fields;
  std::istringstream rest(line.substr(close + 2));
  std::string tok;
  while (rest >> tok) fields.push_back(tok);
  return fields;  // fields[0] is field 3 (state)
}

double BootTimeSeconds() {
  std::ifstream f("/proc/stat");
  std::string key;
  while (f >> key) {
    if (key == "btime") {
      double v = 0;
      f >> v;
      return v;
    }
    f.ignore(1 << 20, '\n');
  }
  return 0;
}

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int n = 0;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n - 3;  // ".", ".." and the directory's own fd
}

}  // namespace

void RegisterProcessMetrics(Registry& registry) {
  auto& cpu = registry.AddCounter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.").Get();
  auto& rss = registry.AddGauge("process_resident_memory_bytes", "Resident memory size in bytes.").Get();
  auto& vsz = registry.AddGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.").Get();
  auto& start = registry.AddGauge("process_start_time_seconds",
                                  "Start time of the process since unix epoch in seconds.").Get();
  auto& fds = registry.AddGauge("process_open_fds", "Number of open file descriptors.").Get();
  auto& max_fds = registry.AddGauge("process_max_fds", "Maximum number of open file descriptors.").Get();

  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  {
    const std::vector<std::string> f = ReadStatFields();
    // Field 22 (starttime, in clock ticks since boot) is fields[19].
    if (f.size() > 19) start.Set(BootTimeSeconds() + std::stod(f[19]) / ticks);
  }
  registry.AddCollector([&cpu, &rss, &vsz, &fds, &max_fds, ticks, page] {
    const std::vector<std::string> f = ReadStatFields();
    // utime, stime are fields 14, 15; vsize 23; rss 24 (pages).
    if (f.size() > 21) {
      cpu.SetTotal((std::stod(f[11]) + std::stod(f[12])) / ticks);
      vsz.Set(std::stod(f[20]));
      rss.Set(std::stod(f[21]) * page);
    }
    fds.Set(CountOpenFds());
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) max_fds.Set(static_cast<double>(lim.rlim_cur));
  });
}

}  // namespace phi::metrics
