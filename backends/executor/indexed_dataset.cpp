// Megatron indexed dataset reader (indexed_dataset.h).
#include "backends/executor/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <vector>

#include "backends/executor/init_rng.h"
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

std::vector<double> split_weights(const std::string& split) {
  std::vector<double> w;
  std::stringstream ss(split);
  std::string part;
  while (std::getline(ss, part, ',')) {
    try {
      w.push_back(std::stod(part));
    } catch (const std::exception&) {
      throw_field_error("split", split, "expects comma-separated weights such as 969,30,1");
    }
  }
  w.resize(3, 0.0);
  if (w[0] <= 0) throw_field_error("split", split, "leaves no training documents");
  return w;
}

void shuffle(std::vector<int64_t>& v, uint64_t seed) {
  NormalStream rng(seed);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.next() % i]);
}

class IndexedDataset final : public DataSource {
 public:
  IndexedDataset(const std::string& prefix, int64_t s, int64_t vocab, const std::string& split, int64_t seed,
                 DataSplit which)
      : bin_path_(prefix + ".bin"), bin_(bin_path_), s_(s), vocab_(vocab), seed_(seed) {
    index_ = read_index(prefix + ".idx", bin_.size(), bin_path_);
    const std::vector<double> w = split_weights(split);
    const int64_t docs = std::max<int64_t>(0, static_cast<int64_t>(index_.documents.size()) - 1);
    const double total = w[0] + w[1] + w[2];
    const int64_t train_docs = static_cast<int64_t>(double(docs) * w[0] / total + 0.5);
    const int64_t valid_end = static_cast<int64_t>(double(docs) * (w[0] + w[1]) / total + 0.5);
    const int64_t lo = which == DataSplit::Train ? 0 : train_docs, hi = which == DataSplit::Train ? train_docs : valid_end;
    const char* name = which == DataSplit::Train ? "training" : "validation";
    for (int64_t d = lo; d < hi; ++d) {
      for (int64_t q = index_.documents[static_cast<size_t>(d)]; q < index_.documents[static_cast<size_t>(d) + 1]; ++q)
        sequences_.push_back(q);
    }
    for (int64_t q : sequences_) tokens_ += index_.lengths[static_cast<size_t>(q)];
    if (tokens_ < s + 1)
      throw UserError("--data-path " + prefix + ": the " + name + " split holds " + std::to_string(tokens_) +
                      " tokens, fewer than one sample of " + std::to_string(s + 1));
    per_epoch_ = (tokens_ - 1) / s;
  }

  std::vector<int32_t> sample(int64_t index) override {
    const int64_t epoch = index / per_epoch_;
    if (epoch != epoch_) start_epoch(epoch);
    const int64_t k = order_[static_cast<size_t>(index % per_epoch_)];
    std::vector<int32_t> out;
    out.reserve(static_cast<size_t>(s_ + 1));
    int64_t skip = k * s_;
    for (size_t i = 0; out.size() < static_cast<size_t>(s_ + 1); ++i) {
      const int64_t q = stream_[i], len = index_.lengths[static_cast<size_t>(q)];
      if (skip >= len) {
        skip -= len;
        continue;
      }
      for (int64_t t = skip; t < len && out.size() < static_cast<size_t>(s_ + 1); ++t) out.push_back(token(q, t));
      skip = 0;
    }
    return out;
  }

 private:
  void start_epoch(int64_t epoch) {
    stream_ = sequences_;
    shuffle(stream_, stream_seed(seed_, "documents") + static_cast<uint64_t>(epoch));
    order_.resize(static_cast<size_t>(per_epoch_));
    std::iota(order_.begin(), order_.end(), int64_t{0});
    shuffle(order_, stream_seed(seed_, "samples") + static_cast<uint64_t>(epoch));
    epoch_ = epoch;
  }

  int32_t token(int64_t q, int64_t t) const {
    const int64_t off = index_.pointers[static_cast<size_t>(q)] + t * index_.item;
    const unsigned char* p = bin_.bytes() + off;
    int64_t v = 0;
    switch (index_.dtype) {
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

  std::string bin_path_;
  Mapped bin_;
  Index index_;
  int64_t s_, vocab_, seed_;
  std::vector<int64_t> sequences_;   // training sequences in document order
  int64_t tokens_ = 0, per_epoch_ = 1;
  int64_t epoch_ = -1;
  std::vector<int64_t> stream_, order_;
};

}  // namespace

std::unique_ptr<DataSource> open_indexed_dataset(const std::string& prefix, int64_t seq_length, int64_t vocab_size,
                                                 const std::string& split, int64_t seed, DataSplit which) {
  if (prefix.find(' ') != std::string::npos)
    throw_field_error("data_path", prefix, "blends of several datasets are not supported yet (give one PREFIX)");
  return std::make_unique<IndexedDataset>(prefix, seq_length, vocab_size, split, seed, which);
}

}  // namespace tandem::exec
