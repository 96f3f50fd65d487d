#pragma once
// The one table of job fields shared by JSON files, presets and Megatron command lines.
// Each field has a snake_case key (as in Megatron's `args` namespace), a section of the Job,
// a value kind, and a setter that parses and range-checks a textual value. A Megatron flag is
// "--" + the key with '-' for '_' unless an alias says otherwise.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/job.h"

namespace tandem {

enum class JobSection { Model, Parallel, Training };
enum class FieldKind { Int, Real, Bool, Text, Choice, List };

struct FieldSpec {
  const char* key;                 // snake_case, e.g. "num_layers"
  JobSection section;
  FieldKind kind;
  std::function<void(Job&, const std::string&, const std::string&)> set;  // (job, shown name, value); throws UserError
  std::function<nlohmann::json(const Job&)> get;       // for writing the resolved job
  const char* help;
};

// A Megatron flag that is not simply "--key": either a fixed assignment (--bf16 sets
// params_dtype=bf16), or a flag accepted for compatibility and listed as ignored (not modelled).
struct FlagAlias {
  const char* flag;                // "--bf16"
  const char* key;                 // field key, or nullptr for an ignored flag
  const char* fixed_value;         // value assigned when the flag appears; nullptr = takes args
  int ignored_arity;               // for ignored flags: values consumed (-1: until next flag)
};

const std::vector<FieldSpec>& job_fields();
const std::vector<FlagAlias>& flag_aliases();
const FieldSpec* find_field(std::string_view key);
const FieldSpec* find_field_in(JobSection section, std::string_view key);
std::string section_name(JobSection s);

// Megatron's flag spelling of a key: "num_layers" -> "--num-layers".
std::string key_to_flag(std::string_view key);

// Value parsers shared by the field setters; throw UserError "field = value: reason".
int64_t parse_int(const std::string& field, const std::string& text, int64_t min_value,
                  int64_t max_value);
double parse_real(const std::string& field, const std::string& text, double min_value,
                  double max_value);
bool parse_bool(const std::string& field, const std::string& text);

}  // namespace tandem
