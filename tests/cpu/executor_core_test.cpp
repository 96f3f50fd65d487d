// Unit tests of the backend-neutral executor pieces: the stream-ordered program walk (in-flight
// receives, other streams progressing, deps, buffer accounting, trace order), Megatron's LR
// schedule, shard rules and context-parallel positions.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/cpu_device.h"
#include "backends/executor/data_source.h"
#include "backends/executor/lr_schedule.h"
#include "backends/executor/param_store.h"
#include "backends/executor/program_executor.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

Instruction make(OpKind kind, StreamKind stream, Site site, std::vector<int32_t> deps = {}) {
  Instruction ins;
  ins.kind = kind;
  ins.stream = stream;
  ins.site = site;
  ins.deps = std::move(deps);
  return ins;
}

// Records the issue order; a Recv stays in flight until polled `polls` times.
class RecordingHandler final : public InstructionHandler {
 public:
  explicit RecordingHandler(int polls) : polls_(polls) {}
  bool execute(const Instruction& ins, int32_t index) override {
    order.push_back(index);
    return ins.kind != OpKind::Recv;
  }
  bool poll(int32_t index) override {
    (void)index;
    return --polls_ <= 0;
  }
  void on_free(const Buffer& b) override { freed.push_back(b.name()); }
  std::vector<int32_t> order;
  std::vector<std::string> freed;

 private:
  int polls_;
};

RankProgram waiting_program() {
  RankProgram p;
  p.buffers.push_back(Buffer{BufferRole::Activation, BufferPart::Layer, 0, 0, 0, false, 100});
  Instruction alloc = make(OpKind::Alloc, StreamKind::Compute, Site::Alloc);
  alloc.buffer = 0;
  p.instructions.push_back(alloc);                                                       // 0
  p.instructions.push_back(make(OpKind::Recv, StreamKind::PpRecv, Site::PpActivation));     // 1 in flight
  p.instructions.push_back(make(OpKind::Gemm, StreamKind::Compute, Site::Qkv, {1}));         // 2 waits for 1
  p.instructions.push_back(make(OpKind::Send, StreamKind::PpSend, Site::MirrorGrad));       // 3 independent
  p.instructions.push_back(make(OpKind::Gemm, StreamKind::Compute, Site::Proj));             // 4 after 2 (stream)
  Instruction free = make(OpKind::Free, StreamKind::Compute, Site::Free);
  free.buffer = 0;
  p.instructions.push_back(free);                                                        // 5
  return p;
}

TEST(ProgramExecutor, OtherStreamsProgressWhileAReceiveIsInFlight) {
  cpu::CpuDevice device;
  ProgramExecutor executor(device);
  RecordingHandler handler(3);
  std::vector<std::string> trace;
  const RankProgram program = waiting_program();
  const ExecutionStats stats = executor.run(program, handler, &trace);
  // The send (3) goes while the compute stream waits for the receive (1) that its GEMM (2) needs.
  EXPECT_EQ(handler.order, (std::vector<int32_t>{1, 3, 2, 4}));
  EXPECT_GE(stats.out_of_order, 1);
  EXPECT_EQ(stats.instructions, 6);
  EXPECT_DOUBLE_EQ(stats.peak_bytes, 100);
  EXPECT_EQ(handler.freed, (std::vector<std::string>{"act/layer/L0/mb0/c0"}));
  ASSERT_EQ(trace.size(), program.instructions.size());   // program order
  EXPECT_EQ(trace[1].rfind("Recv pp-activation", 0), 0u);
}

TEST(ProgramExecutor, InOrderWhenNothingWaits) {
  cpu::CpuDevice device;
  ProgramExecutor executor(device);
  RecordingHandler handler(0);
  const ExecutionStats stats = executor.run(waiting_program(), handler, nullptr);
  EXPECT_EQ(handler.order, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(stats.out_of_order, 0);
}

TEST(LrSchedule, MegatronWarmupThenCosineToMinLr) {
  TrainingConfig t;
  t.lr = 1e-3;
  t.min_lr = 1e-4;
  t.lr_decay_style = LrDecayStyle::Cosine;
  t.lr_warmup_iters = 2;
  const LrSchedule s(t, 10);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 5e-4);
  EXPECT_DOUBLE_EQ(s.lr_at(2), 1e-3);
  EXPECT_NEAR(s.lr_at(6), 1e-4 + 0.5 * (std::cos(M_PI * 0.5) + 1.0) * 9e-4, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1e-4);
  EXPECT_DOUBLE_EQ(s.lr_at(11), 1e-4);
}

