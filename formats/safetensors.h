#pragma once
// The safetensors weight format: an 8-byte little-endian header length, a JSON header naming
// each tensor's dtype, shape and byte range, then the raw little-endian tensor data. The reader
// validates the whole header up front so that a malformed or hostile file is refused with a
// clear message before any tensor is touched, and every later read stays inside the file.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace spade {

class MappedFile;

enum class DType { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };
const char* dtype_name(DType d);  // "F32", "BF16", ...
size_t dtype_size(DType d);       // bytes per element
// Parses a safetensors dtype string; false for an unknown name.
bool dtype_from_name(const std::string& name, DType* out);
bool dtype_is_float(DType d);  // F16, BF16, F32, F64 and the F8 variants

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range relative to the start of the data section
};

// Opens (memory-mapped) and validates the whole header on construction; throws spade::Error
// naming the file. Duplicate keys anywhere in the JSON header (nlohmann would silently keep
// the last) are refused.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;  // throws if absent
  // The entry as float32: F32 copied; F16, BF16, F64 converted (F16 incl. subnormals/inf/nan);
  // integer and bool dtypes converted too (exact for |v| < 2^24). F8 dtypes are an error.
  Tensor tensor(const std::string& name) const;
  // The entry's raw bytes (end - begin of them), for callers that want another dtype.
  const uint8_t* raw_data(const SafetensorsEntry& e) const;

 private:
  [[noreturn]] void fail(const std::string& problem) const;
  void parse_header(const uint8_t* text, size_t size);
  void check_layout(uint64_t data_size);

  std::string path_;
  std::unique_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Every floating-point entry as float32 by name. Entries named "*.num_batches_tracked" are
// skipped (PyTorch BatchNorm bookkeeping we never use); other non-float entries are an error
// naming the key.
std::map<std::string, Tensor> load_safetensors(const std::string& path);

// Writes F32 tensors in the given order, the header padded with spaces to a multiple of 8 so
// that the data section is 8-byte aligned, via write_file_atomic.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace spade
