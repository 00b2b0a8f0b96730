#include "formats/output_transaction.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "engine/error.h"
#include "engine/interrupt.h"

namespace spade {

namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_writing = 0;  // something is staged or a file is being written

struct Staged {
  std::string staged, final_path;
};

struct State {
  std::mutex mutex;
  bool active = false;
  std::vector<Staged> files;
  std::vector<std::string> made_dirs;        // in creation order
  std::vector<std::pair<std::string, int>> locks;  // directory, locked descriptor
  std::set<std::string> swept;               // directories already cleaned of stale staged files
  int writes = 0;                            // staged writes so far (for the fault hooks)
};
State& state() {
  static State s;
  return s;
}
thread_local int t_publish_now = 0;

const std::string kStagedSuffix = ".staged";

std::string staged_name(const fs::path& final_path) {
  return (final_path.parent_path() / ("." + final_path.filename().string() + ".spade-" + std::to_string(::getpid()) +
                                      kStagedSuffix))
      .string();
}

// Removes files a killed run staged in `dir` (their PID names no live process).
void sweep_stale(const std::string& dir) {
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const size_t at = name.rfind(".spade-");
    if (name.empty() || name[0] != '.' || at == std::string::npos || name.size() <= kStagedSuffix.size() ||
        name.compare(name.size() - kStagedSuffix.size(), kStagedSuffix.size(), kStagedSuffix) != 0)
      continue;
    const std::string digits = name.substr(at + 7, name.size() - kStagedSuffix.size() - at - 7);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its run is still alive (or not ours to judge)
    ::unlink((fs::path(dir) / name).c_str());
  }
  ::closedir(d);
}

// Creates the missing directories above `path`, recording them so that an aborted run removes them.
void make_parents(State& s, const fs::path& path) {
  std::vector<fs::path> missing;
  for (fs::path p = path.parent_path(); !p.empty(); p = p.parent_path()) {
    std::error_code ec;
    if (fs::exists(p, ec)) break;
    missing.push_back(p);
    if (p == p.root_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0777) != 0 && errno != EEXIST)
      throw Error(path.string() + ": cannot create directory " + it->string() + " (" + std::strerror(errno) + ")");
    s.made_dirs.push_back(it->string());
  }
}

// Holds an exclusive lock on `dir` until the transaction ends; waits up to two minutes for another
// run writing there to finish.
void lock_directory(State& s, const std::string& dir) {
  for (const auto& [d, fd] : s.locks)
    if (d == dir) return;
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(dir + ": cannot open the output directory (" + std::strerror(errno) + ")");
  const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK || std::chrono::steady_clock::now() > until) {
      ::close(fd);
      throw Error(dir + ": another spade run is writing here; try again when it ends");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    throw_if_interrupted();
  }
  s.locks.push_back({dir, fd});
}

void release_locks(State& s) {
  for (const auto& [d, fd] : s.locks) ::close(fd);  // closing releases the lock
  s.locks.clear();
}

// Test hooks (docs/reliability.md): SPADE_TEST_FAULT=fail:N makes the Nth staged write fail as a
// full disk would; pause:N makes the run wait 30 s (interruptibly) before it.
void apply_fault_hook(int write_number, const std::string& path) {
  const char* spec = std::getenv("SPADE_TEST_FAULT");
  if (!spec) return;
  const std::string s = spec;
  const size_t colon = s.find(':');
  if (colon == std::string::npos || std::atoi(s.c_str() + colon + 1) != write_number) return;
  if (s.compare(0, colon, "fail") == 0) throw Error(path + ": write failed (No space left on device)");
  if (s.compare(0, colon, "pause") == 0)
    for (int i = 0; i < 300 && !interrupted_signal(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

void on_signal(int sig) {
  if (interrupted_signal() || !g_writing) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  note_interrupt(sig);
}

}  // namespace

OutputTransaction::OutputTransaction() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.active) throw Error("internal: two output transactions at once");
  s.active = true;
}

OutputTransaction::~OutputTransaction() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  for (const Staged& f : s.files) ::unlink(f.staged.c_str());
  for (auto it = s.made_dirs.rbegin(); it != s.made_dirs.rend(); ++it) ::rmdir(it->c_str());  // only if empty
  s.files.clear();
  s.made_dirs.clear();
  release_locks(s);
  s.active = false;
  g_writing = 0;
}

void OutputTransaction::commit() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  throw_if_interrupted();
  for (size_t i = 0; i < s.files.size(); ++i) {
    const Staged& f = s.files[i];
    if (std::rename(f.staged.c_str(), f.final_path.c_str()) != 0) {
      const int e = errno;
      s.files.erase(s.files.begin(), s.files.begin() + static_cast<std::ptrdiff_t>(i));  // published ones stay
      throw Error(f.final_path + ": cannot move the finished file into place (" + std::strerror(e) + ")");
    }
  }
  s.files.clear();
  s.made_dirs.clear();
  release_locks(s);
  g_writing = 0;
}

PublishNow::PublishNow() { ++t_publish_now; }
PublishNow::~PublishNow() { --t_publish_now; }

void install_interrupt_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}


namespace detail {

bool stage_write(const std::string& path, const void* data, size_t size) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.active || t_publish_now > 0) return false;
  throw_if_interrupted();
  const fs::path final_path(path);
  g_writing = 1;
  make_parents(s, final_path);
  const std::string dir = final_path.parent_path().string();
  lock_directory(s, dir);
  if (s.swept.insert(dir).second) sweep_stale(dir);
  apply_fault_hook(++s.writes, path);
  throw_if_interrupted();
  const std::string staged = staged_name(final_path);
  // The same file written twice in one run: the later bytes replace the staged ones.
  bool again = false;
  for (const Staged& f : s.files) again = again || f.staged == staged;
  FILE* f = std::fopen(staged.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write (" + std::strerror(errno) + ")");
  if (!again) s.files.push_back({staged, path});
  bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  ok = (std::fflush(f) == 0) && ok;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw Error(path + ": write failed (disk full?)");
  return true;
}

void begin_write() { g_writing = 1; }
void end_write() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.files.empty()) g_writing = 0;
}

}  // namespace detail

}  // namespace spade
