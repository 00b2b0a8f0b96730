#pragma once
// Per-sample results of a long command kept on disk as they are made, so that a run that stops
// (killed, a lost session) continues where it stopped with --resume instead of starting over.
#include <nlohmann/json.hpp>
#include <string>

namespace spade::cli {

struct SampleCheckpoint {
  std::string path;
  nlohmann::json run;  // every setting the per-sample results depend on
  nlohmann::json rows = nlohmann::json::array();
  double seconds = 0.0;  // spent on `rows` by the runs that made them

  SampleCheckpoint(std::string path_, nlohmann::json run_) : path(std::move(path_)), run(std::move(run_)) {}
  // Reads `path` when it exists. Throws Error naming the file when it is not a checkpoint or was
  // made with other settings (the first that differs).
  void load();
  // Rewrites `path` atomically with the rows so far.
  void save() const;
};

}  // namespace spade::cli
