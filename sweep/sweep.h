#pragma once
// `tandem sweep`: one base job and axes of values; every point of the cartesian product (and any
// listed point) simulated, one result row per point, in the spec's order.
//
// Spec (JSON):
//   {"base": {"config": "gpt3-175b",            a preset or job file, as `tandem simulate CONFIG`
//             "cluster": "dgx-a100", "gpus": 1024, "stack": "NAME|FILE",     all optional
//             "megatron_args": "--tensor-model-parallel-size 8 ...",       a string or an array
//             "stragglers": ["gpu:rank=5:0.5"]},                          as --straggler (core/stragglers.h)
//    "axes": [{"name": "gpus", "values": [64, 128, 256]},
//             {"name": "--micro-batch-size", "values": [1, 2]},
//             {"name": "--sequence-parallel", "values": [true, false]}],
//    "points": [{"gpus": 512, "--micro-batch-size": 4}]}                  optional, after the product
//   Axis names: "gpus", "cluster", "stack", "straggler": a string in --straggler's syntax
//   (core/stragglers.h, e.g. "gpu:rank=5:0.8", "nic:fraction=0.01:0.5:seed=1"), several joined by
//   ';', or "none"; added to the base's stragglers. A Megatron flag ("--..."): a number or string value is
//   the flag's value (it replaces the base's), true adds a switch, false leaves it out; or a field
//   of the cluster in its file's units: cluster.nic_gbit_s, cluster.nics_per_node,
//   cluster.nic_latency_us, cluster.nvlink_gbyte_s, cluster.nvlink_latency_us,
//   cluster.oversubscription, cluster.nodes_per_leaf, cluster.nodes_per_pod, cluster.datacenters,
//   cluster.wan_gbit_s, cluster.wan_latency_ms. The product runs the last axis fastest. At least
//   one axis or one listed point. The datacenter placement is the flag axis "--dc-placement" with
//   values "rank-order", "pp", "dp", "ep" (which parallel dimension crosses datacenters, see
//   backends/sim/dc_placement.h); e.g. experiments/multidc/ crosses it with cluster.wan_latency_ms.
//
// Rows (JSON and CSV): the point's axis values, "status" ("ok" or "error"), then iteration_time_s,
// tokens_per_s, tokens_per_s_per_gpu, model_tflops_per_gpu, mfu, peak_memory_gib, oom, the
// breakdown (seconds: compute, tp_comm, cp_comm, ep_comm, pp_comm, dp_comm, pipeline_bubble,
// optimizer), wan_bytes (bytes sent between datacenters per iteration, 0 with one datacenter),
// wan_exposed_s (the critical rank's exposed communication crossing the WAN), wan_cost_s (iteration
// time minus that of the same job on an ideal WAN; simulator.h WanReport) and "error" (the message of a point that does not resolve or simulate).
// Deterministic: the same spec gives byte-identical files; rows already in the output are kept
// and their points not simulated again (resume).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "core/job_loader.h"

namespace tandem::sweep {

struct Point {
  nlohmann::json values;          // object: axis name -> value (the point's coordinates)
  std::string key() const;        // its compact JSON: identifies the point in an output file
};

struct Spec {
  std::string path;
  JobRequest base;
  std::vector<std::string> axes;  // in the spec's order, then names only listed points use
  std::vector<Point> points;      // product (last axis fastest), then listed points
};

// UserError naming the file and the field on bad input (unknown key, empty axis, a value of the
// wrong type, an axis name that is neither a job field nor a Megatron flag, a repeated point).
Spec load_spec(const std::string& path);

// The job request of one point: the base with the point's values applied (cluster fields aside).
JobRequest request_for(const Spec& spec, const Point& point);
// The resolved job of one point, cluster fields applied (each noted in the job's notes).
// UserError when the point's job does not resolve.
Job job_for(const Spec& spec, const Point& point);

// Result rows.
nlohmann::json result_row(const Point& point, const Job& job, const sim::SimResult& result);
nlohmann::json error_row(const Point& point, const std::string& message);

// The columns of the CSV: the axes, then the result fields.
std::vector<std::string> columns(const Spec& spec);
std::string to_csv(const Spec& spec, const std::vector<nlohmann::json>& rows);
nlohmann::json to_json(const Spec& spec, const std::vector<nlohmann::json>& rows);

// Rows of an earlier run of the same sweep (PREFIX.json), by point key; empty when the file does
// not exist. UserError when it exists but is not a sweep output (corrupt, or another spec's axes):
// it is never overwritten then.
std::vector<nlohmann::json> read_rows(const std::string& json_path, const Spec& spec);

}  // namespace tandem::sweep
