// The training-log writers below the CLI: CRC32C against its published check value, the TFRecord
// framing, the metrics JSONL's resume rule (records from first_iteration on and a torn last line
// are dropped, earlier records kept byte for byte) and its errors, non-finite numbers as null.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "backends/executor/metrics_log.h"
#include "backends/executor/tensorboard_writer.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A directory of this process, removed when the test binary exits.
struct ScratchDir {
  fs::path dir = fs::temp_directory_path() / ("tandem-training-log-test-" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(dir); }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

fs::path scratch(const std::string& name) {
  static const ScratchDir scratch_dir;
  return scratch_dir.dir / name;
}

IterationRecord rec(int64_t it, double loss) {
  IterationRecord r;
  r.iteration = it;
  r.consumed_samples = it * 8;
  r.global_batch_size = 8;
  r.lm_loss = loss;
  return r;
}

TEST(TrainingLog, Crc32cPublishedCheckValue) {
  // RFC 3720 (iSCSI) B.4 and every CRC catalogue: CRC-32C("123456789") = 0xE3069283.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TrainingLog, TfRecordFraming) {
  const std::string data = "abc";
  const std::string r = tfrecord(data);
  ASSERT_EQ(r.size(), 8 + 4 + data.size() + 4);
  uint64_t length = 0;
  std::memcpy(&length, r.data(), 8);
  EXPECT_EQ(length, 3u);
  uint32_t crc_len = 0, crc_data = 0;
  std::memcpy(&crc_len, r.data() + 8, 4);
  std::memcpy(&crc_data, r.data() + 15, 4);
  EXPECT_EQ(crc_len, masked_crc32c(r.data(), 8));
  EXPECT_EQ(r.substr(12, 3), data);
  EXPECT_EQ(crc_data, masked_crc32c(data.data(), data.size()));
}

TEST(TrainingLog, NonFiniteNumbersAreNull) {
  const nlohmann::ordered_json j = metrics_json(rec(1, std::nan("")));
  EXPECT_TRUE(j["lm_loss"].is_null());
  EXPECT_TRUE(j["mfu"].is_null());
  EXPECT_TRUE(j["eval_loss"].is_null());
  EXPECT_EQ(j.begin().key(), "iteration");
}

TEST(TrainingLog, ResumeKeepsEarlierRecordsAndDropsLaterAndTornOnes) {
  const fs::path p = scratch("resume.jsonl");
  fs::remove(p);
  {
    MetricsLog log("--metrics", p.string());
    log.begin(1);
    for (int64_t it = 1; it <= 5; ++it) log.record(rec(it, 5.0 - double(it) / 8));
  }
  const std::string five = slurp(p);
  { std::ofstream(p, std::ios::app) << "{\"iteration\": 6, \"lm_lo"; }   // a crash in mid-line
  {
    MetricsLog log("--metrics", p.string());
    log.begin(3);
    log.record(rec(3, 1.0));
  }
  const std::string got = slurp(p);
  const size_t third = five.find("{\"iteration\":3");
  ASSERT_NE(third, std::string::npos);
  EXPECT_EQ(got.substr(0, third), five.substr(0, third));   // records 1 and 2 byte for byte
  EXPECT_EQ(got.substr(third), metrics_json(rec(3, 1.0)).dump() + "\n");
  {
    MetricsLog log("--metrics", p.string());
    log.begin(1);   // a new run from the start: an empty file
  }
  EXPECT_EQ(slurp(p), "");
}

TEST(TrainingLog, ErrorsNameTheFlagAndTheLine) {
  const fs::path p = scratch("bad.jsonl");
  { std::ofstream(p, std::ios::trunc) << "{\"iteration\":1}\nnot json\n"; }
  MetricsLog log("--metrics", p.string());
  try {
    log.begin(2);
    FAIL() << "a malformed line was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--metrics"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MetricsLog("--metrics", (scratch("none") / "x" / "m.jsonl").string()), UserError);
}

}  // namespace
}  // namespace tandem::exec
