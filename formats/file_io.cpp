#include "formats/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "engine/error.h"

namespace spade {

namespace fs = std::filesystem;

namespace {

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

void write_file_atomic(const std::string& path, const void* data, size_t size) {
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
