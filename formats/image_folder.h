#pragma once
// A labelled image dataset in torchvision's ImageFolder layout (root/<class>/<file>), read from a
// directory tree or straight from a .tar of one (memory-mapped, never extracted).
//
// The class of a file is the name of the directory that directly contains it (so a tar holding
// test/<class>/0001.jpg works without a root argument); files with no parent directory inside the
// root are ignored, as are non-image files, directories, links and other special tar entries.
// Image files are those ending in .jpg .jpeg .png .bmp (any case). Classes are sorted by name and
// numbered from 0; samples are ordered by class, then by path. Names compare bytewise, which for
// UTF-8 is the same order as Python's sorted().
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace spade {

class MappedFile;

struct LabeledImage {
  std::string name;  // path relative to the root directory, or the member name in the tar
  int label = 0;     // index into ImageFolder::classes()
  std::vector<uint8_t> bytes;  // the encoded file
};

class ImageFolder {
 public:
  // A directory, or a tar archive (recognised by its ustar magic or a .tar extension).
  explicit ImageFolder(const std::string& path);
  const std::vector<std::string>& classes() const { return classes_; }
  size_t size() const { return entries_.size(); }
  LabeledImage get(size_t i) const;
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    std::string name;
    int label = 0;
    uint64_t offset = 0, size = 0;  // within the tar
  };
  void scan_directory();
  void scan_tar();
  void add_candidate(std::string name, uint64_t offset, uint64_t size);
  void finish();

  std::string path_;
  std::shared_ptr<const MappedFile> tar_;  // null for a directory
  std::vector<std::string> classes_;
  std::vector<Entry> entries_;
};

// Dataset class index -> model class index. With class `ids` (one per label, "" = none; e.g.
// WordNet ids), by id: a folder matching no id is an Error naming it. Else by label name when every
// folder name is one of the model's `labels`, else by position (folder order = class order, as
// torchvision's ImageFolder), which needs exactly as many folders as labels.
std::vector<int64_t> model_class_indices(const ImageFolder& data, const std::vector<std::string>& labels,
                                         const std::vector<std::string>& ids = {});

}  // namespace spade
