// ModelRunner, context-parallel attention: the ring of the program (program/lower_layer.cpp).
//
// CP rank r holds sequence chunks r and 2CP-1-r (each c = s / 2CP positions; causal load
// balancing), its rows ordered [chunk r | chunk 2CP-1-r]. K/V blocks travel the ring: at step j
// rank r works on the block of rank src = r - j (mod CP):
//   j = 0       its own block, causal (the diagonal);
//   src < r     every local query sees the first half of the block (chunk src), fully;
//   src > r     only the local second half (chunk 2CP-1-r) sees the block, fully.
// Forward partial results merge by log-sum-exp; the backward uses the merged output and lse, so
// each step's gradients are exact contributions. In the backward the block travels with its
// accumulating dK/dV; after the last step dK/dV alone return to the owner.
//
// Messages: forward [K | V]; backward [K | V | dK | dV], the last one [dK | dV].
#include <cstring>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

std::vector<int32_t> cp_positions(int64_t cp_rank, int64_t cp, int64_t s) {
  const int64_t c = s / (2 * cp);
  std::vector<int32_t> pos;
  for (int64_t chunk : {cp_rank, 2 * cp - 1 - cp_rank})
    for (int64_t i = 0; i < c; ++i) pos.push_back(static_cast<int32_t>(chunk * c + i));
  return pos;
}

std::vector<int32_t> sub(const std::vector<int32_t>& v, int64_t begin, int64_t end) {
  return {v.begin() + begin, v.begin() + end};
}

}  // namespace

namespace {

// The rows of the query (q_begin..q_end) and of the block (kv_begin..kv_end) that step j computes.
struct CpBlock {
  int64_t src = 0;
  int64_t q_begin = 0, q_end = 0, kv_begin = 0, kv_end = 0;
};

CpBlock cp_block(int64_t rank, int64_t cp, int64_t step, int64_t s_local) {
  CpBlock b;
  b.src = ((rank - step) % cp + cp) % cp;
  b.q_end = b.kv_end = s_local;
  if (step == 0) return b;
  if (b.src < rank) b.kv_end = s_local / 2;
  else b.q_begin = s_local / 2;
  return b;
}

}  // namespace

// Forward step: attention of the local queries against the block held at this step.
void ModelRunner::attention_cp_step(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const int64_t cp = dims_.cp, j = ins.ring_step;
  const DeviceTensor& q = at(L, mb, "q");
  const Shape kv_shape = at(L, mb, "k").shape;
  const int64_t kv_n = numel_of(kv_shape);
  DeviceTensor k = at(L, mb, "k"), v = at(L, mb, "v");
  if (j > 0) {
    const DeviceTensor& block = at(L, mb, "cp.kv." + std::to_string(j));
    k = block.slice(0, kv_shape);
    v = block.slice(kv_n, kv_shape);
  }
  const CpBlock blk = cp_block(cp_rank_, cp, j, s_local_);
  const std::vector<int32_t> q_pos = cp_positions(cp_rank_, cp, dims_.s), kv_pos = cp_positions(blk.src, cp, dims_.s);
  const std::vector<int32_t> qp = sub(q_pos, blk.q_begin, blk.q_end), kp = sub(kv_pos, blk.kv_begin, blk.kv_end);
  const DeviceTensor qs = q.rows(blk.q_begin, blk.q_end);
  DeviceTensor out = fresh(qs.shape), lse = fresh({dims_.b, dims_.heads, blk.q_end - blk.q_begin});
  device_.attention_forward(qs, k.rows(blk.kv_begin, blk.kv_end), v.rows(blk.kv_begin, blk.kv_end),
                            attention_args(ins, qp, kp), out, lse);
  if (j == 0) {
    put(L, mb, "ctx", out.reshaped({dims_.n, dims_.heads * dims_.d}));
    put(L, mb, "lse", lse);
  } else {
    device_.attention_merge(at(L, mb, "ctx").reshaped(q.shape), at(L, mb, "lse"), out, lse, blk.q_begin);
  }
}

