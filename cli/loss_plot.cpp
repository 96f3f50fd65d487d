// The loss-curve PNG (loss_plot.h).
#include "cli/loss_plot.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tandem::cli {
namespace {

using Rgb = std::array<uint8_t, 3>;
constexpr Rgb kWhite = {255, 255, 255}, kBlack = {0, 0, 0}, kGrid = {225, 225, 225};
constexpr Rgb kTrain = {31, 119, 180}, kEval = {255, 127, 14};   // matplotlib's first two colours
constexpr int kScale = 2;                                        // font pixels per glyph dot
constexpr int kGlyphW = 5, kGlyphH = 7, kAdvance = (kGlyphW + 1) * kScale;

// 5x7 glyphs of the characters the plot writes (rows top to bottom, '#' = ink).
const std::map<char, std::array<const char*, kGlyphH>>& font() {
  static const std::map<char, std::array<const char*, kGlyphH>> f = {
      {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
      {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
      {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
      {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
      {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
      {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
      {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
      {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
      {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
      {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
      {'-', {".....", ".....", ".....", ".###.", ".....", ".....", "....."}},
      {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
      {'a', {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"}},
      {'d', {"....#", "....#", ".##.#", "##..#", "#...#", "#...#", ".####"}},
      {'e', {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."}},
      {'i', {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}},
      {'l', {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'m', {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"}},
      {'n', {".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"}},
      {'o', {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}},
      {'r', {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."}},
      {'s', {".....", ".....", ".####", "#....", ".###.", "....#", "####."}},
      {'t', {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."}},
      {'v', {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
  };
  return f;
}

// An RGB raster, row-major, (0, 0) at the top left.
class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * size_t(h), kWhite) {}
  void set(int x, int y, Rgb c) {
    if (x >= 0 && y >= 0 && x < w_ && y < h_) px_[size_t(y) * size_t(w_) + size_t(x)] = c;
  }
  void fill(int x0, int y0, int x1, int y1, Rgb c) {   // inclusive corners
    for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
      for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) set(x, y, c);
  }
  // Bresenham, `thick` pixels square pen.
  void line(int x0, int y0, int x1, int y1, Rgb c, int thick) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    for (int err = dx + dy;;) {
      fill(x0, y0, x0 + thick - 1, y0 + thick - 1, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  void text(int x, int y, const std::string& s, Rgb c) {   // (x, y): top left of the first glyph
    for (char ch : s) {
      const auto it = font().find(ch);
      if (it != font().end())
        for (int r = 0; r < kGlyphH; ++r)
          for (int k = 0; k < kGlyphW; ++k)
            if (it->second[size_t(r)][k] == '#')
              fill(x + k * kScale, y + r * kScale, x + (k + 1) * kScale - 1, y + (r + 1) * kScale - 1, c);
      x += kAdvance;
    }
  }
  int width() const { return w_; }
  int height() const { return h_; }
  const Rgb& at(int x, int y) const { return px_[size_t(y) * size_t(w_) + size_t(x)]; }

 private:
  int w_, h_;
  std::vector<Rgb> px_;
};

int text_width(const std::string& s) { return int(s.size()) * kAdvance - kScale; }

void put_u32(std::string& out, uint32_t v) {   // PNG integers are big-endian
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xff);
}

void put_chunk(std::string& png, const char* type, const std::string& data) {
  put_u32(png, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  png += body;
  put_u32(png, static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
}

std::string encode_png(const Canvas& c) {
  std::string raw;   // per row: filter byte 0 (None), then R, G, B per pixel
  raw.reserve(size_t(c.height()) * (1 + 3 * size_t(c.width())));
  for (int y = 0; y < c.height(); ++y) {
    raw += '\0';
    for (int x = 0; x < c.width(); ++x)
      for (uint8_t v : c.at(x, y)) raw += static_cast<char>(v);
  }
  uLongf size = compressBound(uLong(raw.size()));
  std::string z(size, '\0');
  const int rc = compress2(reinterpret_cast<Bytef*>(z.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
                           uLong(raw.size()), 9);
  TANDEM_CHECK_MSG(rc == Z_OK, "zlib compress2 failed with " << rc);
  z.resize(size);
  std::string ihdr;
  put_u32(ihdr, uint32_t(c.width()));
  put_u32(ihdr, uint32_t(c.height()));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);   // 8 bits, truecolour, deflate, adaptive filters, no interlace
  std::string png = "\x89PNG\r\n\x1a\n";
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", z);
  put_chunk(png, "IEND", "");
  return png;
}

// Ticks at 1, 2 or 5 x 10^k covering [lo, hi]; `decimals` to print them with.
std::vector<double> nice_ticks(double lo, double hi, int* decimals) {
  const double raw = (hi - lo) / 4;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  *decimals = std::max(0, -int(std::floor(std::log10(step) + 1e-9)));
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(v);
  return t;
}

std::string tick_label(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, std::abs(v) < 1e-12 ? 0.0 : v);
  return buf;
}

}  // namespace

std::string loss_plot_png(const LossCurves& curves, int width, int height) {
  TANDEM_CHECK_MSG(width >= 200 && height >= 150, "plot of " << width << "x" << height << " pixels");
  std::vector<std::pair<double, double>> all;
  for (const auto* series : {&curves.train, &curves.eval})
    for (const auto& p : *series)
      if (std::isfinite(p.first) && std::isfinite(p.second)) all.push_back(p);
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (!all.empty()) {
    x0 = x1 = all.front().first;
    y0 = y1 = all.front().second;
    for (const auto& [x, y] : all) {
      x0 = std::min(x0, x), x1 = std::max(x1, x);
      y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
    const double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
  }
  if (x1 - x0 < 1) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
  Canvas c(width, height);
  const int left = 90, right = width - 20, top = 40, bottom = height - 60;   // plot area, pixels
  const auto px = [&](double x) { return left + int(std::lround((x - x0) / (x1 - x0) * (right - left))); };
  const auto py = [&](double y) { return bottom - int(std::lround((y - y0) / (y1 - y0) * (bottom - top))); };
  int dx = 0, dy = 0;
  for (double t : nice_ticks(x0, x1, &dx)) {
    c.line(px(t), top, px(t), bottom, kGrid, 1);
    const std::string s = tick_label(t, dx);
    c.text(px(t) - text_width(s) / 2, bottom + 10, s, kBlack);
  }
  for (double t : nice_ticks(y0, y1, &dy)) {
    c.line(left, py(t), right, py(t), kGrid, 1);
    const std::string s = tick_label(t, dy);
    c.text(left - 10 - text_width(s), py(t) - kGlyphH * kScale / 2, s, kBlack);
  }
  c.line(left, top, left, bottom, kBlack, 2);
  c.line(left, bottom, right, bottom, kBlack, 2);
  c.text((left + right - text_width("iteration")) / 2, height - 24, "iteration", kBlack);
  c.text(10, 12, "lm loss", kBlack);
  const auto draw = [&](const std::vector<std::pair<double, double>>& s, Rgb color, int thick, bool marks) {
    const std::pair<double, double>* prev = nullptr;
    for (const auto& p : s) {
      if (!std::isfinite(p.second)) {
        prev = nullptr;
        continue;
      }
      if (prev) c.line(px(prev->first), py(prev->second), px(p.first), py(p.second), color, thick);
      if (marks) c.fill(px(p.first) - 4, py(p.second) - 4, px(p.first) + 4, py(p.second) + 4, color);
      prev = &p;
    }
  };
  draw(curves.train, kTrain, 2, false);
  draw(curves.eval, kEval, 1, true);
  const int lx = right - 150;   // legend, top right
  c.line(lx, 18, lx + 24, 18, kTrain, 2);
  c.text(lx + 32, 12, "train", kBlack);
  if (!curves.eval.empty()) {
    c.fill(lx + 8, 36, lx + 16, 44, kEval);
    c.text(lx + 32, 34, "validation", kBlack);
  }
  return encode_png(c);
}

LossCurves curves_from_metrics(const std::string& option, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError(option + " = " + path + ": cannot read the metrics file");
  LossCurves out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("iteration") || !j.contains("lm_loss"))
      throw UserError(option + " = " + path + ": line " + std::to_string(n) + " is not a metrics record");
    const double it = j["iteration"].get<double>();
    const auto value = [](const nlohmann::json& v) { return v.is_number() ? v.get<double>() : NAN; };
    out.train.emplace_back(it, value(j["lm_loss"]));
    if (j.contains("eval_loss") && j["eval_loss"].is_number()) out.eval.emplace_back(it, j["eval_loss"].get<double>());
  }
  return out;
}

}  // namespace tandem::cli
