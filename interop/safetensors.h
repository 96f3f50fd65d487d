#pragma once
// The safetensors format (Hugging Face): one file =
//   [0, 8)          N, the header length, unsigned 64-bit little-endian
//   [8, 8 + N)      UTF-8 JSON object: per tensor name {"dtype", "shape", "data_offsets": [begin, end)},
//                   optionally "__metadata__" (string -> string); padded with spaces
//   [8 + N, end)    the data: each tensor's bytes row-major, little-endian, at data_offsets (relative to 8 + N)
// tandem writes F32 or BF16 (round to nearest even from fp32) and reads F32, BF16 and F16 into fp32.
// The reader trusts nothing: offsets past the data, overlapping spans, a span that is not
// shape x dtype size, unknown dtypes and truncated files are UserErrors naming the file, the tensor
// and the file offset.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tandem::interop {

enum class StDtype { F32, BF16, F16 };

const char* st_dtype_name(StDtype d);   // "F32", "BF16", "F16"
int64_t st_dtype_bytes(StDtype d);      // 4, 2, 2

// "[2, 3]"
std::string shape_text(const std::vector<int64_t>& shape);

// fp32 -> bf16 by round to nearest, ties to even (NaN stays a quiet NaN of the same sign).
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t b);
float f16_to_float(uint16_t h);         // IEEE binary16, subnormals and inf/NaN included

// A tensor to write: `values` holds numel(shape) fp32 numbers, row-major.
struct StTensorRef {
  std::string name;
  std::vector<int64_t> shape;
  const std::vector<float>* values = nullptr;
};

// The bytes of one safetensors file holding `tensors` in `dtype`, laid out as the safetensors
// library lays them out: compact header, "__metadata__" first, then tensors in name order with
// their data in the same order, header space-padded to a multiple of 8 bytes (the same input gives
// the same bytes).
std::string safetensors_bytes(const std::vector<StTensorRef>& tensors, StDtype dtype,
                              const std::map<std::string, std::string>& metadata);

// One tensor read from a file, converted to fp32.
struct StTensor {
  std::vector<int64_t> shape;
  StDtype dtype = StDtype::F32;
  std::vector<float> values;   // [numel(shape)]
};

// Reads and validates `path` (UserError naming the file, tensor and offset on any inconsistency).
std::map<std::string, StTensor> read_safetensors(const std::string& path);

}  // namespace tandem::interop
