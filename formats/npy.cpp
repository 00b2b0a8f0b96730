#include "formats/npy.h"

#include <cctype>
#include <cstring>
#include <vector>

#include "formats/file_io.h"

namespace spade {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy reader assumes a little-endian host");

namespace {

const char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// Nesting in a real header never exceeds one tuple; a bound keeps the recursive parser safe.
constexpr int kMaxNesting = 16;

// The subset of Python literals NumPy writes into a header: strings, integers, booleans,
// None, tuples, lists and dicts with string keys.
struct PyValue {
  enum class Kind { Str, Int, Bool, None, Tuple, List, Dict };
  Kind kind = Kind::None;
  std::string str;
  int64_t integer = 0;
  bool boolean = false;
  std::vector<PyValue> items;
  std::vector<std::pair<std::string, PyValue>> dict;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& path, const char* text, size_t size) : path_(path), text_(text), size_(size) {}

  PyValue parse_document() {
    PyValue v = parse_value(0);
    skip_space();
    if (pos_ != size_) fail("unexpected text after the dict");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(path_ + ": npy: malformed header: " + problem + " at header offset " + std::to_string(pos_));
  }

  void skip_space() {
    while (pos_ < size_ && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  bool consume(char c) {
    skip_space();
    if (pos_ < size_ && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool consume_word(const char* word) {
    size_t n = std::strlen(word);
    if (size_ - pos_ < n || std::memcmp(text_ + pos_, word, n) != 0) return false;
    // "Truex" is not "True".
    if (pos_ + n < size_ && (std::isalnum(static_cast<unsigned char>(text_[pos_ + n])) || text_[pos_ + n] == '_'))
      return false;
    pos_ += n;
    return true;
  }

  PyValue parse_value(int depth) {
    if (depth > kMaxNesting) fail("nested too deeply");
    skip_space();
    if (pos_ >= size_) fail("unexpected end of header");
    char c = text_[pos_];
    PyValue v;
    if (c == '\'' || c == '"') {
      v.kind = PyValue::Kind::Str;
      v.str = parse_string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = PyValue::Kind::Int;
      v.integer = parse_int();
    } else if (c == '(' || c == '[') {
      bool trailing_comma = false;
      v.kind = c == '(' ? PyValue::Kind::Tuple : PyValue::Kind::List;
      v.items = parse_sequence(c == '(' ? ')' : ']', depth, &trailing_comma);
      // As in Python, "(7)" is the grouped value 7, not a tuple; only "(7,)" is.
      if (c == '(' && v.items.size() == 1 && !trailing_comma) {
        PyValue inner = std::move(v.items[0]);
        return inner;
      }
    } else if (c == '{') {
      v.kind = PyValue::Kind::Dict;
      v.dict = parse_dict(depth);
    } else if (consume_word("True") || consume_word("False")) {
      v.kind = PyValue::Kind::Bool;
      v.boolean = c == 'T';
    } else if (consume_word("None")) {
      v.kind = PyValue::Kind::None;
    } else {
      fail("unexpected character '" + printable(std::string(1, c), true) + "'");
    }
    return v;
  }

  std::string parse_string() {
    char quote = text_[pos_++];
    std::string s;
    while (pos_ < size_ && text_[pos_] != quote) {
      // Escapes never occur in NumPy's dtype strings; keeping the escaped character is enough.
      if (text_[pos_] == '\\' && pos_ + 1 < size_) ++pos_;
      s += text_[pos_++];
    }
    if (pos_ >= size_) fail("unterminated string");
    ++pos_;
    return s;
  }

  int64_t parse_int() {
    bool negative = text_[pos_] == '-';
    if (negative) ++pos_;
    if (pos_ >= size_ || text_[pos_] < '0' || text_[pos_] > '9') fail("expected digits");
    uint64_t v = 0;
    while (pos_ < size_ && text_[pos_] >= '0' && text_[pos_] <= '9') {
      uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
      if (v > (static_cast<uint64_t>(INT64_MAX) - digit) / 10) fail("integer too large");
      v = v * 10 + digit;
      ++pos_;
    }
    if (pos_ < size_ && (std::isalpha(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.'))
      fail("expected an integer");
    return negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  }

  std::vector<PyValue> parse_sequence(char close, int depth, bool* trailing_comma) {
    ++pos_;
    std::vector<PyValue> items;
    while (!consume(close)) {
      items.push_back(parse_value(depth + 1));
      *trailing_comma = false;
      if (consume(close)) break;
      if (!consume(',')) fail(std::string("expected ',' or '") + close + "'");
      *trailing_comma = true;
    }
    return items;
  }

  std::vector<std::pair<std::string, PyValue>> parse_dict(int depth) {
    ++pos_;
    std::vector<std::pair<std::string, PyValue>> dict;
    while (!consume('}')) {
      skip_space();
      if (pos_ >= size_ || (text_[pos_] != '\'' && text_[pos_] != '"')) fail("expected a string key");
      std::string key = parse_string();
      for (const auto& kv : dict)
        if (kv.first == key) fail("duplicate key '" + printable(key, true) + "'");
      if (!consume(':')) fail("expected ':'");
      dict.emplace_back(key, parse_value(depth + 1));
      if (consume('}')) break;
      if (!consume(',')) fail("expected ',' or '}'");
    }
    return dict;
  }

  const std::string& path_;
  const char* text_;
  size_t size_;
  size_t pos_ = 0;
};

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

NpyHeader interpret_header(const std::string& path, const PyValue& dict) {
  auto fail = [&](const std::string& problem) { throw Error(path + ": npy: " + problem); };
  if (dict.kind != PyValue::Kind::Dict) fail("malformed header: not a dict");
  const PyValue* descr = nullptr;
  const PyValue* fortran = nullptr;
  const PyValue* shape = nullptr;
  for (const auto& [key, value] : dict.dict) {
    if (key == "descr") descr = &value;
    else if (key == "fortran_order") fortran = &value;
    else if (key == "shape") shape = &value;
    else fail("malformed header: unexpected key '" + printable(key, true) + "'");
  }
  if (!descr || !fortran || !shape) fail("malformed header: it must have the keys 'descr', 'fortran_order' and 'shape'");

  NpyHeader h;
  if (descr->kind != PyValue::Kind::Str) fail("unsupported dtype: structured arrays are not supported");
  h.descr = descr->str;
  if (fortran->kind != PyValue::Kind::Bool) fail("malformed header: 'fortran_order' is not True or False");
  h.fortran_order = fortran->boolean;
  if (shape->kind != PyValue::Kind::Tuple) fail("malformed header: 'shape' is not a tuple");
  for (const PyValue& d : shape->items) {
    if (d.kind != PyValue::Kind::Int || d.integer < 0)
      fail("malformed header: 'shape' entries must be non-negative integers");
    h.shape.push_back(d.integer);
  }
  return h;
}

uint32_t read_le(const uint8_t* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Tensor load_npy(const std::string& path) {
  auto fail = [&](const std::string& problem) { throw Error(path + ": npy: " + problem); };
  MappedFile file(path);
  const uint8_t* bytes = file.data();
  const size_t size = file.size();
  if (size < kMagicLen + 2 || std::memcmp(bytes, kMagic, kMagicLen) != 0) fail("bad magic (not a NumPy .npy file)");
  const int major = bytes[6], minor = bytes[7];
  if (!((major == 1 || major == 2 || major == 3) && minor == 0))
    fail("unsupported format version " + std::to_string(major) + "." + std::to_string(minor) +
         " (1.0, 2.0 and 3.0 are read)");
  // Version 1.0 stores the header length in 2 bytes; 2.0 and 3.0 (UTF-8 header) in 4.
  const size_t len_bytes = major == 1 ? 2 : 4;
  const size_t prefix = kMagicLen + 2 + len_bytes;
  if (size < prefix) fail("file is truncated inside the header length");
  const size_t header_len = read_le(bytes + kMagicLen + 2, static_cast<int>(len_bytes));
  if (header_len > size - prefix)
    fail("header length " + std::to_string(header_len) + " runs past the end of the " + std::to_string(size) +
         "-byte file");

  HeaderParser parser(path, reinterpret_cast<const char*>(bytes + prefix), header_len);
  NpyHeader h = interpret_header(path, parser.parse_document());

  size_t item = 0;
  if (h.descr == "<f4" || h.descr == "|f4") item = 4;
  else if (h.descr == "<f8") item = 8;
  else fail("unsupported dtype '" + printable(h.descr, true) + "' (only '<f4' and '<f8' are read)");
  if (h.fortran_order)
    fail("fortran_order is True (column-major); save a C-order array (np.ascontiguousarray)");

  // Unsigned, overflow-checked arithmetic: a hostile shape must not wrap into a small size.
  uint64_t numel = 1, needed = 0;
  bool overflow = false;
  for (int64_t d : h.shape) overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel);
  overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(item), &needed);
  if (overflow) fail("shape " + shape_str(h.shape) + " is too large (byte size overflows)");
  const uint64_t available = size - prefix - header_len;
  if (available < needed)
    fail("data is " + std::to_string(available) + " bytes but shape " + shape_str(h.shape) + " of '" + h.descr +
         "' needs " + std::to_string(needed) + " (truncated file?)");
  if (available > needed)
    fail(std::to_string(available - needed) + " trailing bytes after the data of shape " + shape_str(h.shape));

  Tensor t;
  try {
    t = Tensor::empty(h.shape);
  } catch (const Error& e) {
    fail(e.what());
  }
  const uint8_t* src = bytes + prefix + header_len;
  if (item == 4) {
    if (needed) std::memcpy(t.data(), src, needed);
  } else {
    for (int64_t i = 0; i < t.numel(); ++i) {
      double v;
      std::memcpy(&v, src + i * 8, 8);
      t[i] = static_cast<float>(v);
    }
  }
  return t;
}

void save_npy(const std::string& path, const Tensor& t) {
  if (!t.defined()) throw Error(path + ": cannot save npy: tensor is undefined");
  if (t.device() != Device::CPU) throw Error(path + ": cannot save npy: tensor is not on the CPU");
  // Python's tuple repr: "()", "(5,)", "(2, 3)".
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape()[i]);
  if (t.shape().size() == 1) shape += ",";
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t prefix = kMagicLen + 2 + 2;
  const size_t unpadded = prefix + header.size() + 1;  // + the terminating newline
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) throw Error(path + ": cannot save npy: shape " + shape_str(t.shape()) + " is too long");

  const size_t nbytes = static_cast<size_t>(t.numel()) * 4;
  std::vector<uint8_t> bytes(prefix + header.size() + nbytes);
  std::memcpy(bytes.data(), kMagic, kMagicLen);
  bytes[6] = 1;
  bytes[7] = 0;
  bytes[8] = static_cast<uint8_t>(header.size() & 0xFF);
  bytes[9] = static_cast<uint8_t>(header.size() >> 8);
  std::memcpy(bytes.data() + prefix, header.data(), header.size());
  if (nbytes) std::memcpy(bytes.data() + prefix + header.size(), t.data(), nbytes);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace spade
