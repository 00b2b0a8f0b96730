#include "formats/labels.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "engine/error.h"
#include "formats/file_io.h"

namespace spade {

bool Labels::has_ids() const {
  return std::any_of(ids.begin(), ids.end(), [](const std::string& id) { return !id.empty(); });
}

namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

bool is_wordnet_id(const std::string& s) {
  return s.size() == 9 && s[0] == 'n' &&
         std::all_of(s.begin() + 1, s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

bool is_index(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

// The file's lines without their line ends, trailing blank lines dropped.
std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> lines = split(read_text_file(path), '\n');
  for (std::string& l : lines)
    if (!l.empty() && l.back() == '\r') l.pop_back();
  while (!lines.empty() && trim(lines.back()).empty()) lines.pop_back();
  if (lines.empty()) throw Error(path + ": no labels in the file");
  return lines;
}

std::string id_or_none(const std::string& s) {
  const std::string t = trim(s);
  return t == "-" ? "" : t;
}

Labels read_tsv(const std::string& path) {
  std::vector<std::string> lines = lines_of(path);
  int index_col = -1, id_col = -1, name_col = -1;
  const std::vector<std::string> head = split(lines[0], '\t');
  for (size_t c = 0; c < head.size(); ++c) {
    const std::string h = lower(trim(head[c]));
    if (h == "index") index_col = static_cast<int>(c);
    if (h == "id" || h == "wnid") id_col = static_cast<int>(c);
    if (h == "name" || h == "label") name_col = static_cast<int>(c);
  }
  size_t first = 0;
  if (name_col >= 0) {
    first = 1;  // a header row
  } else {
    const size_t n = head.size();
    if (n < 1 || n > 3)
      throw Error(path + ": line 1: expected name, id<TAB>name or index<TAB>id<TAB>name, or a header row");
    name_col = static_cast<int>(n) - 1;
    if (n >= 2) id_col = static_cast<int>(n) - 2;
    if (n == 3) index_col = 0;
  }
  const size_t columns = head.size();
  Labels out;
  for (size_t i = first; i < lines.size(); ++i) {
    const std::string where = path + ": line " + std::to_string(i + 1);
    const std::vector<std::string> f = split(lines[i], '\t');
    if (f.size() != columns)
      throw Error(where + ": " + std::to_string(f.size()) + " tab-separated fields, expected " + std::to_string(columns));
    const int64_t k = static_cast<int64_t>(out.names.size());
    if (index_col >= 0 && trim(f[index_col]) != std::to_string(k))
      throw Error(where + ": index \"" + trim(f[index_col]) + "\", expected " + std::to_string(k) +
                  " (one line per output, in order)");
    const std::string name = trim(f[name_col]);
    if (name.empty()) throw Error(where + ": empty class name");
    out.names.push_back(name);
    out.ids.push_back(id_col >= 0 ? id_or_none(f[id_col]) : "");
  }
  if (out.names.empty()) throw Error(path + ": no labels after the header row");
  return out;
}

Labels read_txt(const std::string& path) {
  const std::vector<std::string> lines = lines_of(path);
  const bool synsets = std::all_of(lines.begin(), lines.end(), [](const std::string& l) {
    const size_t sp = l.find(' ');
    return sp != std::string::npos && is_wordnet_id(l.substr(0, sp));
  });
  Labels out;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string name = trim(lines[i]), id;
    if (synsets) {
      const size_t sp = name.find(' ');
      id = name.substr(0, sp);
      name = trim(name.substr(sp + 1));
    }
    if (name.empty()) throw Error(path + ": line " + std::to_string(i + 1) + ": empty class name");
    out.names.push_back(name);
    out.ids.push_back(id);
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && lower(s.substr(s.size() - suffix.size())) == suffix;
}

// Levenshtein distance, for suggestions.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// A name's synonyms: "tench, Tinca tinca" -> {"tench", "tinca tinca"} (lower case).
std::vector<std::string> synonyms(const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& part : split(name, ',')) {
    const std::string t = lower(trim(part));
    if (!t.empty()) out.push_back(t);
  }
  return out;
}

std::string describe(const std::vector<std::string>& names, const std::vector<std::string>& ids, int64_t k) {
  std::string s = std::to_string(k) + " \"" + names[k] + "\"";
  if (k < static_cast<int64_t>(ids.size()) && !ids[k].empty()) s += " (" + ids[k] + ")";
  return s;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (const std::string& p : parts) s += (s.empty() ? "" : ", ") + p;
  return s;
}

}  // namespace

Labels read_labels_file(const std::string& path) {
  return ends_with(path, ".tsv") ? read_tsv(path) : read_txt(path);
}

int64_t find_class(const std::vector<std::string>& names, const std::vector<std::string>& ids, const std::string& text,
                   const std::string& what) {
  const int64_t n = static_cast<int64_t>(names.size());
  const std::string t = trim(text);
  if (is_index(t)) {
    const int64_t k = t.size() > 18 ? n : std::stoll(t);
    if (k >= n) throw Error(what + " " + t + " is out of range [0, " + std::to_string(n) + ")");
    return k;
  }
  if (!t.empty() && t[0] == '-' && is_index(t.substr(1)))
    throw Error(what + " " + t + " is out of range [0, " + std::to_string(n) + ")");
  for (int64_t k = 0; k < static_cast<int64_t>(ids.size()); ++k)
    if (!ids[k].empty() && ids[k] == t) return k;
  const std::string want = lower(t);
  std::vector<int64_t> whole, synonym;
  for (int64_t k = 0; k < n; ++k) {
    if (lower(names[k]) == want) whole.push_back(k);
    for (const std::string& s : synonyms(names[k]))
      if (s == want) {
        synonym.push_back(k);
        break;
      }
  }
  const std::vector<int64_t>& hits = whole.empty() ? synonym : whole;
  if (hits.size() == 1) return hits[0];
  if (hits.size() > 1) {
    std::vector<std::string> list;
    for (int64_t k : hits) list.push_back(describe(names, ids, k));
    throw Error(what + " \"" + t + "\" is ambiguous: " + join(list) + "; give the index or the id");
  }
  // Unknown: suggest the classes with the closest synonym (or containing the text).
  std::vector<std::pair<size_t, int64_t>> scored;
  for (int64_t k = 0; k < n; ++k) {
    size_t best = std::string::npos;
    for (const std::string& s : synonyms(names[k]))
      best = std::min(best, s.find(want) != std::string::npos ? 0 : edit_distance(s, want));
    scored.emplace_back(best, k);
  }
  std::stable_sort(scored.begin(), scored.end());
  std::vector<std::string> close;
  for (const auto& [d, k] : scored)
    if (close.size() < 5 && d <= std::max<size_t>(2, want.size() / 3)) close.push_back(describe(names, ids, k));
  throw Error(what + " \"" + t + "\" names no class (give an index in [0, " + std::to_string(n) + "), an id or a name" +
              (close.empty() ? ")" : "); close: " + join(close)));
}

}  // namespace spade
