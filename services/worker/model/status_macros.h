// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status code in the worker's model and
// backends (Abseil 20220623 ships no status macros).
#ifndef PHI_SERVICES_WORKER_MODEL_STATUS_MACROS_H_
#define PHI_SERVICES_WORKER_MODEL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#ifndef PHI_RETURN_IF_ERROR
#define PHI_RETURN_IF_ERROR(expr)                   \
  do {                                              \
    if (auto _phi_status = (expr); !_phi_status.ok()) \
      return _phi_status;                           \
  } while (0)
#endif

#define PHI_STATUS_CONCAT_INNER(a, b) a##b
#define PHI_STATUS_CONCAT(a, b) PHI_STATUS_CONCAT_INNER(a, b)

#ifndef PHI_ASSIGN_OR_RETURN
#define PHI_ASSIGN_OR_RETURN(lhs, expr) \
  PHI_ASSIGN_OR_RETURN_IMPL(PHI_STATUS_CONCAT(_phi_statusor_, __LINE__), lhs, expr)

#define PHI_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(*tmp)
#endif

#endif  // PHI_SERVICES_WORKER_MODEL_STATUS_MACROS_H_
