// safetensors reader and writer (safetensors.h).
#include "interop/safetensors.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tandem::interop {
namespace {

using nlohmann::json;

// safetensors refuses headers above 100 MB; so does tandem (a lying length must not allocate 2^64 bytes).
constexpr uint64_t kMaxHeader = 100u * 1000u * 1000u;

bool parse_dtype(const std::string& s, StDtype* out) {
  for (StDtype d : {StDtype::F32, StDtype::BF16, StDtype::F16})
    if (s == st_dtype_name(d)) {
      *out = d;
      return true;
    }
  return false;
}

// numel of `shape`, or -1 when a dimension is negative or the product overflows 2^62.
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > (int64_t{1} << 62) / d) return -1;
    n *= d;
  }
  return n;
}

struct Entry {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;   // relative to the data area
};

// One header entry, validated on its own (dtype, shape, offsets within the data, span size).
Entry parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_start,
                  uint64_t data_bytes) {
  const std::string where = path + ": tensor " + name;
  if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
    throw UserError(where + ": header entry must be an object with dtype, shape and data_offsets, got " + v.dump());
  Entry e;
  e.name = name;
  if (!v["dtype"].is_string() || !parse_dtype(v["dtype"].get<std::string>(), &e.dtype))
    throw UserError(where + ": dtype " + v["dtype"].dump() + " is not supported (F32, BF16, F16)");
  if (!v["shape"].is_array()) throw UserError(where + ": shape " + v["shape"].dump() + " is not an array");
  for (const json& d : v["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0)
      throw UserError(where + ": shape " + v["shape"].dump() + " has a dimension that is not a non-negative integer");
    e.shape.push_back(d.get<int64_t>());
  }
  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    throw UserError(where + ": data_offsets " + off.dump() + " must be two non-negative integers");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  const std::string span = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) throw UserError(where + ": " + span + " ends before it begins");
  if (e.end > data_bytes)
    throw UserError(where + ": " + span + " end at file offset " + std::to_string(data_start + e.end) +
                    " is past the end of the file (" + std::to_string(data_start + data_bytes) +
                    " bytes): truncated file or a header that lies");
  const int64_t numel = checked_numel(e.shape);
  const uint64_t want = numel < 0 ? std::numeric_limits<uint64_t>::max()
                                  : static_cast<uint64_t>(numel) * static_cast<uint64_t>(st_dtype_bytes(e.dtype));
  if (want != e.end - e.begin)
    throw UserError(where + ": shape " + shape_text(e.shape) + " of " + st_dtype_name(e.dtype) + " is " +
                    (numel < 0 ? std::string("too large") : std::to_string(want) + " bytes") + " but " + span +
                    " span " + std::to_string(e.end - e.begin) + " (file offset " + std::to_string(data_start + e.begin) + ")");
  return e;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw UserError(path + ": cannot open file");
  const std::streamoff size = in.tellg();
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) throw UserError(path + ": read failed");
  return bytes;
}

}  // namespace

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char* st_dtype_name(StDtype d) {
  switch (d) {
    case StDtype::F32: return "F32";
    case StDtype::BF16: return "BF16";
    case StDtype::F16: return "F16";
  }
  return "?";
}

int64_t st_dtype_bytes(StDtype d) { return d == StDtype::F32 ? 4 : 2; }

