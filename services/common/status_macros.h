// PHI_RETURN_IF_ERROR / PHI_ASSIGN_OR_RETURN: propagate absl::Status without exceptions
// (Abseil 20220623 ships no status macros). The project's one status-propagation scheme;
// CUDA sources that cannot see Abseil use backends/cuda/cuda_status.h at the device boundary.
#ifndef PHI_SERVICES_COMMON_STATUS_MACROS_H_
#define PHI_SERVICES_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PHI_STATUS_CONCAT_INNER_(a, b) a##b
#define PHI_STATUS_CONCAT_(a, b) PHI_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function when `expr` (an absl::Status) is not OK.
#define PHI_RETURN_IF_ERROR(expr)                            \
  do {                                                       \
    if (::absl::Status phi_status_ = (expr); !phi_status_.ok()) \
      return phi_status_;                                    \
  } while (0)

// `lhs = value of rexpr` (an absl::StatusOr<T>), or returns its status. `lhs` may declare
// a variable (`auto x`, `const Foo& y` is not allowed: it would bind to a temporary).
#define PHI_ASSIGN_OR_RETURN(lhs, rexpr) \
  PHI_ASSIGN_OR_RETURN_IMPL_(PHI_STATUS_CONCAT_(phi_statusor_, __LINE__), lhs, rexpr)
#define PHI_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#endif  // PHI_SERVICES_COMMON_STATUS_MACROS_H_
