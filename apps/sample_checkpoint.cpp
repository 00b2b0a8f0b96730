#include "apps/sample_checkpoint.h"

#include <filesystem>

#include "engine/error.h"
#include "formats/file_io.h"

namespace spade::cli {

void SampleCheckpoint::load() {
  if (!std::filesystem::exists(path)) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
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
  seconds = j["seconds"].get<double>();
}

void SampleCheckpoint::save() const {
  const nlohmann::json j = {{"run", run}, {"seconds", seconds}, {"rows", rows}};
  write_file_atomic(path, j.dump() + "\n");
}

}  // namespace spade::cli
