#include "apps/sample_checkpoint.h"

#include <cstdio>
#include <filesystem>

#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/output_transaction.h"
#include "formats/json_output.h"

namespace spade::cli {

void SampleCheckpoint::load() {
  if (!std::filesystem::exists(path)) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
    allow_replacing(path);  // the run rewrites it as it goes
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not a checkpoint (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("run") || !j.contains("rows") || !j["rows"].is_array() ||
      !j.contains("seconds") || !j["seconds"].is_number())
    throw Error(path + ": not a checkpoint (needs \"run\", \"rows\" and \"seconds\")");
  const nlohmann::json& there = j["run"];
  for (const auto& [key, value] : run.items())
    if (!there.contains(key) || there[key] != value)
      throw Error(path + ": made by a run with other settings (" + key + ": " +
                  (there.contains(key) ? there[key].dump() : std::string("absent")) + " there, " + value.dump() +
                  " here); remove it or run without --resume");
  rows = j["rows"];
  seconds = seconds_before_ = j["seconds"].get<double>();
}

void add_resume_options(std::vector<Option>& opts, const std::string& unit) {
  opts.push_back({"resume", "", "continue a stopped run: keep the " + unit + " DIR/partial.json holds (same settings; --" + unit +
                                    " and --threads may differ) and compute the rest", ""});
  opts.push_back({"stop-after", "K", "stop after K new " + unit + ", leaving DIR/partial.json for --resume (0 = run to the end)", "0", integer(0, kMaxCount)});
}

void SampleCheckpoint::add(nlohmann::json row) {
  rows.push_back(std::move(row));
  seconds = total_seconds();
  save();
}

bool SampleCheckpoint::stop_here(int64_t stop_after, size_t resumed, size_t done, size_t total, const std::string& unit) const {
  if (stop_after <= 0 || static_cast<int64_t>(done - resumed) != stop_after || done >= total) return false;
  std::printf("stopped after %zu of %zu %s; continue with --resume (%s)\n", done, total, unit.c_str(), path.c_str());
  return true;
}

void SampleCheckpoint::save() const {
  const nlohmann::json j = {{"run", run}, {"seconds", seconds}, {"rows", rows}};
  const PublishNow now;  // what --resume reads must outlive an interrupted run
  write_json_file(path, j, -1);
}

}  // namespace spade::cli
