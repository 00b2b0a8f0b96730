#include "formats/json_output.h"

#include <cmath>

#include "engine/error.h"
#include "formats/file_io.h"

namespace spade {

namespace {

// The first non-finite number under j, as a dotted key path ("methods.lrp.auc", "rows[3].loss"),
// or false when there is none.
bool find_non_finite(const nlohmann::json& j, const std::string& at, std::string& where, double& value) {
  if (j.is_number_float()) {
    value = j.get<double>();
    if (std::isfinite(value)) return false;
    where = at.empty() ? "the value" : at;
    return true;
  }
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      if (find_non_finite(*it, at.empty() ? it.key() : at + "." + it.key(), where, value)) return true;
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i)
      if (find_non_finite(j[i], at + "[" + std::to_string(i) + "]", where, value)) return true;
  }
  return false;
}

}  // namespace

void write_json_file(const std::string& path, const nlohmann::json& j, int indent) {
  std::string where;
  double value = 0;
  if (find_non_finite(j, "", where, value))
    throw Error(path + ": " + where + " is " + (std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf") +
                " (the stage that computes it failed; nothing was written)");
  write_file_atomic(path, j.dump(indent) + "\n");
}

}  // namespace spade