uint16_t float_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x0040u);   // keep sign, force quiet
  const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);             // ties to even; overflow gives inf
  return static_cast<uint16_t>(rounded >> 16);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (man << 13));   // inf / NaN
  if (exp == 0) {                                                                    // zero / subnormal
    const float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

std::string safetensors_bytes(const std::vector<StTensorRef>& tensors, StDtype dtype,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const StTensorRef*> order;
  for (const StTensorRef& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const StTensorRef* a, const StTensorRef* b) { return a->name < b->name; });
  // As the safetensors library writes it: __metadata__ first, tensors in data order, each
  // {"dtype", "shape", "data_offsets"} in that order (ordered_json keeps insertion order).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  const int64_t esize = st_dtype_bytes(dtype);
  uint64_t offset = 0;
  for (const StTensorRef* t : order) {
    const int64_t numel = checked_numel(t->shape);
    TANDEM_CHECK_MSG(t->values != nullptr && numel == static_cast<int64_t>(t->values->size()),
                     "tensor " << t->name << " has " << (t->values ? t->values->size() : 0) << " values for shape "
                               << shape_text(t->shape));
    const uint64_t bytes = static_cast<uint64_t>(numel * esize);
    header[t->name] = {{"dtype", st_dtype_name(dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t hlen = h.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((hlen >> (8 * i)) & 0xFF);
  out += h;
  out.reserve(out.size() + offset);
  for (const StTensorRef* t : order) {
    if (dtype == StDtype::F32) {
      out.append(reinterpret_cast<const char*>(t->values->data()), t->values->size() * sizeof(float));
    } else {
      TANDEM_CHECK_MSG(dtype == StDtype::BF16, "tandem writes F32 or BF16");
      std::vector<uint16_t> half(t->values->size());
      std::transform(t->values->begin(), t->values->end(), half.begin(), float_to_bf16);
      out.append(reinterpret_cast<const char*>(half.data()), half.size() * sizeof(uint16_t));
    }
  }
  static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
  return out;
}

std::map<std::string, StTensor> read_safetensors(const std::string& path) {
  const std::string bytes = read_all(path);
  if (bytes.size() < 8)
    throw UserError(path + ": truncated: " + std::to_string(bytes.size()) +
                    " bytes, a safetensors file starts with an 8-byte header length");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  if (hlen > kMaxHeader || hlen > bytes.size() - 8)
    throw UserError(path + ": header length " + std::to_string(hlen) + " at offset 0 runs past the end of the file (" +
                    std::to_string(bytes.size()) + " bytes): truncated file or not safetensors");
  json header;
  try {
    header = json::parse(bytes.substr(8, static_cast<size_t>(hlen)));
  } catch (const json::parse_error& e) {
    throw UserError(path + ": header (file offset 8, " + std::to_string(hlen) + " bytes) is not valid JSON at offset " +
                    std::to_string(8 + e.byte - 1));
  }
  if (!header.is_object()) throw UserError(path + ": header at file offset 8 is not a JSON object");
  const uint64_t data_start = 8 + hlen, data_bytes = bytes.size() - data_start;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) throw UserError(path + ": __metadata__ is not an object of strings");
      continue;
    }
    entries.push_back(parse_entry(path, name, v, data_start, data_bytes));
  }
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& a = *by_offset[i - 1];
    const Entry& b = *by_offset[i];
    if (b.begin < a.end && b.begin != b.end && a.begin != a.end)
      throw UserError(path + ": tensors " + a.name + " [" + std::to_string(a.begin) + ", " + std::to_string(a.end) +
                      ") and " + b.name + " [" + std::to_string(b.begin) + ", " + std::to_string(b.end) +
                      ") overlap at file offset " + std::to_string(data_start + b.begin));
  }
  std::map<std::string, StTensor> out;
  for (const Entry& e : entries) {
    StTensor& t = out[e.name];
    t.shape = e.shape;
    t.dtype = e.dtype;
    const char* src = bytes.data() + data_start + e.begin;
    const size_t n = static_cast<size_t>((e.end - e.begin) / static_cast<uint64_t>(st_dtype_bytes(e.dtype)));
    t.values.resize(n);
    if (e.dtype == StDtype::F32) {
      std::memcpy(t.values.data(), src, n * sizeof(float));
      continue;
    }
    for (size_t i = 0; i < n; ++i) {
      uint16_t v = 0;
      std::memcpy(&v, src + 2 * i, 2);
      t.values[i] = e.dtype == StDtype::BF16 ? bf16_to_float(v) : f16_to_float(v);
    }
  }
  return out;
}

}  // namespace tandem::interop
