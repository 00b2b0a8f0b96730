#include "formats/image_folder.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "engine/error.h"
#include "formats/file_io.h"

namespace spade {

namespace fs = std::filesystem;

namespace {

constexpr size_t kBlock = 512;
constexpr int kMaxDirectoryDepth = 32;  // a bound on nesting; cycles are caught by inode (scan_directory)

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool has_image_extension(const std::string& file) {
  const size_t dot = file.rfind('.');
  if (dot == std::string::npos || dot == 0) return false;
  const std::string ext = lower(file.substr(dot));
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

// ---- tar -------------------------------------------------------------------------------------
// Header layout (POSIX ustar; GNU uses the same offsets for the fields read here).
struct TarField {
  size_t offset, length;
};
constexpr TarField kName{0, 100}, kSize{124, 12}, kChecksum{148, 8}, kType{156, 1}, kMagic{257, 6},
    kPrefix{345, 155};

std::string field_string(const uint8_t* header, TarField f) {
  const char* p = reinterpret_cast<const char*>(header + f.offset);
  return std::string(p, strnlen(p, f.length));
}

// Octal (optionally space/NUL padded) or GNU base-256 for values that do not fit in octal.
std::optional<uint64_t> parse_tar_number(const uint8_t* p, size_t n) {
  if (p[0] & 0x80) {
    if (p[0] != 0x80) return std::nullopt;  // negative or above 2^63: nothing we can use
    uint64_t v = 0;
    for (size_t i = 1; i < n; ++i) {
      if (v >> 56) return std::nullopt;
      v = (v << 8) | p[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < n && p[i] == ' ') ++i;
  uint64_t v = 0;
  for (; i < n && p[i] != 0 && p[i] != ' '; ++i) {
    if (p[i] < '0' || p[i] > '7' || (v >> 60)) return std::nullopt;
    v = v * 8 + (p[i] - '0');
  }
  for (; i < n; ++i)
    if (p[i] != 0 && p[i] != ' ') return std::nullopt;
  return v;
}

// Writers differ on whether header bytes are summed as signed or unsigned chars; accept both.
bool checksum_ok(const uint8_t* h) {
  const auto stored = parse_tar_number(h + kChecksum.offset, kChecksum.length);
  if (!stored) return false;
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    const bool in_field = i >= kChecksum.offset && i < kChecksum.offset + kChecksum.length;
    const uint8_t b = in_field ? ' ' : h[i];
    unsigned_sum += b;
    signed_sum += static_cast<int8_t>(b);
  }
  return int64_t(*stored) == unsigned_sum || int64_t(*stored) == signed_sum;
}

bool all_zero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

std::string header_name(const uint8_t* h) {
  std::string name = field_string(h, kName);
  // Only POSIX ustar has a prefix field; GNU tar keeps other data at that offset.
  if (std::memcmp(h + kMagic.offset, "ustar\0", 6) == 0) {
    const std::string prefix = field_string(h, kPrefix);
    if (!prefix.empty()) name = prefix + "/" + name;
  }
  return name;
}

// Metadata that pax ('x') and GNU long-name ('L') entries attach to the next member.
struct PendingMeta {
  std::optional<std::string> path;
  std::optional<uint64_t> size;
};

// Records are "<length> <key>=<value>\n", the length counting the whole record.
void parse_pax(const uint8_t* p, size_t n, PendingMeta& meta, const std::string& where) {
  auto bad = [&](const std::string& why) { return Error(where + ": malformed pax header (" + why + ")"); };
  size_t pos = 0;
  while (pos < n && p[pos] != 0) {
    size_t len = 0, i = pos;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
      if (len > n) throw bad("record length too large");
      len = len * 10 + (p[i] - '0');
      ++i;
    }
    if (i == pos || i >= n || p[i] != ' ') throw bad("expected a record length");
    if (len > n - pos || pos + len <= i + 1 || p[pos + len - 1] != '\n')
      throw bad("record length does not match its contents");
    const std::string record(reinterpret_cast<const char*>(p + i + 1), pos + len - 1 - (i + 1));
    const size_t eq = record.find('=');
    if (eq == std::string::npos) throw bad("record without '='");
    const std::string key = record.substr(0, eq), value = record.substr(eq + 1);
    if (key == "path") {
      meta.path = value;
    } else if (key == "size") {
      if (value.empty() || value.size() > 19 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        throw bad("invalid size '" + printable(value) + "'");
      meta.size = std::stoull(value);
    }
    pos += len;
  }
}

std::string strip_leading(std::string name) {
  for (;;) {
    if (name.compare(0, 2, "./") == 0) name.erase(0, 2);
    else if (!name.empty() && name[0] == '/') name.erase(0, 1);
    else return name;
  }
}

bool looks_like_tar(const MappedFile& f) {
  if (f.size() >= kBlock && std::memcmp(f.data() + kMagic.offset, "ustar", 5) == 0) return true;
  return lower(fs::path(f.path()).extension().string()) == ".tar";
}

}  // namespace

ImageFolder::ImageFolder(const std::string& path) : path_(path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    scan_directory();
  } else {
    if (!fs::exists(path, ec)) throw Error(path + ": no such file or directory");
    auto mapped = std::make_shared<const MappedFile>(path);
    if (!looks_like_tar(*mapped)) throw Error(path + ": not a directory or a tar archive");
    tar_ = mapped;
    scan_tar();
  }
  finish();
}

void ImageFolder::add_candidate(std::string name, uint64_t offset, uint64_t size) {
  Entry e;
  e.name = std::move(name);
  e.offset = offset;
  e.size = size;
  entries_.push_back(std::move(e));
}

void ImageFolder::scan_directory() {
  const fs::path root(path_);
  try {
    auto it = fs::recursive_directory_iterator(
        root, fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied);
    // Symlinks are followed, so a directory can be reached again (a link to a parent makes a
    // cycle; two such links make the walk exponential even under the depth limit): each directory,
    // by device and inode, is entered once.
    std::set<std::pair<dev_t, ino_t>> visited;
    struct stat st;
    if (::stat(path_.c_str(), &st) == 0) visited.insert({st.st_dev, st.st_ino});
    for (; it != fs::recursive_directory_iterator(); ++it) {
      if (it->is_directory()) {
        const bool again = ::stat(it->path().c_str(), &st) != 0 || !visited.insert({st.st_dev, st.st_ino}).second;
        if (again || it.depth() >= kMaxDirectoryDepth) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file()) continue;
      add_candidate(it->path().lexically_relative(root).generic_string(), 0, 0);
    }
  } catch (const fs::filesystem_error& e) {
    throw Error(path_ + ": cannot list directory (" + e.code().message() + ")");
  }
}

void ImageFolder::scan_tar() {
  const uint8_t* data = tar_->data();
  const size_t size = tar_->size();
  std::map<std::string, size_t> index;  // a later member with the same name replaces the earlier
  std::vector<Entry> members;
  PendingMeta meta;
  size_t pos = 0;
  while (pos < size) {
    if (size - pos < kBlock)
      throw Error(path_ + ": truncated tar header at offset " + std::to_string(pos));
    const uint8_t* h = data + pos;
    if (all_zero(h, kBlock)) break;  // end-of-archive marker
    const std::string raw_name = header_name(h);
    const std::string where = path_ + ": tar entry '" + printable(raw_name) + "' at offset " + std::to_string(pos);
    if (!checksum_ok(h)) throw Error(where + ": header checksum mismatch (corrupt archive)");
    const auto field_size = parse_tar_number(h + kSize.offset, kSize.length);
    if (!field_size) throw Error(where + ": invalid size field");
    const char type = static_cast<char>(h[kType.offset]);
    const bool is_meta = type == 'x' || type == 'g' || type == 'L' || type == 'K';
    const uint64_t length = (!is_meta && meta.size) ? *meta.size : *field_size;
    const size_t data_pos = pos + kBlock;
    if (length > size - data_pos)
      throw Error(where + ": truncated data (" + std::to_string(length) + " bytes declared, " +
                  std::to_string(size - data_pos) + " present)");
    const uint8_t* body = data + data_pos;
    if (type == 'x') {
      parse_pax(body, length, meta, where);
    } else if (type == 'L') {
      meta.path = std::string(reinterpret_cast<const char*>(body), strnlen(reinterpret_cast<const char*>(body), length));
    } else if (type != 'g' && type != 'K') {
      std::string name = strip_leading(meta.path ? *meta.path : raw_name);
      const bool regular = type == '0' || type == '\0' || type == '7';
      if (regular && !name.empty() && name.back() != '/') {
        auto [it, fresh] = index.emplace(name, members.size());
        Entry e{name, 0, data_pos, length};
        if (fresh) members.push_back(std::move(e));
        else members[it->second] = std::move(e);
      }
      meta = PendingMeta{};
    }
    // The last member's padding may be missing; its data is complete, so that is not an error.
    const uint64_t padded = (length + kBlock - 1) / kBlock * kBlock;
    pos = padded > size - data_pos ? size : data_pos + padded;
  }
  for (Entry& e : members) add_candidate(std::move(e.name), e.offset, e.size);
}

// Keeps image files that have a parent directory, numbers the classes and orders the samples.
void ImageFolder::finish() {
  std::vector<Entry> kept;
  std::vector<std::string> class_of;
  for (Entry& e : entries_) {
    const size_t slash = e.name.rfind('/');
    if (slash == std::string::npos || !has_image_extension(e.name.substr(slash + 1))) continue;
    const std::string dir = e.name.substr(0, slash);
    const size_t dir_slash = dir.rfind('/');
    const std::string cls = dir_slash == std::string::npos ? dir : dir.substr(dir_slash + 1);
    if (cls.empty() || cls == "." || cls == "..") continue;
    class_of.push_back(cls);
    kept.push_back(std::move(e));
  }
  if (kept.empty()) throw Error(path_ + ": no image files (.jpg .jpeg .png .bmp) in class directories");
  classes_ = class_of;
  std::sort(classes_.begin(), classes_.end());
  classes_.erase(std::unique(classes_.begin(), classes_.end()), classes_.end());
  for (size_t i = 0; i < kept.size(); ++i)
    kept[i].label = static_cast<int>(std::lower_bound(classes_.begin(), classes_.end(), class_of[i]) - classes_.begin());
  std::sort(kept.begin(), kept.end(), [](const Entry& a, const Entry& b) {
    return a.label != b.label ? a.label < b.label : a.name < b.name;
  });
  entries_ = std::move(kept);
}

LabeledImage ImageFolder::get(size_t i) const {
  if (i >= entries_.size())
    throw Error(path_ + ": sample index " + std::to_string(i) + " out of range (" +
                std::to_string(entries_.size()) + " images)");
  const Entry& e = entries_[i];
  LabeledImage out;
  out.name = e.name;
  out.label = e.label;
  if (tar_) {
    const uint8_t* p = tar_->data() + e.offset;
    out.bytes.assign(p, p + e.size);
  } else {
    out.bytes = read_file(join_path(path_, e.name));
  }
  return out;
}

std::vector<int64_t> model_class_indices(const ImageFolder& data, const std::vector<std::string>& labels,
                                         const std::vector<std::string>& ids) {
  std::map<std::string, int64_t> by_id;
  for (size_t i = 0; i < ids.size(); ++i)
    if (!ids[i].empty()) by_id[ids[i]] = static_cast<int64_t>(i);
  if (!by_id.empty()) {
    std::vector<int64_t> map;
    for (const std::string& c : data.classes()) {
      auto it = by_id.find(c);
      if (it == by_id.end())
        throw Error(data.path() + ": class folder \"" + c + "\" matches no class id of the model (its ids look like \"" +
                    by_id.begin()->first + "\")");
      map.push_back(it->second);
    }
    return map;
  }
  std::map<std::string, int64_t> by_name;
  for (size_t i = 0; i < labels.size(); ++i) by_name[labels[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> map;
  bool all_named = true;
  for (const std::string& c : data.classes()) {
    auto it = by_name.find(c);
    if (it == by_name.end()) all_named = false;
    map.push_back(it == by_name.end() ? -1 : it->second);
  }
  if (all_named) return map;
  // By position only when it is a bijection: 1000 ImageNet folders against a 1001-output model
  // (0 = background) would otherwise be silently off by one.
  if (data.classes().size() != labels.size())
    throw Error(data.path() + ": " + std::to_string(data.classes().size()) + " class folders match neither the model's " +
                "class names nor ids, and it has " + std::to_string(labels.size()) +
                " classes to map them to in order; give --labels with the folders' ids");
  for (size_t i = 0; i < map.size(); ++i) map[i] = static_cast<int64_t>(i);
  return map;
}

}  // namespace spade
