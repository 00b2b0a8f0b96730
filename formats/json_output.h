#pragma once
// JSON results (eval's results.json, explain's meta.json, prune's report, ...) are written through
// here: every number is checked to be finite first, because nlohmann writes NaN and Inf as null, a
// silent hole in a result that a script reading it would take for "no value".
#include <string>

#include <nlohmann/json.hpp>

namespace spade {

// Writes j, dumped with `indent` (-1: one line) and a final newline, to path with write_file_atomic.
// Throws Error naming the file and the key that holds a NaN or Inf ("results.json: methods.lrp.auc
// is NaN"), writing nothing.
void write_json_file(const std::string& path, const nlohmann::json& j, int indent);

}  // namespace spade
