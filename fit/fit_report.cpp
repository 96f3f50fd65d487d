// What `tandem fit` prints and the stack document it writes (fit.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "fit/fit.h"

namespace tandem::fit {
namespace {

using json = nlohmann::json;

std::string num(double x, int digits = 4) {
  std::ostringstream os;
  os.precision(digits);
  os << x;
  return os.str();
}

std::string pct(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.1f%%", 100 * x);
  return buf;
}

std::string pct_abs(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
}

std::string pad(const std::string& s, size_t w) { return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' '); }

struct Errors {
  std::vector<double> sim, surrogate, group, fold, measured;
  void add(const RunFit& r) {
    sim.push_back(r.simulated);
    surrogate.push_back(r.surrogate);
    group.push_back(r.held_out_group);
    fold.push_back(r.held_out_fold);
    measured.push_back(r.measured);
  }
};

std::map<std::string, Errors> by_family(const FitResult& r, std::vector<std::string>& order) {
  std::map<std::string, Errors> out;
  for (const RunFit& f : r.runs) {
    if (!out.count(f.family)) order.push_back(f.family);
    out[f.family].add(f);
  }
  return out;
}

Errors all_errors(const FitResult& r) {
  Errors e;
  for (const RunFit& f : r.runs) e.add(f);
  return e;
}

std::string summary_line(const FitResult& r) {
  const Errors e = all_errors(r);
  return "fitted to " + std::to_string(r.runs.size()) + " runs: training MAPE " + pct_abs(mape(e.sim, e.measured)) +
         ", " + r.group_kind + " MAPE " + pct_abs(mape(e.group, e.measured)) + ", " + std::to_string(r.folds) +
         "-fold MAPE " + pct_abs(mape(e.fold, e.measured));
}

}  // namespace

std::string fit_report(const FitResult& r, const FitOptions& o) {
  std::ostringstream os;
  os << "stack " << r.stack.name << " (from stack " << r.base << "), " << r.runs.size() << " runs, "
     << r.parameters.size() << " free parameters\n\n";
  os << pad("parameter", 36) << pad("fitted", 10) << pad("prior", 10) << pad("base", 10) << "bounds\n";
  for (const ParameterFit& p : r.parameters)
    os << pad(p.name, 36) << pad(num(p.fitted), 10) << pad(num(p.prior), 10) << pad(num(p.base), 10) << "["
       << num(p.lower) << ", " << num(p.upper) << "]" << (p.fitted > p.lower && p.fitted < p.upper ? "" : "  AT A BOUND")
       << "\n";
  os << "\n";
  for (const std::string& line : r.surrogate_log) os << line << "\n";
  size_t label_w = 4, family_w = 7;
  for (const RunFit& f : r.runs) label_w = std::max(label_w, f.label.size() + 1), family_w = std::max(family_w, f.family.size() + 1);
  os << "\n" << pad("run", label_w) << pad("family", family_w) << pad("metric", 26) << pad("measured", 10) << pad("base", 9)
     << pad("fitted", 9) << pad("error", 8) << pad("surrog.", 8) << pad(r.group_kind == "leave-one-out" ? "LOO" : "LOFO", 8)
     << std::to_string(r.folds) << "-fold\n";
  for (const RunFit& f : r.runs)
    os << pad(f.label, label_w) << pad(f.family, family_w) << pad(to_string(f.metric), 26) << pad(num(f.measured), 10)
       << pad(pct(relative_error(f.base, f.measured)), 9) << pad(num(f.simulated), 9)
       << pad(pct(relative_error(f.simulated, f.measured)), 8) << pad(pct(relative_error(f.surrogate, f.measured)), 8)
       << pad(pct(relative_error(f.held_out_group, f.measured)), 8) << pct(relative_error(f.held_out_fold, f.measured))
       << "\n";
  std::vector<std::string> order;
  const auto fam = by_family(r, order);
  os << "\n" << pad("family", family_w) << pad("runs", 6) << pad("training", 10) << pad(r.group_kind, 22) << std::to_string(r.folds)
     << "-fold  (mean absolute error)\n";
  for (const std::string& name : order) {
    const Errors& e = fam.at(name);
    os << pad(name, family_w) << pad(std::to_string(e.sim.size()), 6) << pad(pct_abs(mape(e.sim, e.measured)), 10)
       << pad(pct_abs(mape(e.group, e.measured)), 22) << pct_abs(mape(e.fold, e.measured)) << "\n";
  }
  const Errors e = all_errors(r);
  os << pad("all", family_w) << pad(std::to_string(e.sim.size()), 6) << pad(pct_abs(mape(e.sim, e.measured)), 10)
     << pad(pct_abs(mape(e.group, e.measured)), 22) << pct_abs(mape(e.fold, e.measured)) << "\n\n";
  os << "training MAPE " << pct_abs(mape(e.sim, e.measured)) << " by full simulation (" << pct_abs(mape(e.surrogate, e.measured))
     << " on the surrogates); " << r.simulations << " simulations\n";
  if (r.group_kind == "leave-one-out")
    os << "one model family in the runs: cross-validation leaves one run out instead of one family\n";
  (void)o;
  return os.str();
}

