// LrSchedule (lr_schedule.h).
#include "backends/executor/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace tandem::exec {

LrSchedule::LrSchedule(const TrainingConfig& t, int64_t train_iters)
    : max_lr_(t.lr), min_lr_(t.min_lr), style_(t.lr_decay_style) {
  if (style_ == LrDecayStyle::WSD) throw_field_error("lr_decay_style", to_string(style_), "not supported by real backends yet");
  decay_ = static_cast<double>(t.lr_decay_iters > 0 ? t.lr_decay_iters : train_iters);
  warmup_ = t.lr_warmup_iters > 0 ? static_cast<double>(t.lr_warmup_iters) : t.lr_warmup_fraction * decay_;
  if (style_ != LrDecayStyle::Constant && style_ != LrDecayStyle::InverseSquareRoot && warmup_ >= decay_ && decay_ > 0)
    throw_field_error("lr_warmup_iters", warmup_, "must be smaller than the decay iterations (" + std::to_string(decay_) + ")");
  if (min_lr_ > max_lr_) throw_field_error("min_lr", min_lr_, "exceeds --lr = " + std::to_string(max_lr_));
}

double LrSchedule::lr_at(int64_t completed) const {
  const double step = static_cast<double>(completed);
  if (warmup_ > 0 && step <= warmup_) return max_lr_ * step / warmup_;
  switch (style_) {
    case LrDecayStyle::Constant: return max_lr_;
    case LrDecayStyle::InverseSquareRoot: {
      const double w = std::max(warmup_, 1.0), s = std::max(step, 1.0);
      return std::max(min_lr_, max_lr_ * std::sqrt(w) / std::sqrt(s));
    }
    default: break;
  }
  if (step > decay_) return min_lr_;
  const double ratio = (step - warmup_) / (decay_ - warmup_);
  const double coeff = style_ == LrDecayStyle::Cosine ? 0.5 * (std::cos(M_PI * ratio) + 1.0) : 1.0 - ratio;
  return min_lr_ + coeff * (max_lr_ - min_lr_);
}

}  // namespace tandem::exec
