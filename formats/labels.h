#pragma once
// Class labels: a name per model output and, optionally, an id (an ImageNet WordNet id such as
// n01440764) that dataset folders are named by. Read from a labels file, and looked up from what a
// user types (an index, an id or a name).
#include <cstdint>
#include <string>
#include <vector>

namespace spade {

struct Labels {
  std::vector<std::string> names;  // one per output
  std::vector<std::string> ids;    // empty, or one per output ("" where an output has none)
  bool has_ids() const;
};

// A labels file, one line per output in index order:
// - .tsv: tab-separated. With a header row naming its columns, "name" (or "label") gives the name,
//   "id" or "wnid" the id and "index" (if present) must count 0, 1, 2, ...; without one, a row is
//   `name`, `id<TAB>name` or `index<TAB>id<TAB>name`. An id of "-" or "" means none.
// - anything else (.txt): one name per line; when every line starts with a WordNet id and a space
//   (Caffe's synset_words.txt: "n01440764 tench, Tinca tinca"), that is the id.
// Blank lines at the end are ignored. Throws Error naming the file and line.
Labels read_labels_file(const std::string& path);

// The output a user means by `text`: an index ("17"), an id ("n01440764"), a whole name or one of
// its comma-separated synonyms ("tench"; case-insensitive). `what` names the option in errors
// (e.g. "--target"). Unknown or ambiguous text is an Error listing the closest or the matching
// classes.
int64_t find_class(const std::vector<std::string>& names, const std::vector<std::string>& ids, const std::string& text,
                   const std::string& what);

}  // namespace spade
