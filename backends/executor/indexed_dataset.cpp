// Megatron indexed dataset reader (indexed_dataset.h).
#include "backends/executor/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "core/check.h"

namespace tandem::exec {
namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};

int64_t item_size(uint8_t code, const std::string& file) {
  switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: case 7: return 4;
    case 5: case 6: return 8;
    default: throw UserError(file + " offset 17: unknown dtype code " + std::to_string(code) + " (expected 1..8)");
  }
}

// Read-only mapping of a whole file.
class Mapped {
 public:
  explicit Mapped(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) throw UserError("--data-path: cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd_, &st);
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (data_ == MAP_FAILED) throw UserError("--data-path: cannot map " + path);
    }
  }
  ~Mapped() {
    if (data_ != nullptr && data_ != MAP_FAILED) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  const unsigned char* bytes() const { return static_cast<const unsigned char*>(data_); }
  size_t size() const { return size_; }

 private:
  std::string path_;
  int fd_ = -1;
  void* data_ = nullptr;
  size_t size_ = 0;
};

struct Index {
  uint8_t dtype = 0;
  int64_t item = 0;
  std::vector<int32_t> lengths;
  std::vector<int64_t> pointers;
  std::vector<int64_t> documents;
};

Index read_index(const std::string& path, size_t bin_size, const std::string& bin_path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("--data-path: cannot open " + path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = 0;
  auto need = [&](size_t n, const char* what) {
    if (at + n > bytes.size())
      throw UserError(path + " offset " + std::to_string(at) + ": file ends inside the " + what + " (truncated)");
  };
  need(sizeof kMagic, "magic");
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw UserError(path + " offset 0: wrong magic (not a Megatron MMIDIDX index)");
  at = sizeof kMagic;
  auto u64 = [&](const char* what) {
    need(8, what);
    uint64_t v = 0;
    std::memcpy(&v, bytes.data() + at, 8);
    at += 8;
    return v;
  };
  const uint64_t version = u64("version");
  if (version != 1) throw UserError(path + " offset 9: version " + std::to_string(version) + " (expected 1)");
  need(1, "dtype code");
  Index ix;
  ix.dtype = static_cast<uint8_t>(bytes[at]);
  ix.item = item_size(ix.dtype, path);
  at += 1;
  const uint64_t sequences = u64("sequence count"), documents = u64("document count");
  need(sequences * 4, "sequence lengths");
  ix.lengths.resize(sequences);
  std::memcpy(ix.lengths.data(), bytes.data() + at, sequences * 4);
  at += sequences * 4;
  need(sequences * 8, "sequence pointers");
  ix.pointers.resize(sequences);
  std::memcpy(ix.pointers.data(), bytes.data() + at, sequences * 8);
  at += sequences * 8;
  need(documents * 8, "document indices");
  ix.documents.resize(documents);
  std::memcpy(ix.documents.data(), bytes.data() + at, documents * 8);
  for (uint64_t i = 0; i < sequences; ++i) {
    const int64_t end = ix.pointers[i] + int64_t{ix.lengths[i]} * ix.item;
    if (ix.pointers[i] < 0 || ix.lengths[i] < 0 || static_cast<uint64_t>(end) > bin_size)
      throw UserError(path + ": sequence " + std::to_string(i) + " spans bytes [" + std::to_string(ix.pointers[i]) + ", " +
                      std::to_string(end) + ") but " + bin_path + " has " + std::to_string(bin_size) +
                      " bytes (index points past the end, or the .bin is truncated)");
  }
  return ix;
}

}  // namespace

struct IndexedDataset::State {
  explicit State(const std::string& bin_path) : bin(bin_path) {}
  Mapped bin;
  Index index;
};

IndexedDataset::IndexedDataset(const std::string& prefix, int64_t vocab_size)
    : prefix_(prefix), bin_path_(prefix + ".bin"), vocab_(vocab_size) {
  state_ = std::make_unique<State>(bin_path_);
  state_->index = read_index(prefix + ".idx", state_->bin.size(), bin_path_);
}

IndexedDataset::~IndexedDataset() = default;

const std::vector<int32_t>& IndexedDataset::sequence_lengths() const { return state_->index.lengths; }

void IndexedDataset::read(int64_t sequence, int64_t offset, int64_t length, std::vector<int32_t>& out) const {
  const Index& ix = state_->index;
  TANDEM_CHECK(sequence >= 0 && sequence < static_cast<int64_t>(ix.lengths.size()));
  TANDEM_CHECK(offset >= 0 && length >= 0 && offset + length <= ix.lengths[static_cast<size_t>(sequence)]);
  for (int64_t t = offset; t < offset + length; ++t) out.push_back(token(sequence, t));
}

int32_t IndexedDataset::token(int64_t q, int64_t t) const {
  const Index& ix = state_->index;
  const int64_t off = ix.pointers[static_cast<size_t>(q)] + t * ix.item;
  const unsigned char* p = state_->bin.bytes() + off;
  int64_t v = 0;
  switch (ix.dtype) {
    case 1: v = *p; break;
    case 2: v = static_cast<int8_t>(*p); break;
    case 3: { int16_t x; std::memcpy(&x, p, 2); v = x; break; }
    case 8: { uint16_t x; std::memcpy(&x, p, 2); v = x; break; }
    case 4: { int32_t x; std::memcpy(&x, p, 4); v = x; break; }
    case 5: { int64_t x; std::memcpy(&x, p, 8); v = x; break; }
    case 7: { float x; std::memcpy(&x, p, 4); v = static_cast<int64_t>(x); break; }
    case 6: { double x; std::memcpy(&x, p, 8); v = static_cast<int64_t>(x); break; }
    default: break;
  }
  if (v < 0 || v >= vocab_)
    throw UserError(bin_path_ + " offset " + std::to_string(off) + ": token id " + std::to_string(v) +
                    " outside the vocabulary [0, " + std::to_string(vocab_) + ")");
  return static_cast<int32_t>(v);
}

}  // namespace tandem::exec
