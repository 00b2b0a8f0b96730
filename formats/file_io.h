#pragma once
// File helpers shared by every reader and writer: whole-file reads with clear errors, read-only
// memory maps, and atomic writes (temporary file in the same directory, then rename) so that a
// failed run never leaves a partial output or clobbers an existing file half-way.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace spade {

std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// Writes bytes to path atomically. Creates missing parent directories. With protect_inputs on, refuses
// to replace a file this process has read (by device and inode, so through any link or other name)
// and that is unchanged since.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// Inputs are sacred: from this call on, every file read is remembered and write_file_atomic refuses
// to overwrite one, so an output never replaces an input of the run, whichever options named the
// two. The spade command turns it on for its whole run; library users who rewrite files they read
// leave it off (the default).
void protect_inputs();
// A file read in order to be updated in place (a checkpoint that --resume continues): lets
// write_file_atomic replace it.
void allow_replacing(const std::string& path);

// A read-only memory map of a whole file; unmapped on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Directory of a path ("" for a bare file name) and joining relative paths onto it.
std::string parent_dir(const std::string& path);
std::string join_path(const std::string& dir, const std::string& rel);

}  // namespace spade
