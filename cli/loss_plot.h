#pragma once
// `tandem train --plot FILE.png`: the loss curve as a PNG (RGB, 8 bits per channel) drawn and
// encoded here (zlib for the DEFLATE stream), so a plot needs neither Python nor matplotlib.
// Layout: white background, axes with 5 ticks each labelled (iteration on x, lm loss on y), the
// training loss as a blue line, validation losses as orange squares joined by a thin line, a legend.
#include <string>
#include <utility>
#include <vector>

namespace tandem::cli {

struct LossCurves {
  std::vector<std::pair<double, double>> train;   // (iteration, lm loss), iteration order
  std::vector<std::pair<double, double>> eval;    // (iteration, validation loss)
};

constexpr int kPlotWidth = 800, kPlotHeight = 500;   // pixels

// The PNG file's bytes. Non-finite losses are left out; an empty curve gives the bare axes.
std::string loss_plot_png(const LossCurves& curves, int width = kPlotWidth, int height = kPlotHeight);

// The curves of a metrics JSONL file (tandem train --metrics): lm_loss and eval_loss per record.
// UserError naming `option` and the line on a malformed record.
LossCurves curves_from_metrics(const std::string& option, const std::string& path);

}  // namespace tandem::cli
