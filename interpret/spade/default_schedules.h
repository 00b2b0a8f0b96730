#pragma once
// The sparsity schedules SPADE uses when the user gives none (`--sparsity` absent): per built-in
// architecture and saliency method. Pruning every layer at one target ruins maps (the Trojan AUC
// of uniform 0.9 on CIFAR fell from ~94 to 55-62; on the ImageNet MobileNetV2 it leaves a 2-pixel
// checkerboard, docs/reproduction.md), while the tuned schedules keep the input-side blocks dense.
// The schedules live in models/defaults/<file>.json (how each was made is written in the file and
// in docs/spade.md) and are compiled into the library, so the installed binary needs no data files.
#include <optional>
#include <string>
#include <vector>

#include "interpret/spade/layers.h"

namespace spade::interp {

// The schedule of `method` on `arch` (a built-in architecture name as Model::arch holds it);
// methods the file has no schedule for, and method "" (a trace for no particular method: `spade
// prune`, `spade visualize`), get the file's "other_methods" schedule. nullopt for architectures
// without defaults. Its describe() says where it came from ("built-in mobilenet_v2_tf/saliency").
std::optional<SparsitySchedule> default_schedule(const std::string& arch, const std::string& method);

// The architectures that have defaults, sorted.
std::vector<std::string> architectures_with_default_schedules();

// For tests: the embedded files' names and texts, and the parse of one such text (throws
// spade::Error naming `file` for a malformed one).
struct DefaultScheduleFile {
  std::vector<std::string> architectures;
  std::string made;  // how the schedules were made
  std::vector<std::pair<std::string, std::string>> methods;  // method -> schedule JSON (checked)
  std::string other_methods;                                // schedule JSON (checked)
};
DefaultScheduleFile parse_default_schedule_file(const std::string& text, const std::string& file);
const std::vector<std::pair<std::string, std::string>>& embedded_default_schedule_files();

}  // namespace spade::interp
