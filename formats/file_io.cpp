#include "formats/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <utility>

#include "engine/error.h"
#include "formats/output_transaction.h"

namespace spade {

namespace fs = std::filesystem;

namespace {

// The files this process has read: identity (device, inode) -> (size, modification time, path).
// A file that changed since it was read is no longer the input, so it may be replaced.
struct ReadFile {
  off_t size;
  struct timespec mtime;
  std::string path;
};
std::mutex g_read_mutex;
bool g_protect_inputs = false;
std::map<std::pair<dev_t, ino_t>, ReadFile> g_read_files;

bool same_contents(const ReadFile& r, const struct stat& st) {
  return r.size == st.st_size && r.mtime.tv_sec == st.st_mtim.tv_sec && r.mtime.tv_nsec == st.st_mtim.tv_nsec;
}

void remember_read(const std::string& path, const struct stat& st) {
  std::lock_guard<std::mutex> lock(g_read_mutex);
  if (g_protect_inputs) g_read_files[{st.st_dev, st.st_ino}] = {st.st_size, st.st_mtim, path};
}

// Throws Error when path names a file this process read and that is unchanged since.
void refuse_replacing_input(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return;  // nothing there yet
  std::lock_guard<std::mutex> lock(g_read_mutex);
  const auto it = g_read_files.find({st.st_dev, st.st_ino});
  if (it == g_read_files.end() || !same_contents(it->second, st)) return;
  const std::string& input = it->second.path;
  throw Error(path + ": the output would overwrite " + (input == path ? "an input" : "the input " + input) +
              " of this run; choose another output");
}

// Opens a file for reading without blocking: O_NONBLOCK keeps open() from waiting for a writer on
// a FIFO, and the fstat check that follows refuses anything but a regular file (a FIFO, a device
// such as /dev/zero, a socket may never end). Returns the descriptor and the file's size.
int open_regular_file(const std::string& path, size_t& size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat (" + std::strerror(e) + ")");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": is a directory, expected a file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size = static_cast<size_t>(st.st_size);
  remember_read(path, st);
  return fd;
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  size_t size = 0;
  const int fd = open_regular_file(path, size);
  std::vector<uint8_t> bytes;
  try {
    bytes.reserve(size);
    uint8_t buf[1 << 16];
    for (;;) {
      const ssize_t got = ::read(fd, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw Error(path + ": read failed (" + std::strerror(errno) + ")");
      if (got == 0) break;
      bytes.insert(bytes.end(), buf, buf + got);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return bytes;
}

std::string read_text_file(const std::string& path) {
  std::vector<uint8_t> b = read_file(path);
  return std::string(b.begin(), b.end());
}

void protect_inputs() {
  std::lock_guard<std::mutex> lock(g_read_mutex);
  g_protect_inputs = true;
}

void allow_replacing(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return;
  std::lock_guard<std::mutex> lock(g_read_mutex);
  g_read_files.erase({st.st_dev, st.st_ino});
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  refuse_replacing_input(path);
  if (detail::stage_write(path, data, size)) return;  // published when the command's transaction commits
  // Written now: the signal handler waits for the temporary file to be renamed or removed.
  struct Writing {
    Writing() { detail::begin_write(); }
    ~Writing() { detail::end_write(); }
  } writing;
  fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error(path + ": cannot create directory " + p.parent_path().string() + " (" + ec.message() + ")");
  }
  std::random_device rd;
  std::string tmp = path + ".tmp" + std::to_string(rd() % 1000000);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write (" + std::strerror(errno) + ")");
  bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  ok = (std::fflush(f) == 0) && ok;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename temporary file into place (" + std::strerror(e) + ")");
  }
  throw_if_interrupted();
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = open_regular_file(path, size_);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(path + ": cannot memory-map (" + std::strerror(e) + ")");
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string parent_dir(const std::string& path) { return fs::path(path).parent_path().string(); }

std::string join_path(const std::string& dir, const std::string& rel) {
  if (dir.empty() || fs::path(rel).is_absolute()) return rel;
  return (fs::path(dir) / rel).string();
}

}  // namespace spade
