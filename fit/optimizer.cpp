// Nelder-Mead on the unit box (optimizer.h). Standard coefficients: reflection 1, expansion 2,
// contraction 0.5, shrink 0.5; ties keep the earlier vertex (stable sort), so runs are repeatable.
#include "fit/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"

namespace tandem::fit {
namespace {

using Point = std::vector<double>;

Point clamp_unit(Point u) {
  for (double& x : u) x = std::clamp(x, 0.0, 1.0);
  return u;
}

Point blend(const Point& a, const Point& b, double t) {   // a + t (b - a), clamped
  Point out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + t * (b[i] - a[i]);
  return clamp_unit(out);
}

struct Simplex {
  std::vector<Point> points;
  std::vector<double> values;
  void order() {
    std::vector<size_t> idx(points.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
    std::vector<Point> p;
    std::vector<double> v;
    for (size_t i : idx) {
      p.push_back(points[i]);
      v.push_back(values[i]);
    }
    points = std::move(p);
    values = std::move(v);
  }
};

}  // namespace

Minimum minimise(const std::function<double(const std::vector<double>&)>& f, std::vector<double> start,
                 const std::vector<double>& lower, const std::vector<double>& upper, const MinimiseOptions& options) {
  const size_t n = start.size();
  TANDEM_CHECK_MSG(lower.size() == n && upper.size() == n, "minimise: bounds and start differ in size");
  Minimum out;
  auto to_x = [&](const Point& u) {
    Point x(n);
    for (size_t i = 0; i < n; ++i) x[i] = lower[i] + u[i] * (upper[i] - lower[i]);
    return x;
  };
  auto eval = [&](const Point& u) {
    ++out.evaluations;
    return f(to_x(u));
  };
  Point u0(n);
  for (size_t i = 0; i < n; ++i)
    u0[i] = upper[i] > lower[i] ? std::clamp((start[i] - lower[i]) / (upper[i] - lower[i]), 0.0, 1.0) : 0.0;
  Simplex s;
  s.points.push_back(u0);
  for (size_t i = 0; i < n; ++i) {
    Point p = u0;
    p[i] += p[i] + options.initial_step <= 1.0 ? options.initial_step : -options.initial_step;
    s.points.push_back(clamp_unit(p));
  }
  for (const Point& p : s.points) s.values.push_back(eval(p));
  while (n > 0 && out.evaluations < options.max_evaluations) {
    s.order();
    if (s.values.back() - s.values.front() <= options.tolerance) break;
    Point centroid(n, 0.0);
    for (size_t k = 0; k < n; ++k)
      for (size_t i = 0; i < n; ++i) centroid[i] += s.points[k][i] / static_cast<double>(n);
    const Point& worst = s.points[n];
    const Point reflected = blend(centroid, worst, -1.0);
    const double fr = eval(reflected);
    if (fr < s.values[0]) {
      const Point expanded = blend(centroid, worst, -2.0);
      const double fe = eval(expanded);
      s.points[n] = fe < fr ? expanded : reflected;
      s.values[n] = std::min(fe, fr);
    } else if (fr < s.values[n - 1]) {
      s.points[n] = reflected;
      s.values[n] = fr;
    } else {
      const bool outside = fr < s.values[n];
      const Point contracted = blend(centroid, outside ? reflected : worst, 0.5);
      const double fc = eval(contracted);
      if (fc < std::min(fr, s.values[n])) {
        s.points[n] = contracted;
        s.values[n] = fc;
      } else {
        for (size_t k = 1; k <= n; ++k) {
          s.points[k] = blend(s.points[0], s.points[k], 0.5);
          s.values[k] = eval(s.points[k]);
        }
      }
    }
  }
  s.order();
  out.x = to_x(s.points[0]);
  out.value = s.values[0];
  return out;
}

}  // namespace tandem::fit
