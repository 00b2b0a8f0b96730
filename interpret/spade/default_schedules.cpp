#include "interpret/spade/default_schedules.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace spade::interp {

namespace {

// The schedule's JSON text, checked by parsing it.
std::string schedule_text(const nlohmann::json& j, const std::string& name) {
  if (!j.is_object()) throw Error(name + ": expected an object mapping layer-name prefixes to sparsities");
  SparsitySchedule::from_json(j.dump(), name);
  return j.dump();
}

struct Entry {
  std::map<std::string, SparsitySchedule> methods;
  SparsitySchedule other = SparsitySchedule::uniform(0.0);
};

// Every embedded file, parsed once; an architecture named by two files is a build error caught by
// the tests (here the first wins).
const std::map<std::string, Entry>& registry() {
  static const std::map<std::string, Entry> entries = [] {
    std::map<std::string, Entry> out;
    for (const auto& [file, text] : embedded_default_schedule_files()) {
      DefaultScheduleFile f = parse_default_schedule_file(text, file);
      for (const std::string& arch : f.architectures) {
        if (out.count(arch)) continue;
        Entry e;
        for (const auto& [method, json] : f.methods)
          e.methods.emplace(method, SparsitySchedule::from_json(json, "built-in " + arch + "/" + method));
        e.other = SparsitySchedule::from_json(f.other_methods, "built-in " + arch + "/other_methods");
        out.emplace(arch, std::move(e));
      }
    }
    return out;
  }();
  return entries;
}

}  // namespace

DefaultScheduleFile parse_default_schedule_file(const std::string& text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(file + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("architectures") || !j.contains("methods") || !j.contains("other_methods"))
    throw Error(file + ": expected an object with \"architectures\", \"methods\" and \"other_methods\"");
  DefaultScheduleFile f;
  if (!j["architectures"].is_array() || j["architectures"].empty())
    throw Error(file + ": \"architectures\" must be a non-empty list of names");
  for (const auto& a : j["architectures"]) {
    if (!a.is_string()) throw Error(file + ": \"architectures\" must hold names");
    f.architectures.push_back(a.get<std::string>());
  }
  if (j.contains("made")) f.made = j["made"].is_string() ? j["made"].get<std::string>() : j["made"].dump();
  if (!j["methods"].is_object()) throw Error(file + ": \"methods\" must map method names to schedules");
  for (auto it = j["methods"].begin(); it != j["methods"].end(); ++it)
    f.methods.emplace_back(it.key(), schedule_text(it.value(), file + ": methods." + it.key()));
  f.other_methods = schedule_text(j["other_methods"], file + ": other_methods");
  return f;
}

std::optional<SparsitySchedule> default_schedule(const std::string& arch, const std::string& method) {
  const auto it = registry().find(arch);
  if (it == registry().end()) return std::nullopt;
  const auto m = it->second.methods.find(method);
  return m != it->second.methods.end() ? m->second : it->second.other;
}

std::vector<std::string> architectures_with_default_schedules() {
  std::vector<std::string> out;
  for (const auto& [arch, entry] : registry()) out.push_back(arch);
  return out;
}

}  // namespace spade::interp