// Backward step: gradients of the block held at this step; dQ accumulates locally, dK/dV in
// the travelling buffer.
void ModelRunner::attention_grad_cp_step(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const int64_t cp = dims_.cp, j = ins.ring_step;
  const DeviceTensor& q = at(L, mb, "q");
  const Shape kv_shape = at(L, mb, "k").shape;
  const int64_t kv_n = numel_of(kv_shape);
  DeviceTensor travel;
  if (j == 0) {
    travel = put(L, mb, "cp.bwd.0", fresh({4 * kv_n}));
    device_.copy(at(L, mb, "k"), travel.slice(0, kv_shape));
    device_.copy(at(L, mb, "v"), travel.slice(kv_n, kv_shape));
    device_.fill(travel.slice(2 * kv_n, {2 * kv_n}), 0.0f);
    put(L, mb, "dq", device_.zeros(q.shape));
  } else {
    travel = at(L, mb, "cp.bwd." + std::to_string(j));
  }
  const DeviceTensor k = travel.slice(0, kv_shape), v = travel.slice(kv_n, kv_shape);
  const DeviceTensor dk = travel.slice(2 * kv_n, kv_shape), dv = travel.slice(3 * kv_n, kv_shape);
  const CpBlock blk = cp_block(cp_rank_, cp, j, s_local_);
  const std::vector<int32_t> q_pos = cp_positions(cp_rank_, cp, dims_.s), kv_pos = cp_positions(blk.src, cp, dims_.s);
  const std::vector<int32_t> qp = sub(q_pos, blk.q_begin, blk.q_end), kp = sub(kv_pos, blk.kv_begin, blk.kv_end);
  const int64_t rows = blk.q_end - blk.q_begin;
  DeviceTensor lse = fresh({dims_.b * dims_.heads, rows});
  device_.copy_columns(at(L, mb, "lse").reshaped({dims_.b * dims_.heads, s_local_}), blk.q_begin, lse);
  const DeviceTensor out = at(L, mb, "ctx").reshaped(q.shape).rows(blk.q_begin, blk.q_end);
  const DeviceTensor d_out = at(L, mb, "d_ctx").reshaped(q.shape).rows(blk.q_begin, blk.q_end);
  const DeviceTensor ks = k.rows(blk.kv_begin, blk.kv_end), vs = v.rows(blk.kv_begin, blk.kv_end);
  DeviceTensor dq = fresh(out.shape), dks = fresh(ks.shape), dvs = fresh(vs.shape);
  device_.attention_backward_block(q.rows(blk.q_begin, blk.q_end), ks, vs, out, lse.reshaped({dims_.b, dims_.heads, rows}),
                             d_out, attention_args(ins, qp, kp), dq, dks, dvs);
  device_.axpy(1.0f, dq, at(L, mb, "dq").rows(blk.q_begin, blk.q_end));
  device_.axpy(1.0f, dks, dk.rows(blk.kv_begin, blk.kv_end));
  device_.axpy(1.0f, dvs, dv.rows(blk.kv_begin, blk.kv_end));
}

void ModelRunner::cp_send(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const int64_t j = ins.ring_step;
  const Shape kv_shape = at(L, mb, "k").shape;
  const int64_t kv_n = numel_of(kv_shape);
  DeviceTensor msg;
  if (ins.site == Site::CpKv) {
    if (j == 0) {
      msg = fresh({2 * kv_n});
      device_.copy(at(L, mb, "k"), msg.slice(0, kv_shape));
      device_.copy(at(L, mb, "v"), msg.slice(kv_n, kv_shape));
    } else {
      msg = at(L, mb, "cp.kv." + std::to_string(j));
    }
  } else if (ins.site == Site::CpKvDkv) {
    msg = at(L, mb, "cp.bwd." + std::to_string(j));
  } else {   // cp-dkv: the block's finished gradients back to its owner
    msg = at(L, mb, "cp.bwd." + std::to_string(j)).slice(2 * kv_n, {2 * kv_n});
  }
  check_bytes(ins, msg.numel());
  comm_.send(ins.peer, ins.tag, msg);
}

void ModelRunner::cp_recv(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const int64_t j = ins.ring_step;
  const Shape kv_shape = at(L, mb, "k").shape;
  const int64_t kv_n = numel_of(kv_shape);
  const Site site = ins.site;
  if (site == Site::CpKv || site == Site::CpKvDkv) {
    const bool fwd = site == Site::CpKv;
    post_recv(ins, put(L, mb, (fwd ? "cp.kv." : "cp.bwd.") + std::to_string(j + 1), fresh({(fwd ? 2 : 4) * kv_n})));
    return;
  }
  // cp-dkv: this rank's own block, its dK/dV complete.
  DeviceTensor buf = fresh({2 * kv_n});
  post_recv(ins, buf, [this, L, mb, buf, kv_shape, kv_n] { finish_cp_dkv(L, mb, buf, kv_shape, kv_n); });
}

void ModelRunner::finish_cp_dkv(int32_t L, int32_t mb, const DeviceTensor& buf, const Shape& kv_shape, int64_t kv_n) {
  put(L, mb, "dk", buf.slice(0, kv_shape));
  put(L, mb, "dv", buf.slice(kv_n, kv_shape));
  if (dims_.rope) return;
  const int64_t hq = dims_.heads, hkv = dims_.kv_heads, d = dims_.d, n = dims_.n;
  DeviceTensor mixed = fresh({n, (hq + 2 * hkv) * d});
  device_.merge_qkv(at(L, mb, "dq").reshaped({n, hq * d}), buf.slice(0, {n, hkv * d}), buf.slice(kv_n, {n, hkv * d}),
                    hkv, hq / hkv, d, mixed);
  put(L, mb, "d_qkv", mixed);
}

}  // namespace tandem::exec