TEST(LrSchedule, LinearAndConstant) {
  TrainingConfig t;
  t.lr = 2.0;
  t.min_lr = 0.0;
  t.lr_decay_style = LrDecayStyle::Linear;
  EXPECT_DOUBLE_EQ(LrSchedule(t, 4).lr_at(1), 1.5);
  t.lr_decay_style = LrDecayStyle::Constant;
  EXPECT_DOUBLE_EQ(LrSchedule(t, 4).lr_at(3), 2.0);
  t.lr_decay_style = LrDecayStyle::WSD;
  EXPECT_THROW((void)LrSchedule(t, 4), UserError);
}

TEST(ShardRule, GatedColumnsKeepTheSameBlockOfBothHalves) {
  // Full [2, 8] = [gate 4 | up 4]; part 1 of 2 keeps gate columns 2..3 and up columns 6..7.
  std::vector<float> full(16);
  for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(i);
  const ShardRule r{2, 8, ShardKind::GatedColumns, 2, 1};
  EXPECT_EQ(r.cut(full), (std::vector<float>{2, 3, 6, 7, 10, 11, 14, 15}));
  const ShardRule rows{4, 2, ShardKind::Rows, 2, 1};
  EXPECT_EQ(rows.full_index(0, 1), 5);
}

// Multi-latent attention's split / join of per-head channels: strided blocks, a broadcast source
// (stride 0) and a summing destination (stride 0 with accumulate), other columns untouched.
TEST(Device, CopyColumnBlocks) {
  cpu::CpuDevice device;
  DeviceTensor src = device.empty({2, 6}), dst = device.empty({2, 5});
  device.upload(std::vector<float>{0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}, src);
  device.fill(dst, -1.0f);
  device.copy_column_blocks(src, dst, ColumnBlocks{2, 2, 1, 3, 0, 3}, false);   // columns 1-2, 4-5 -> 0-1, 3-4
  EXPECT_EQ(device.to_host(dst), (std::vector<float>{1, 2, -1, 4, 5, 11, 12, -1, 14, 15}));
  device.copy_column_blocks(src, dst, ColumnBlocks{2, 1, 0, 0, 2, 0}, true);   // -1 + 2 x column 0
  EXPECT_EQ(device.to_host(dst), (std::vector<float>{1, 2, -1, 4, 5, 11, 12, 19, 14, 15}));
  device.copy_column_blocks(src, dst, ColumnBlocks{2, 1, 5, 0, 0, 3}, false);   // column 5 to 0 and 3
  EXPECT_EQ(device.to_host(dst), (std::vector<float>{5, 2, -1, 5, 5, 15, 12, 19, 15, 15}));
  EXPECT_DEATH(device.copy_column_blocks(src, dst, ColumnBlocks{2, 2, 0, 3, 0, 4}, false), "out of range");
}

TEST(DataSource, ContextParallelRanksHoldMirroredChunks) {
  // s = 16, CP = 2: chunks of 4; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  EXPECT_EQ(context_parallel_positions(0, 2, 16), (std::vector<int32_t>{0, 1, 2, 3, 12, 13, 14, 15}));
  EXPECT_EQ(context_parallel_positions(1, 2, 16), (std::vector<int32_t>{4, 5, 6, 7, 8, 9, 10, 11}));
  const auto mock = make_mock_data(1, 16, 128);
  EXPECT_EQ(mock->sample(3), make_mock_data(1, 16, 128)->sample(3));   // deterministic
  EXPECT_NE(mock->sample(3), make_mock_data(1, 16, 128, DataSplit::Valid)->sample(3));
}

}  // namespace
}  // namespace tandem::exec
