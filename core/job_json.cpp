// JSON job files and the resolved job as JSON.
//
// A job file:
//   { "model": "llama3-8b" | {"preset": "llama3-8b", <model fields>} | {<model fields>},
//     "parallel": {<parallel fields>}, "training": {<training fields>},
//     "cluster": "dgx-h100" | {<cluster description, see catalog.cpp>},
//     "gpus": 1024, "megatron_args": ["--sequence-parallel", ...],
//     "stragglers": ["gpu:rank=5:0.5", ...] }          added to the cluster's (core/stragglers.h)
// Field keys are Megatron's argument names (core/job_fields.cpp). Unknown keys are errors.
#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"

namespace tandem {
namespace {

using json = nlohmann::json;

std::string describe(const json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// Converts a JSON scalar to the text a field setter parses, checking the JSON type first.
std::string json_to_text(const FieldSpec& f, const std::string& path, const json& v) {
  switch (f.kind) {
    case FieldKind::Bool:
      if (!v.is_boolean()) throw_field_error(path, describe(v), "expected true or false");
      return v.get<bool>() ? "true" : "false";
    case FieldKind::Int:
    case FieldKind::Real:
      if (!v.is_number()) throw_field_error(path, describe(v), "expected a number");
      if (v.is_number_integer()) return v.dump();
      return v.dump();
    case FieldKind::Text:
    case FieldKind::Choice:
      if (!v.is_string()) throw_field_error(path, describe(v), "expected a string");
      return v.get<std::string>();
    case FieldKind::List:
      if (v.is_string()) return v.get<std::string>();
      if (v.is_number_integer()) return v.dump();
      if (v.is_array()) return v.dump();
      throw_field_error(path, describe(v), "expected a list, an integer or a string");
  }
  return {};
}

void apply_section(Job& job, JobSection section, const json& obj, const std::string& where) {
  if (!obj.is_object()) throw_field_error(where, describe(obj), "expected an object");
  for (const auto& [key, value] : obj.items()) {
    if (section == JobSection::Model && (key == "preset" || key == "source" || key == "defaults")) continue;
    const FieldSpec* f = find_field_in(section, key);
    const std::string path = where + "." + key;
    if (!f) {
      if (const FieldSpec* other = find_field(key))
        throw UserError(path + ": field belongs in \"" + section_name(other->section) + "\", not \"" +
                        section_name(section) + "\"");
      throw UserError(path + ": unknown field");
    }
    f->set(job, path, json_to_text(*f, path, value));
  }
}

void apply_model(Job& job, const json& model, const std::string& source) {
  const std::string where = source + ": model";
  if (model.is_string()) {
    apply_model_preset(job, model.get<std::string>());
    return;
  }
  if (!model.is_object()) throw_field_error(where, describe(model), "expected a preset name or an object");
  if (model.contains("preset")) {
    if (!model["preset"].is_string()) throw_field_error(where + ".preset", describe(model["preset"]), "expected a string");
    apply_model_preset(job, model["preset"].get<std::string>());
  }
  apply_section(job, JobSection::Model, model, where);
}

bool accepts_zero(const FieldSpec& f) {
  Job scratch;
  try {
    f.set(scratch, f.key, "0");
    return true;
  } catch (const UserError&) {
    return false;
  }
}

}  // namespace

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError(path + ": cannot open file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    throw UserError(path + ": malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  }
}

void apply_job_json(Job& job, const json& doc, const std::string& source) {
  if (!doc.is_object()) throw UserError(source + ": a job file must be a JSON object, got " + describe(doc));
  // Model first: a preset replaces the whole model section and may bring default layouts.
  if (doc.contains("model")) apply_model(job, doc["model"], source);
  for (const auto& [key, value] : doc.items()) {
    const std::string where = source + ": " + key;
    if (key == "model" || key == "name" || key == "description" || key == "source" || key == "published" ||
        key == "derived" || key == "ignored_flags" || key == "notes" || key == "stragglers")
      continue;
    if (key == "parallel") {
      apply_section(job, JobSection::Parallel, value, where);
    } else if (key == "training") {
      apply_section(job, JobSection::Training, value, where);
    } else if (key == "cluster") {
      if (value.is_string()) job.cluster = load_cluster(value.get<std::string>());
      else job.cluster = cluster_from_json(value, where);
    } else if (key == "stack") {
      if (!value.is_string() || value.get<std::string>().empty())
        throw_field_error(where, describe(value), "expected a stack name or file (clusters/stacks/)");
      job.stack = value.get<std::string>();
    } else if (key == "gpus") {
      if (!value.is_number_integer()) throw_field_error(where, describe(value), "expected an integer");
      job.world_size = parse_int(where, value.dump(), 1, int64_t{1} << 24);
    } else if (key == "megatron_args") {
      if (!value.is_array()) throw_field_error(where, describe(value), "expected an array of strings");
      std::vector<std::string> flags;
      for (const auto& w : value) {
        if (!w.is_string()) throw_field_error(where, describe(w), "expected a string");
        flags.push_back(w.get<std::string>());
      }
      apply_megatron_flags(job, flags);
    } else {
      throw UserError(where + ": unknown field (expected model, parallel, training, cluster, stack, gpus, "
                              "megatron_args, stragglers)");
    }
  }
  // After "cluster", whatever the key order: they add to the cluster's own.
  if (doc.contains("stragglers")) {
    std::vector<Straggler> more = stragglers_from_json(doc["stragglers"], source + ": stragglers");
    job.cluster.stragglers.insert(job.cluster.stragglers.end(), more.begin(), more.end());
  }
}

json job_to_json(const Job& job) {
  json out;
  json sections = {{"model", json::object()}, {"parallel", json::object()}, {"training", json::object()}};
  for (const auto& f : job_fields()) {
    const json value = f.get(job);
    if (value.is_number() && value == 0 && !accepts_zero(f)) continue;  // 0 = unset, derived on load
    sections[section_name(f.section)][f.key] = value;
  }
  out["model"] = sections["model"];
  out["parallel"] = sections["parallel"];
  out["training"] = sections["training"];
  // Values Megatron derives; recomputed on load, so a file written here reads back unchanged.
  out["derived"] = {{"data_parallel_size", job.parallel.data_parallel_size},
                    {"num_microbatches", job.training.num_microbatches},
                    {"padded_vocab_size", job.model.padded_vocab_size},
                    {"expert_data_parallel_size",
                     job.world_size / std::max<int64_t>(1, job.parallel.expert_tensor_parallel_size *
                                                               job.parallel.expert_model_parallel_size *
                                                               job.parallel.pipeline_model_parallel_size)}};
  out["cluster"] = job.cluster.name;
  if (const std::string& stack = job.stack.empty() ? job.cluster.stack : job.stack; !stack.empty()) out["stack"] = stack;
  out["gpus"] = job.world_size;
  if (!job.cluster.stragglers.empty()) {
    out["stragglers"] = json::array();
    for (const Straggler& s : job.cluster.stragglers) out["stragglers"].push_back(to_text(s));
  }
  out["ignored_flags"] = job.ignored_flags;
  out["notes"] = job.notes;
  return out;
}

}  // namespace tandem
