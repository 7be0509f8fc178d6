// RETURN_IF_ERROR / ASSIGN_OR_RETURN: propagate absl::Status without exceptions.
#ifndef PHI_SERVICES_COMMON_STATUS_MACROS_H_
#define PHI_SERVICES_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PHI_STATUS_CONCAT_INNER_(a, b) a##b
#define PHI_STATUS_CONCAT_(a, b) PHI_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status phi_status_ = (expr);           \
    if (!phi_status_.ok()) return phi_status_;     \
  } while (0)

// `lhs = value of rexpr` (an absl::StatusOr<T>), or returns its status.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  PHI_ASSIGN_OR_RETURN_IMPL_(PHI_STATUS_CONCAT_(phi_statusor_, __LINE__), lhs, rexpr)
#define PHI_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#endif  // PHI_SERVICES_COMMON_STATUS_MACROS_H_