json fitted_stack_document(const FitResult& r, const FitOptions& o) {
  json doc = r.stack.doc;
  // A fit of some parameters on top of an earlier fit of others keeps the earlier record (newest
  // first): the parameters it did not free still carry its values and its errors.
  if (doc.contains("fit")) {
    json earlier = json::array();
    earlier.push_back(doc["fit"]);
    if (doc.contains("earlier_fits"))
      for (const json& f : doc["earlier_fits"]) earlier.push_back(f);
    doc["earlier_fits"] = earlier;
  }
  doc["stack"] = r.stack.name;
  const std::string summary = summary_line(r);
  for (const ParameterFit& p : r.parameters) {
    json* node = &doc;
    std::string rest = p.name;
    for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1))
      node = &(*node)[rest.substr(0, dot)];
    (*node)[rest]["fitted_by"] = {{"command", o.command}, {"summary", summary}};
  }
  const Errors e = all_errors(r);
  std::vector<std::string> order;
  const auto fam = by_family(r, order);
  json families = json::object();
  for (const std::string& name : order) {
    const Errors& f = fam.at(name);
    families[name] = {{"runs", f.sim.size()},
                      {"training_mape", mape(f.sim, f.measured)},
                      {"held_out_mape", mape(f.group, f.measured)},
                      {"k_fold_mape", mape(f.fold, f.measured)}};
  }
  json runs = json::array();
  for (const RunFit& f : r.runs)
    runs.push_back({{"label", f.label}, {"family", f.family}, {"metric", to_string(f.metric)}, {"measured", f.measured},
                    {"simulated", f.simulated}, {"error", relative_error(f.simulated, f.measured)},
                    {"held_out_error", relative_error(f.held_out_group, f.measured)},
                    {"k_fold_error", relative_error(f.held_out_fold, f.measured)}});
  std::string files;
  for (const auto& f : o.run_files) files += (files.empty() ? "" : ", ") + f;
  json free = json::array();
  for (const ParameterFit& p : r.parameters) free.push_back(p.name);
  doc["fit"] = {{"command", o.command},
                {"runs", files},
                {"rows", r.runs.size()},
                {"free", free},
                {"objective", "mean of |ln(simulated / measured)| over the runs"},
                {"training_mape", mape(e.sim, e.measured)},
                {"training_mape_surrogate", mape(e.surrogate, e.measured)},
                {"cv_mape", mape(e.group, e.measured)},
                {"cv_kind", r.group_kind},
                {"k_fold", {{"k", r.folds}, {"mape", mape(e.fold, e.measured)}}},
                {"families", families},
                {"per_run", runs},
                {"simulations", r.simulations},
                {"summary", summary}};
  return doc;
}

}  // namespace tandem::fit
