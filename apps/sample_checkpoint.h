#pragma once
// Per-sample results of a long command kept on disk as they are made, so that a run that stops
// (killed, a lost session) continues where it stopped with --resume instead of starting over.
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/cli.h"

namespace spade::cli {

// --resume and --stop-after; `unit` names the samples ("samples", "grids").
void add_resume_options(std::vector<Option>& opts, const std::string& unit);

struct SampleCheckpoint {
  std::string path;
  nlohmann::json run;  // every setting the per-sample results depend on
  nlohmann::json rows = nlohmann::json::array();
  double seconds = 0.0;  // spent on `rows` by the runs that made them

  // `started`: when this run began (its time counts from there).
  SampleCheckpoint(std::string path_, nlohmann::json run_, std::chrono::steady_clock::time_point started)
      : path(std::move(path_)), run(std::move(run_)), started_(started) {}
  // Reads `path` when it exists. Throws Error naming the file when it is not a checkpoint or was
  // made with other settings (the first that differs).
  void load();
  // Rewrites `path` atomically with the rows so far.
  void save() const;
  // Appends a finished sample's row (the time since this run started counted) and saves.
  void add(nlohmann::json row);
  // The time of every run that made the rows, this one included.
  double total_seconds() const { return seconds_before_ + elapsed(); }
  // --stop-after K (0 = never): true, after printing how to continue, when this run has computed
  // K new samples and `done` of `total` are finished.
  bool stop_here(int64_t stop_after, size_t resumed, size_t done, size_t total, const std::string& unit) const;

 private:
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  std::chrono::steady_clock::time_point started_;
  double seconds_before_ = 0.0;
};

}  // namespace spade::cli
