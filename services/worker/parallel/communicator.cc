#include "services/worker/parallel/communicator.h"

namespace phi::parallel {

size_t DataTypeSize(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return 4;
    case DataType::kBFloat16: return 2;
  }
  return 0;
}

const char* DataTypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return "float32";
    case DataType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

}  // namespace phi::parallel
